"""data_prep: detection, mapping, each subcommand, the split, determinism and every bad-input case.

Runs the real CLI entry (``data_prep.cli.main``) in-process on the bundled sample and on files
derived from it in every layout and file type."""
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from cxr_data import (SAMPLE, SAMPLE_FILE, copy_images, infer_result_rows, per_study_rows, sample_rows, write_csv,
                      write_jsonl, write_parquet)
from data_prep.cli import main
from data_prep.columns import ColumnMapping, detect
from datafiles import DataError
from data_prep.stages import split_of

TEACHERS = ['GPT-5', 'Gemini-2.5', 'Sonnet-4', 'Grok-4', 'Qwen-VL-Max', 'GLM-4.5V', 'Moonshot']
REFUSAL = "I'm sorry, but I can't provide a medical diagnosis"


def prep(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding='utf-8').splitlines()]


def sft_ok(capsys, dataset, out, *extra):
    code, stdout, err = prep(capsys, 'sft', '--dataset', dataset, '--out', out, '--eval-fraction', '0', *extra)
    assert code == 0, err
    return read_jsonl(out), stdout, err


# ---------------------------------------------------------------- detection and mapping

def test_detects_per_trace_layout(capsys, tmp_path):
    rows, stdout, err = sft_ok(capsys, SAMPLE_FILE, tmp_path / 'sft.jsonl')
    assert "layout=per-trace, study='study_id', subject='subject_id', images='image_path', question='question', " \
           "teacher='model', trace='response', labels='labels'" in err
    assert '42 rows (per-trace layout), 42 traces' in stdout
    assert len(rows) == 41  # one trace is empty


@pytest.mark.parametrize('style', ['columns', 'dict', 'list'])
@pytest.mark.parametrize('writer', [write_jsonl, write_parquet, write_csv])
def test_every_layout_and_file_type_gives_the_same_sft_rows(capsys, tmp_path, style, writer):
    reference, _, _ = sft_ok(capsys, SAMPLE_FILE, tmp_path / 'reference.jsonl')
    copy_images(tmp_path)
    suffix = {write_jsonl: '.jsonl', write_parquet: '.parquet', write_csv: '.csv'}[writer]
    dataset = writer(tmp_path / f'per_study{suffix}', per_study_rows(style))
    rows, _, err = sft_ok(capsys, dataset, tmp_path / 'sft.jsonl')
    assert 'layout=per-study' in err
    assert rows == [{**r, 'images': [str(tmp_path / Path(r['images'][0]).relative_to(SAMPLE))]} for r in reference]


def test_hugging_face_dataset_folder_is_streamed_through_datasets(capsys, tmp_path):
    reference, _, _ = sft_ok(capsys, SAMPLE_FILE, tmp_path / 'reference.jsonl')
    folder = tmp_path / 'hub_style'
    write_parquet((folder / 'data').mkdir(parents=True) or folder / 'data' / 'train-00000.parquet', sample_rows())
    rows, stdout, _ = sft_ok(capsys, folder, tmp_path / 'sft.jsonl', '--image-root', SAMPLE)
    assert f'{folder} [train]: 42 rows' in stdout
    assert rows == reference


def test_ids_come_from_mimic_paths_when_there_are_no_id_columns(capsys, tmp_path):
    rows = [{k: v for k, v in r.items() if k not in ('study_id', 'subject_id')} for r in sample_rows()]
    dataset = write_jsonl(tmp_path / 'data.jsonl', rows)
    copy_images(tmp_path)
    out, _, err = sft_ok(capsys, dataset, tmp_path / 'sft.jsonl')
    assert 'study=<from MIMIC-CXR image path' in err
    assert [r['study_id'] for r in out[:7]] == ['s50414267'] * 7


def test_chexpert_label_columns_are_detected(capsys, tmp_path):
    rows = []
    for row in per_study_rows('columns'):
        labels = row.pop('labels')
        rows.append({**row, **{obs: (1.0 if obs in labels else 0.0) for obs in
                               ['Atelectasis', 'Cardiomegaly', 'Edema', 'Pleural Effusion', 'Pneumonia']}})
    mapping = detect(rows, ColumnMapping(), 'x')
    assert mapping.layout == 'per-study' and sorted(mapping.teacher_columns) == sorted(TEACHERS)
    assert sorted(mapping.label_columns) == ['Atelectasis', 'Cardiomegaly', 'Edema', 'Pleural Effusion', 'Pneumonia']


