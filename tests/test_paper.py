"""`evaluation paper`: the config's errors, the steps it plans, one report from answer files (figures checked against
counts made here), and resume (kept, redone when the config or an input changes)."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.paper import load_config, plan
from datafiles import DataError

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / 'sample_data'


def _write(path: Path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return str(path)


def _config(tmp_path, text: str) -> str:
    path = tmp_path / 'paper.yaml'
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('text, message', [
    ('models:\n  A: {answers: {table1: a.jsonl}}\ntable1:\n  datset: x.jsonl\n',
     "line 4: field 'table1.datset': unknown key"),
    ('models:\n  A: {answers: {table1: a.jsonl}}\ntable1:\n  image_root: x\n',
     "line 4: field 'table1.dataset': missing"),
    ('models:\n  A: {answers: {table1: a.jsonl}}\nconsistency:\n  samples: five\n  dataset: i.jsonl\n',
     "line 4: field 'consistency.samples': expected an integer, found 'five'"),
    ('models:\n  A:\n    adapters: [x]\n', "line 3: field 'models.A': give \"model\""),
    ('models:\n  A: {model: m}\nbaseline: B\n', "line 3: field 'baseline': 'B' is not one of the models (A)"),
    ('models:\n  A: {model: m, answers: {tabel1: a.jsonl}}\n', "field 'models.A.answers.tabel1': unknown family"),
    ('models: [A]\n', "line 1: field 'models': expected a mapping"),
])
def test_config_errors_name_the_file_line_and_field(tmp_path, text, message):
    path = _config(tmp_path, text)
    with pytest.raises(DataError) as error:
        load_config(path)
    assert str(error.value).startswith(path) and message in str(error.value)


def test_the_documented_example_plans_every_family():
    config = load_config(str(REPO / 'evaluation' / 'paper.example.yaml'))
    steps, skipped = plan(config, 'out')
    assert skipped == []
    assert {s.family for s in steps} == {'table1', 'report_generation', 'consistency', 'students', 'generalization'}
    report = next(s for s in steps if s.family == 'students')
    # SFT and APO answer the studies in report generation, GPT-5 from its own file
    assert report.argv.count('--source') == 3 and 'GPT-5=answers/gpt5_studies.jsonl' in report.argv
    assert 'SFT=out/report_generation/SFT.answers.jsonl' in report.argv
    apo = next(s for s in steps if s.title == 'Table 1: APO')
    assert apo.argv[apo.argv.index('--adapters') + 1] == 'output/apo/v0-20250101-000000/checkpoint-100'


@pytest.fixture
def answers_only(tmp_path):
    """Two models given only by answer files, in every family, with answers whose right/wrong counts are known."""
    items = [json.loads(line) for line in (SAMPLE / 'ms_cxr_t_sample.jsonl').read_text().splitlines()]
    other = {'improving': 'worsening', 'stable': 'improving', 'worsening': 'stable'}
    # A right on the first 6 items, B right on all 10
    a = _write(tmp_path / 'a_table1.jsonl', [{'id': it['id'], 'answer': it['label'] if i < 6 else other[it['label']]}
                                             for i, it in enumerate(items)])
    b = _write(tmp_path / 'b_table1.jsonl', [{'id': it['id'], 'answer': it['label']} for it in items])
    # samples: A's two samples agree on every item, B's disagree on the first 4
    a_cot = _write(tmp_path / 'a_cot.jsonl', [{'id': it['id'], 'response': f'Answer: {it["label"]}'}
                                             for it in items for _ in range(2)])
    b_cot = _write(tmp_path / 'b_cot.jsonl', [{'id': it['id'], 'response': f'Answer: {lab}'}
                                             for i, it in enumerate(items)
                                             for lab in ([it['label'], other[it['label']]] if i < 4
                                                         else [it['label']] * 2)])
    reports = _write(tmp_path / 'reports.jsonl', [
        {'id': 'r1', 'images': ['files/p10/p10000032/s50414267/view1_frontal.jpg'], 'question': 'Findings?',
         'reference': 'Large left pleural effusion. No pneumothorax.'},
        {'id': 'r2', 'images': ['files/p10/p10000898/s50771383/view1_frontal.jpg'], 'question': 'Findings?',
         'reference': 'Cardiomegaly. No pleural effusion.'}])
    a_gen = _write(tmp_path / 'a_gen.jsonl', [{'id': 'r1', 'answer': 'Left pleural effusion.'},
                                              {'id': 'r2', 'answer': 'Cardiomegaly.'}])
    b_gen = _write(tmp_path / 'b_gen.jsonl', [{'id': 'r1', 'answer': 'No effusion.'},
                                              {'id': 'r2', 'answer': 'Normal heart size.'}])
    traces = (SAMPLE / 'cxr_max_sample.jsonl').read_text().splitlines()
    studies = sorted({json.loads(line)['study_id'] for line in traces})
    a_students = _write(tmp_path / 'a_students.jsonl', [{'id': s, 'response': 'Normal chest.'} for s in studies])
    with open(SAMPLE / 'chexpert_style_labels.csv') as handle:
        rows = list(csv.DictReader(handle))
    zs_items = [(r['Path'], 'pleural_effusion', r['Pleural Effusion']) for r in rows
                if r['Pleural Effusion'] in ('1.0', '0.0')]
    zero_shot = _write(tmp_path / 'a_zs.jsonl', [{'id': f'{p}:{obs}', 'answer': 'present'} for p, obs, _ in zs_items])
    text = f"""