def test_failed_detection_lists_columns_and_flags(capsys, tmp_path):
    rows = [{'img': r['image_path'], 'q': r['question'], 'who': r['model'], 'said': r['response']}
            for r in sample_rows()]
    dataset = write_jsonl(tmp_path / 'odd.jsonl', rows)
    code, _, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'sft.jsonl')
    assert code == 2
    assert "no question column found. Columns found: ['img', 'q', 'who', 'said']" in err
    assert '--question-column' in err and '--mapping FILE' in err
    assert not (tmp_path / 'sft.jsonl').exists()


def test_flags_and_yaml_mapping_override_detection(capsys, tmp_path):
    rows = [{'img': r['image_path'], 'q': r['question'], 'who': r['model'], 'said': r['response'],
             'patient': r['subject_id'], 'exam': r['study_id']} for r in sample_rows()]
    dataset = write_jsonl(tmp_path / 'odd.jsonl', rows)
    copy_images(tmp_path)
    reference, _, _ = sft_ok(capsys, SAMPLE_FILE, tmp_path / 'reference.jsonl')
    by_flags, _, _ = sft_ok(capsys, dataset, tmp_path / 'flags.jsonl', '--image-column', 'img', '--question-column',
                            'q', '--teacher-column', 'who', '--trace-column', 'said', '--study-column', 'exam',
                            '--layout', 'per-trace')
    mapping = tmp_path / 'mapping.yaml'
    mapping.write_text('layout: per-trace\nimages: img\nquestion: q\nteacher: who\ntrace: said\nstudy: exam\n'
                       'subject: patient\n')
    by_yaml, _, err = sft_ok(capsys, dataset, tmp_path / 'yaml.jsonl', '--mapping', mapping)
    assert "subject='patient'" in err
    expected = [{**r, 'images': [str(tmp_path / Path(r['images'][0]).relative_to(SAMPLE))]} for r in reference]
    assert by_flags == by_yaml == expected


def test_mapping_errors_name_the_problem(capsys, tmp_path):
    mapping = tmp_path / 'mapping.yaml'
    mapping.write_text('image: img\n')
    code, _, err = prep(capsys, 'sft', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'o.jsonl', '--mapping', mapping)
    assert code == 2 and f"{mapping}: unknown key(s) ['image']" in err
    code, _, err = prep(capsys, 'sft', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'o.jsonl',
                        '--question-column', 'prompt_text')
    assert code == 2 and "the question column 'prompt_text' given in the mapping does not exist" in err


def test_teacher_columns_flag_selects_and_renames(capsys, tmp_path):
    rows = [{('gpt5_answer' if k == 'GPT-5' else k): v for k, v in r.items()} for r in per_study_rows('columns')]
    dataset = write_jsonl(tmp_path / 'wide.jsonl', rows)
    copy_images(tmp_path)
    out, _, _ = sft_ok(capsys, dataset, tmp_path / 'sft.jsonl', '--teacher-columns', 'GPT 5=gpt5_answer,Grok=Grok-4')
    assert Counter(r['teacher'] for r in out) == {'GPT 5': 6, 'Grok': 6}
    code, _, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'x.jsonl', '--teachers', 'Claude')
    assert code == 2 and "teacher(s) ['Claude'] in the mapping have no column" in err


# ---------------------------------------------------------------- subcommands

def test_sft_rows(capsys, tmp_path):
    rows, stdout, _ = sft_ok(capsys, SAMPLE_FILE, tmp_path / 'sft.jsonl')
    first = sample_rows()[0]
    assert rows[0] == {
        'messages': [{'role': 'user', 'content': '<image>' + first['question']},
                     {'role': 'assistant', 'content': first['response']}],
        'images': [str(SAMPLE / first['image_path'])], 'study_id': '50414267', 'teacher': 'GPT-5'}
    assert 'dropped (empty trace): 1' in stdout
    assert any('Größe' in r['messages'][1]['content'] for r in rows)
    assert any(r['messages'][1]['content'].startswith(REFUSAL) for r in rows)
    dropped, stdout, _ = sft_ok(capsys, SAMPLE_FILE, tmp_path / 'sft2.jsonl', '--drop-refusals')
    assert len(dropped) == 40 and 'dropped (refusal): 1' in stdout
    assert not any(r['messages'][1]['content'].startswith(REFUSAL) for r in dropped)


def test_split_by_subject_is_disjoint_deterministic_and_shared_by_stages(capsys, tmp_path):
    rows = []
    for i in range(300):  # 300 subjects with 2 studies each, reusing the sample's texts and one image
        for j, base in enumerate(sample_rows()[:14:7]):
            rows += [{**r, 'subject_id': f'subj{i}', 'study_id': f'st{i}-{j}'} for r in sample_rows()
                     if r['study_id'] == base['study_id']]
    dataset = write_jsonl(tmp_path / 'many.jsonl', rows)
    copy_images(tmp_path)
    code, stdout, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'sft.jsonl',
                             '--eval-fraction', '0.2', '--seed', '7')
    assert code == 0, err
    train, held_out = read_jsonl(tmp_path / 'sft.jsonl'), read_jsonl(tmp_path / 'sft.eval.jsonl')
    subject = {f'st{i}-{j}': f'subj{i}' for i in range(300) for j in range(2)}
    train_subjects = {subject[r['study_id']] for r in train}
    eval_subjects = {subject[r['study_id']] for r in held_out}
    assert not train_subjects & eval_subjects and len(train_subjects | eval_subjects) == 300
    assert 0.12 < len(eval_subjects) / 300 < 0.28
    assert eval_subjects == {f'subj{i}' for i in range(300) if split_of(f'subj{i}', 7, 0.2) == 'eval'}
    assert eval_subjects != {f'subj{i}' for i in range(300) if split_of(f'subj{i}', 8, 0.2) == 'eval'}


def test_consensus_requests(capsys, tmp_path):
    code, stdout, err = prep(capsys, 'consensus', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'req.jsonl')
    assert code == 0, err
    requests = read_jsonl(tmp_path / 'req.jsonl')
    assert len(requests) == 6 and 'dropped (empty trace): 1' in stdout
    by_study = {}
    for row in sample_rows():
        by_study.setdefault(str(row['study_id']), []).append(row)
    orders = []
    for request in requests:
        study = by_study[request['study_id']]
        prompt = request['messages'][0]['content']
        assert request['messages'][0]['role'] == 'user' and len(request['messages']) == 1
        assert prompt.startswith('<image>') and study[0]['question'] in prompt
        traces = [r['response'] for r in study if r['response']]
        blocks = re.findall(r'Source (\d+):\n(.*?)(?=\n\nSource \d+:|\n\nWrite one answer)', prompt, re.S)
        assert [int(n) for n, _ in blocks] == list(range(1, len(traces) + 1))
        assert sorted(text for _, text in blocks) == sorted(t.strip() for t in traces)
        assert not any(teacher in prompt for teacher in TEACHERS)
        orders.append([traces.index(text) for _, text in blocks])
    assert any(order != sorted(order) for order in orders)
    code, _, _ = prep(capsys, 'consensus', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'req2.jsonl', '--seed', '1')
    assert read_jsonl(tmp_path / 'req2.jsonl') != requests


def test_consensus_prompt_template_is_overridable_and_checked(capsys, tmp_path):
    template = tmp_path / 'prompt.txt'
    template.write_text('Q: {question}\n{num_sources} opinions:\n{sources}\nAnswer once, {{briefly}}.')
    code, _, err = prep(capsys, 'consensus', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'r.jsonl',
                        '--prompt-template', template)
    assert code == 0, err
    prompt = read_jsonl(tmp_path / 'r.jsonl')[0]['messages'][0]['content']
    assert prompt.startswith('<image>Q: Based on') and '\n7 opinions:\nSource 1:\n' in prompt
    assert prompt.endswith('Answer once, {briefly}.')
    template.write_text('Q: {question}\n{answers}')
    code, _, err = prep(capsys, 'consensus', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'r.jsonl',
                        '--prompt-template', template)
    assert code == 2 and "unknown placeholder(s) ['answers']" in err and f'{template}:' in err