n_boot: 200
baseline: A
models:
  A:
    answers:
      table1: {a}
      report_generation: {a_gen}
      consistency: [{a_cot}]
      students: {a_students}
      generalization: {{zs: {zero_shot}}}
  B:
    answers: {{table1: {b}, report_generation: {b_gen}, consistency: {b_cot}}}
table1: {{dataset: {SAMPLE / 'ms_cxr_t_sample.jsonl'}}}
report_generation: {{dataset: {reports}, image_root: {SAMPLE}}}
consistency: {{dataset: {SAMPLE / 'ms_cxr_t_sample.jsonl'}, teachers: {SAMPLE / 'cxr_max_sample.jsonl'}}}
students: {{dataset: {SAMPLE / 'cxr_max_sample.jsonl'}, args: --workers 1}}
generalization:
  zs: {{dataset: {SAMPLE / 'chexpert_style_labels.csv'}, image_root: {SAMPLE}}}
"""
    positives = sum(1 for _, _, v in zs_items if v == '1.0')
    return _config(tmp_path, text), tmp_path / 'out', {'zs_items': len(zs_items), 'zs_positive': positives,
                                                       'studies': len(studies)}


def _paper(config, out):
    proc = subprocess.run([sys.executable, '-m', 'evaluation', 'paper', '--config', config, '--out', str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stderr


def test_paper_report_from_answer_files_then_resume(answers_only):
    config, out, known = answers_only
    log = _paper(config, out)
    assert log.count('(no result yet)') == 9  # table1 2, report-gen 2, consistency 2 + teachers, students, zero-shot 1
    page = (out / 'paper.md').read_text()
    for heading in ['## 1. Disease classification', '## 2. Report generation', '## 3. Chain-of-thought consistency',
                    '## 4. Students beside their teachers', '## 5. Zero-shot generalization', '## Not run']:
        assert heading in page
    for chart in ['table1/table1.png', 'report_generation.png', 'consistency.png', 'students.png',
                  'generalization/zs/table.png']:
        assert f']({chart})' in page and (out / chart).stat().st_size > 1000
    # Table 1: A 6/10, B 10/10, and B - A paired
    assert '| A (baseline) |' in page and '(6/10)' in page and '(10/10)' in page and '(published)' in page
    assert '| B | 1.000 | +0.400 [' in page
    # report generation: A finds what each reference says (effusion, cardiomegaly), B the opposite
    table = json.loads((out / 'report_generation' / 'A.gen.json').read_text())
    f1 = table['clinical_efficacy']['uncertain_as_positive']['14']['micro_f1']['value']
    assert f1 == pytest.approx(1.0)
    assert '| A | 2 |' in page and '| 1.000 [' in page
    # consistency: A agrees with itself on every item, B on 6 of 10 (0.5 on the first 4)
    assert '| A | 10 | 20 | 1.000 |' in page and f'| B | 10 | 20 | {(6 + 4 * 0.5) / 10:.3f} |' in page
    assert '| GPT-5 | 6 |' in page and 'Between teachers: majority agreement' in page
    # students: A joined on every study; B's report-generation answers (ids r1, r2) join no study, and it says so
    assert f'**A** ({known["studies"]} studies answered)' in page
    assert '**B**: none of its answers joined a study of the dataset' in page
    # zero-shot: A says "present" everywhere: right on exactly the positive labels
    assert f'({known["zs_positive"]}/{known["zs_items"]})' in page
    assert '- generalization zs: B (no "model" and no answers file for it)' in page
    assert 'python -m data_prep report --dataset' in page           # the commands it ran

    # resume: everything kept; a changed section redoes its step only; a newer input redoes its reader
    log = _paper(config, out)
    assert 'no result yet' not in log and log.count('done before, kept') == 9
    Path(config).write_text(Path(config).read_text().replace('n_boot: 200', 'n_boot: 300'))
    log = _paper(config, out)
    redone = [line for line in log.splitlines() if 'the config changed' in line]
    assert len(redone) == 5 and all('--n-boot 300' in line for line in redone)   # classify, report-gen
    answers = Path(config).parent / 'a_students.jsonl'
    os.utime(answers, (os.path.getmtime(out / 'students' / 'drift.json') + 5,) * 2)
    log = _paper(config, out)
    assert [line.split(' (')[0] for line in log.splitlines() if 'is newer than its result' in line] == \
        ['== students beside their teachers']


def test_a_failing_step_names_itself_and_keeps_what_finished(tmp_path):
    items = SAMPLE / 'ms_cxr_t_sample.jsonl'
    good = _write(tmp_path / 'good.jsonl', [{'id': json.loads(l)['id'], 'answer': 'stable'}
                                            for l in items.read_text().splitlines()])
    bad = _write(tmp_path / 'bad.jsonl', [{'id': 'sample-01', 'answer': 3}])
    config = _config(tmp_path, f'models:\n  A: {{answers: {{table1: {good}}}}}\n  B: {{answers: {{table1: {bad}}}}}\n'
                               f'table1: {{dataset: {items}}}\n')
    proc = subprocess.run([sys.executable, '-m', 'evaluation', 'paper', '--config', config, '--out',
                           str(tmp_path / 'out')], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2
    assert 'evaluation paper: error: Table 1: B:' in proc.stderr and 'the step was: python -m evaluation classify' \
        in proc.stderr and str(bad) in proc.stderr
    assert (tmp_path / 'out' / 'table1' / 'A.json').exists() and not (tmp_path / 'out' / 'paper.md').exists()


def test_report_generation_reference_labels_reach_report_gen(tmp_path):
    text = (REPO / 'evaluation' / 'paper.example.yaml').read_text()
    text = text.replace('  # reference_labels: mimic-cxr-2.0.0-chexpert.csv', '  reference_labels: labels.csv', 1)
    path = tmp_path / 'paper.yaml'
    path.write_text(text)
    steps, _ = plan(load_config(str(path)), 'out')
    gen = [s for s in steps if s.family == 'report_generation' and s.argv[0] == 'report-gen']
    assert gen and all(s.argv[s.argv.index('--reference-labels') + 1] == 'labels.csv' for s in gen)