def _consensus_files(capsys, tmp_path, answer):
    code, _, err = prep(capsys, 'consensus', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'req.jsonl')
    assert code == 0, err
    requests = read_jsonl(tmp_path / 'req.jsonl')
    write_jsonl(tmp_path / 'result.jsonl', infer_result_rows(requests, answer))
    return requests


def test_apo_rows_join_infer_results_without_study_ids(capsys, tmp_path):
    gpt5 = {str(r['study_id']): r['response'] for r in sample_rows() if r['model'] == 'GPT-5'}

    def answer(request):  # study 50414267's consensus repeats GPT-5 with other spacing; 53189527 gets none
        study = request['study_id']
        if study == '53189527':
            return ''
        return '  ' + gpt5[study].replace(' ', '\n ') if study == '50414267' else f'Consensus for {study}.'

    requests = _consensus_files(capsys, tmp_path, answer)
    assert all('study_id' not in r for r in read_jsonl(tmp_path / 'result.jsonl'))
    code, stdout, err = prep(capsys, 'apo', '--dataset', SAMPLE_FILE, '--consensus', tmp_path / 'result.jsonl',
                             '--requests', tmp_path / 'req.jsonl', '--out', tmp_path / 'apo.jsonl',
                             '--eval-fraction', '0')
    assert code == 0, err
    rows = {r['study_id']: r for r in read_jsonl(tmp_path / 'apo.jsonl')}
    assert sorted(rows) == sorted(r['study_id'] for r in requests if r['study_id'] != '53189527')
    first = rows['50414267']
    assert first['messages'][1]['content'] == gpt5['50414267'].replace(' ', '\n ').strip()
    assert first['rejected_sources'] == [t for t in TEACHERS if t != 'GPT-5']
    assert len(first['rejected_response']) == 6
    assert rows['50771383']['messages'][1]['content'] == 'Consensus for 50771383.'
    assert rows['50771383']['rejected_sources'] == TEACHERS
    assert rows['51178377']['rejected_sources'] == TEACHERS[:-1]  # Moonshot's trace there is empty
    assert 'dropped (consensus answer empty): 1' in stdout
    assert 'dropped (rejected trace: identical to the consensus): 1' in stdout
    assert 'dropped (rejected trace: empty trace): 1' in stdout
    from swift_plugin.rows import parse_rejected
    for where, row in rows.items():
        assert len(parse_rejected(row, where)) == len(row['rejected_sources'])


def test_apo_reports_studies_left_without_rejected_answers_and_foreign_answers(capsys, tmp_path):
    rows = [r for r in sample_rows() if r['model'] == 'GPT-5']  # one teacher only
    dataset = write_jsonl(tmp_path / 'one.jsonl', rows)
    copy_images(tmp_path)
    code, _, _ = prep(capsys, 'consensus', '--dataset', dataset, '--out', tmp_path / 'req.jsonl')
    requests = read_jsonl(tmp_path / 'req.jsonl')
    by_study = {str(r['study_id']): r['response'] for r in rows}
    write_jsonl(tmp_path / 'result.jsonl', infer_result_rows(requests, lambda r: by_study[r['study_id']]))
    code, stdout, err = prep(capsys, 'apo', '--dataset', dataset, '--consensus', tmp_path / 'result.jsonl',
                             '--requests', tmp_path / 'req.jsonl', '--out', tmp_path / 'apo.jsonl',
                             '--eval-fraction', '0')
    assert code == 0, err
    assert read_jsonl(tmp_path / 'apo.jsonl') == []
    assert 'dropped (study left without a rejected answer): 6' in stdout
    write_jsonl(tmp_path / 'other.jsonl', infer_result_rows(
        [{'messages': [{'role': 'user', 'content': '<image>another prompt'}], 'images': ['x.png']}], lambda r: 'A'))
    code, _, err = prep(capsys, 'apo', '--dataset', dataset, '--consensus', tmp_path / 'other.jsonl',
                        '--requests', tmp_path / 'req.jsonl', '--out', tmp_path / 'apo.jsonl')
    assert code == 2 and f"{tmp_path / 'other.jsonl'} line 1: field 'messages': this answer's prompt and images " \
                         f"match no request" in err


def test_report_counts_and_agreement(capsys, tmp_path):
    code, stdout, err = prep(capsys, 'report', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'drift')
    assert code == 0, err
    report = json.loads((tmp_path / 'drift' / 'drift.json').read_text())
    rows = sample_rows()
    assert report['studies'] == 6 and report['traces_per_study'] == {'7': 6}
    assert report['teachers']['Sonnet-4']['refusals'] == 1 and report['teachers']['Moonshot']['empty'] == 1
    gpt = sorted(len(r['response']) for r in rows if r['model'] == 'GPT-5')
    assert report['teachers']['GPT-5']['length_chars']['p50'] == gpt[2]  # nearest rank of 6 values
    assert report['teachers']['GPT-5']['length_chars']['max'] == gpt[-1]
    assert report['observations']['Cardiomegaly'] == 2 and report['observations_from'] == {'labels': 6}

    def words(text):  # an independent reading of the documented measure
        stop = set('a an and are as at be been but by can could do does for from has have if in into is it its may '
                   'might no not of on or such that the their there these this to was were which with without '
                   'would'.split())
        return {w for w in re.split(r'[^a-z0-9]+', text.lower()) if w and w not in stop}
    pairs = []
    for study in {r['study_id'] for r in rows}:
        texts = {r['model']: r['response'] for r in rows if r['study_id'] == study}
        a, b = words(texts['GPT-5']), words(texts['Qwen-VL-Max'])
        pairs.append(len(a & b) / len(a | b))
    mean = report['agreement']['mean']
    assert mean['GPT-5']['Qwen-VL-Max'] == pytest.approx(sum(pairs) / len(pairs), abs=1e-4)
    assert mean['Qwen-VL-Max']['GPT-5'] == mean['GPT-5']['Qwen-VL-Max']
    assert report['agreement']['studies_compared']['Moonshot']['Sonnet-4'] == 4  # one refusal, one empty
    markdown = (tmp_path / 'drift' / 'drift.md').read_text()
    assert '| Sonnet-4 | 6 | 0 | 1 | 5 |' in markdown
    with Image.open(tmp_path / 'drift' / 'agreement.png') as image:
        assert image.format == 'PNG' and image.size[0] > 300


def test_reruns_are_byte_identical(capsys, tmp_path):
    def run_all(folder):
        outputs = {}
        prep(capsys, 'sft', '--dataset', SAMPLE_FILE, '--out', folder / 'sft.jsonl', '--eval-fraction', '0.3')
        prep(capsys, 'consensus', '--dataset', SAMPLE_FILE, '--out', folder / 'req.jsonl')
        write_jsonl(folder / 'result.jsonl', infer_result_rows(read_jsonl(folder / 'req.jsonl'),
                                                               lambda r: f'Answer {r["study_id"]}'))
        prep(capsys, 'apo', '--dataset', SAMPLE_FILE, '--consensus', folder / 'result.jsonl', '--requests',
             folder / 'req.jsonl', '--out', folder / 'apo.jsonl', '--eval-fraction', '0.3')
        prep(capsys, 'report', '--dataset', SAMPLE_FILE, '--out', folder / 'drift')
        for path in sorted(folder.rglob('*')):
            if path.is_file() and path.name != 'result.jsonl':
                outputs[str(path.relative_to(folder))] = path.read_bytes()
        return outputs
    first, second = run_all(tmp_path / 'a'), run_all(tmp_path / 'b')
    assert sorted(first) == ['apo.eval.jsonl', 'apo.jsonl', 'drift/accuracy.png', 'drift/agreement.png',
                             'drift/drift.json', 'drift/drift.md', 'req.jsonl', 'sft.eval.jsonl', 'sft.jsonl']
    assert first == second
    assert first['sft.eval.jsonl'] and first['apo.eval.jsonl']


# ---------------------------------------------------------------- bad input

def _with_bad_line(tmp_path, line: bytes, at: int = 3) -> Path:
    lines = SAMPLE_FILE.read_bytes().splitlines(keepends=True)
    lines.insert(at - 1, line + b'\n')
    path = tmp_path / 'bad.jsonl'
    path.write_bytes(b''.join(lines))
    copy_images(tmp_path)
    return path


def _good(**change):
    return json.dumps({**sample_rows()[2], **change}, ensure_ascii=False).encode()


BAD_LINES = {
    'not valid JSON': (b'{"study_id": 1, "question": ', "line 3: not valid JSON"),
    'not UTF-8': (_good(response='caf\u00e9').replace('caf\xc3\xa9'.encode('latin-1'), b'caf\xe9'),
                  'line 3: not UTF-8 text'),
    'missing field': (_good(question=None), "line 3: field 'question': missing"),
    'wrong type': (_good(response=['a', 'b']), "line 3: field 'response': expected text, found list"),
    'duplicate trace': (json.dumps(sample_rows()[1]).encode(),
                        "line 3: field 'model': a second trace of teacher 'Gemini-2.5' for study '50414267' (first at"),
    'inconsistent study': (_good(model='Other', question='Another question?'),
                           "line 3: field 'question': differs from the same study's row at"),
    'image outside root': (_good(model='Other', study_id=1, image_path='../outside.jpg'),
                           "line 3: field 'image_path': image path '../outside.jpg' leaves the image root"),
}


@pytest.mark.parametrize('reason', sorted(BAD_LINES))
def test_bad_rows_fail_naming_file_row_and_field_or_are_skipped_and_listed(capsys, tmp_path, reason):
    line, message = BAD_LINES[reason]
    dataset = _with_bad_line(tmp_path, line)
    out = tmp_path / 'sft.jsonl'
    code, _, err = prep(capsys, 'sft', '--dataset', dataset, '--out', out, '--eval-fraction', '0')
    assert code == 2 and f'{dataset} {message}' in err, err
    assert list(tmp_path.glob('sft*')) == [] and list(tmp_path.glob('.sft*')) == []  # nothing half-written
    code, stdout, err = prep(capsys, 'sft', '--dataset', dataset, '--out', out, '--eval-fraction', '0',
                             '--skip-invalid')
    assert code == 0, err
    assert f'skipped invalid ({reason}): 1' in stdout
    assert len(read_jsonl(out)) == 41
    rejects = read_jsonl(tmp_path / 'sft.rejects.jsonl')
    assert len(rejects) == 1 and rejects[0]['where'] == f'{dataset} line 3' and rejects[0]['reason'] == reason
    assert message in rejects[0]['error'] and ('raw' in rejects[0] or 'row' in rejects[0])


def test_duplicate_study_in_per_study_layout(capsys, tmp_path):
    rows = per_study_rows('dict')
    dataset = write_jsonl(tmp_path / 'dup.jsonl', rows + [rows[1]])
    copy_images(tmp_path)
    code, _, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'o.jsonl')
    assert code == 2 and f"{dataset} line 7: field 'study_id': duplicate study '53189527' (first seen at " \
                         f"{dataset} line 2)" in err


def test_unknown_teacher(capsys, tmp_path):
    teachers = ','.join(t for t in TEACHERS if t != 'Grok-4')
    code, _, err = prep(capsys, 'sft', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'o.jsonl', '--teachers', teachers)
    assert code == 2 and f"{SAMPLE_FILE} line 4: field 'model': unknown teacher 'Grok-4'" in err
    code, stdout, _ = prep(capsys, 'sft', '--dataset', SAMPLE_FILE, '--out', tmp_path / 'o.jsonl', '--teachers',
                           teachers, '--skip-invalid', '--eval-fraction', '0')
    assert code == 0 and 'skipped invalid (unknown teacher): 6' in stdout


def test_absolute_image_paths_need_permission(capsys, tmp_path):
    rows = [{**r, 'image_path': str(SAMPLE / r['image_path'])} for r in sample_rows()]
    dataset = write_jsonl(tmp_path / 'abs.jsonl', rows)
    code, _, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'o.jsonl')
    assert code == 2 and 'is absolute' in err and '--allow-outside-image-root' in err
    out, _, _ = sft_ok(capsys, dataset, tmp_path / 'o.jsonl', '--allow-outside-image-root', '--check-images')
    assert out[0]['images'] == [rows[0]['image_path']]


def test_symlink_out_of_the_image_root_needs_permission(capsys, tmp_path):
    """A link inside the root that points outside it is refused like ``..``; a link within the root is fine."""
    (tmp_path / 'data').mkdir()
    copy_images(tmp_path / 'outside')
    first = sample_rows()[0]['image_path']
    (tmp_path / 'data' / 'leak.jpg').symlink_to(tmp_path / 'outside' / first)
    copy_images(tmp_path / 'data')
    (tmp_path / 'data' / 'inside.jpg').symlink_to(tmp_path / 'data' / first)
    rows = sample_rows()

    def linked(name):   # every trace row of the first study through the link
        return write_jsonl(tmp_path / 'data' / 'd.jsonl', [{**r, 'image_path': name} if r['study_id'] ==
                                                            rows[0]['study_id'] else r for r in rows])
    sft_ok(capsys, linked('inside.jpg'), tmp_path / 'ok.jsonl')
    dataset = linked('leak.jpg')
    code, _, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'o.jsonl')
    assert code == 2, err
    assert (f"{dataset} line 1: field 'image_path': image path 'leak.jpg' leads out of the image root through a "
            f"symbolic link (to {tmp_path / 'outside' / first}) ({tmp_path / 'data'}); pass "
            f"--allow-outside-image-root if that is intended") in err
    out, _, _ = sft_ok(capsys, dataset, tmp_path / 'o.jsonl', '--allow-outside-image-root', '--check-images')
    assert str(tmp_path / 'data' / 'leak.jpg') in out[0]['images']


def test_check_images_finds_missing_and_broken_images(capsys, tmp_path):
    dataset = write_jsonl(tmp_path / 'data.jsonl', sample_rows())
    copy_images(tmp_path)
    broken = tmp_path / sample_rows()[7]['image_path']
    broken.write_bytes(b'not a jpeg')
    (tmp_path / sample_rows()[14]['image_path']).unlink()
    sft_ok(capsys, dataset, tmp_path / 'unchecked.jsonl')
    code, _, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'o.jsonl', '--check-images')
    assert code == 2 and f"{dataset} line 8: field 'image_path[0]': image does not decode: {broken}" in err
    code, stdout, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'o.jsonl', '--check-images',
                             '--skip-invalid', '--eval-fraction', '0')
    assert code == 0, err
    assert 'skipped invalid (image missing): 1' in stdout and 'skipped invalid (image unreadable): 1' in stdout
    assert len(read_jsonl(tmp_path / 'o.jsonl')) == 41 - 14


def test_split_needs_a_subject(capsys, tmp_path):
    rows = [{k: v for k, v in r.items() if k != 'subject_id'} | {'image_path': 'files/x.jpg'} for r in sample_rows()]
    dataset = write_jsonl(tmp_path / 'nosubject.jsonl', rows)
    code, _, err = prep(capsys, 'sft', '--dataset', dataset, '--out', tmp_path / 'o.jsonl', '--eval-fraction', '0.1')
    assert code == 2 and 'no subject (patient) id to split by' in err and '--subject-column' in err


def test_detect_needs_rows():
    with pytest.raises(DataError, match='empty.jsonl: no rows to read'):
        detect([], ColumnMapping(), 'empty.jsonl')


def _pending(capsys, tmp_path, *args):
    code, stdout, err = prep(capsys, 'pending', '--requests', tmp_path / 'req.jsonl', '--results',
                             tmp_path / 'result.jsonl', '--out', tmp_path / 'pending.jsonl', *args)
    assert code == 0, err
    return stdout


def test_pending_ignores_an_unfinished_last_line_and_never_writes_the_results(capsys, tmp_path):
    requests = _consensus_files(capsys, tmp_path, lambda r: f'Answer {r["study_id"]}')
    results = tmp_path / 'result.jsonl'
    lines = results.read_bytes().splitlines(keepends=True)
    killed = b''.join(lines[:2]) + lines[2][:40]  # killed (or still going) while writing the third answer
    results.write_bytes(killed)
    stdout = _pending(capsys, tmp_path)
    assert results.read_bytes() == killed and f'{results} line 3: ignored an unfinished last line' in stdout
    assert read_jsonl(tmp_path / 'pending.jsonl') == requests[2:]


def test_pending_keeps_a_complete_last_answer_without_its_newline(capsys, tmp_path):
    requests = _consensus_files(capsys, tmp_path, lambda r: f'Answer {r["study_id"]}')
    results = tmp_path / 'result.jsonl'
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b''.join(lines[:2]) + lines[2].rstrip(b'\n'))
    stdout = _pending(capsys, tmp_path)
    assert read_jsonl(tmp_path / 'pending.jsonl') == requests[3:] and 'unfinished' not in stdout
    results.write_bytes(b''.join(lines[:2]) + b'{"response": "x"}')  # JSON, but not a whole result row
    _pending(capsys, tmp_path)
    assert read_jsonl(tmp_path / 'pending.jsonl') == requests[2:]
    results.write_bytes(b''.join(lines[:1]) + lines[2][:40] + b'\n' + lines[1])  # a broken line inside the file
    code, _, err = prep(capsys, 'pending', '--requests', tmp_path / 'req.jsonl', '--results', results,
                        '--out', tmp_path / 'pending.jsonl')
    assert code == 2 and f'{results} line 2: not valid JSON' in err


def test_pending_shards_merge_and_resume(capsys, tmp_path):
    requests = _consensus_files(capsys, tmp_path, lambda r: f'Answer {r["study_id"]}')
    results, parts = tmp_path / 'result.jsonl', tmp_path / 'parts'
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(lines[0])
    parts.mkdir()
    (parts / 'run1-0.jsonl').write_bytes(lines[2] + lines[3][:30])  # shard 0 killed mid-answer, shard 1 done
    (parts / 'run1-1.jsonl').write_bytes(lines[4] + lines[1])
    stdout = _pending(capsys, tmp_path, '--parts', parts, '--shards', '2')
    assert read_jsonl(tmp_path / 'pending.shard0.jsonl') == [requests[3]]
    assert read_jsonl(tmp_path / 'pending.shard1.jsonl') == [requests[5]] and 'unfinished' in stdout
    (parts / 'run2-0.jsonl').write_bytes(lines[3] + lines[0])  # the resumed shard, and a duplicate answer
    (parts / 'run2-1.jsonl').write_bytes(lines[5])
    code, stdout, err = prep(capsys, 'merge', '--requests', tmp_path / 'req.jsonl', '--results', results,
                             '--parts', parts)
    assert code == 0, err
    assert results.read_bytes() == b''.join(lines) and list(parts.iterdir()) == []
    assert 'dropped (duplicate answer (first kept)): 1' in stdout
    _pending(capsys, tmp_path, '--parts', parts, '--shards', '2')
    assert read_jsonl(tmp_path / 'pending.shard0.jsonl') == read_jsonl(tmp_path / 'pending.shard1.jsonl') == []
    code, stdout, _ = prep(capsys, 'apo', '--dataset', SAMPLE_FILE, '--consensus', results, '--requests',
                           tmp_path / 'req.jsonl', '--out', tmp_path / 'apo.jsonl', '--eval-fraction', '0')
    assert code == 0 and len(read_jsonl(tmp_path / 'apo.jsonl')) == 6 and 'duplicate' not in stdout

@pytest.mark.parametrize('umask, mode', [(0o077, 0o600), (0o022, 0o644), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mode):
    from datafiles import output_set
    previous = os.umask(umask)
    try:
        with output_set() as outputs:
            outputs.open(str(tmp_path / 'sft.jsonl')).write('{}\n')
    finally:
        os.umask(previous)
    assert (tmp_path / 'sft.jsonl').stat().st_mode & 0o777 == mode
