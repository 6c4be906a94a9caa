"""Students beside their teachers in the drift report (data_prep report --source NAME=FILE): label accuracy,
agreement with the consensus, spread, and McNemar's exact test against the best teacher, checked by hand; bad
--source input; the one McNemar implementation shared by data_prep and evaluation."""
import json
import math

import pytest

from clinical_text.stats import mcnemar_exact, mcnemar_from_counts
from cxr_data import SAMPLE_FILE, write_jsonl
from data_prep.cli import main
from data_prep.records import Study, StudyHead, Trace
from data_prep.report import CONSENSUS, DriftReport, markdown

YES, NO = 'Pleural effusion.', 'No pleural effusion.'
LABELS = [1.0] * 5 + [0.0] * 5
# teacher A calls effusion everywhere: right on the 5 positives; B: wrong everywhere but study 4;
# the student S: right everywhere but study 0.
A = [YES] * 10
B = [NO] * 4 + [YES] * 6
S = [NO] + [YES] * 4 + [NO] * 5


def _study(i, traces):
    head = StudyHead(f's{i}', 'p1', ('x.jpg',), 'q', ('Pleural Effusion',) if LABELS[i] else (),
                     (('Pleural Effusion', LABELS[i]),))
    return Study(head, tuple(Trace(t, text) for t, text in traces.items()), f's{i}')


def _summary(consensus=False, students=('S',)):
    report = DriftReport(students=students)
    for i in range(10):
        traces = {'A': A[i], 'B': B[i], 'S': S[i]}
        if consensus:
            traces[CONSENSUS] = S[i]
        report.add(_study(i, traces))
    return report.summary()


def _binomial_p(b, c):
    """Two-sided exact McNemar p, written directly from the binomial distribution."""
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) * 0.5 ** n for i in range(k + 1)))


def test_student_against_best_teacher_by_hand():
    summary = _summary(consensus=True)
    acc = summary['label_accuracy']
    assert (acc['A']['Pleural Effusion']['accuracy'], acc['B']['Pleural Effusion']['accuracy'],
            acc['S']['Pleural Effusion']['accuracy']) == (0.5, 0.1, 0.9)
    e = summary['students']['S']['versus_best_teacher']['Pleural Effusion']
    # paired with A: S alone right on studies 5-9 (5), A alone right on study 0 (1)
    assert e['best_teacher'] == 'A' and e['paired_studies'] == 10
    assert (e['student_only_right'], e['teacher_only_right']) == (5, 1)
    assert e['p_value'] == pytest.approx(_binomial_p(5, 1)) == pytest.approx(2 * 7 / 64)
    assert e['student_better'] is True
    assert summary['students']['S']['beats_best_teacher'] == {'observations': 1, 'better': 1,
                                                             'better_p_below_0.05': 0}
    # spread over the teachers (and the consensus) only, and with the student
    assert summary['spread']['Pleural Effusion'] == pytest.approx(0.9 - 0.1)   # the consensus says what S says
    assert summary['spread_with_students']['Pleural Effusion'] == pytest.approx(0.8)
    pooled = summary['students']['S']['versus_each_teacher_pooled']
    assert set(pooled) == {'A', 'B'}   # the consensus is no teacher to beat
    assert (pooled['B']['student_only_right'], pooled['B']['teacher_only_right']) == (8, 0)
    assert pooled['B']['p_value'] == pytest.approx(_binomial_p(8, 0))
    consensus = summary['students']['S']['consensus']
    assert consensus['call_agreement']['Pleural Effusion'] == 1.0 and consensus['word_overlap'] == 1.0
    assert summary['students']['S']['macro_accuracy'] == 0.9
    text = markdown(summary)
    assert '## Students beside their teachers' in text and '| Pleural Effusion | A | 0.50 | 0.90 | 10 | 5 | 1 |' in text


def test_no_students_no_section():
    summary = _summary(students=())
    assert 'students' not in summary and 'Students beside' not in markdown(summary)
    # without students, the spread is the spread over every source, as before
    assert summary['spread']['Pleural Effusion'] == pytest.approx(0.8)


def test_mcnemar_shared_and_checked_against_binomial():
    from evaluation.metrics import mcnemar_exact as evaluation_mcnemar
    assert evaluation_mcnemar is mcnemar_exact
    for b, c in ((0, 0), (3, 0), (9, 2), (10, 10), (1, 12)):
        assert mcnemar_from_counts(b, c)['p_value'] == pytest.approx(_binomial_p(b, c) if b + c else 1.0)
    r = mcnemar_exact([1, 1, 0, 1], [0, 1, 1, 0])
    assert (r['a_only'], r['b_only'], r['discordant']) == (2, 1, 3)


def _sample_ids():
    return sorted({str(json.loads(line)['study_id']) for line in SAMPLE_FILE.read_text().splitlines()})


def test_report_source_cli(tmp_path, capsys):
    ids = _sample_ids()
    # a student that names every finding (swift infer result rows with a study_id) and one in {"id", "response"}
    # rows with 's' prefixed ids, answering only the first study, plus an id of no study
    write_jsonl(tmp_path / 'apo.jsonl', [{'study_id': int(i), 'response': 'Atelectasis, cardiomegaly, consolidation, '
                                          'edema, opacity, pleural effusion, pneumonia and pneumothorax.',
                                          'messages': []} for i in ids])
    write_jsonl(tmp_path / 'sft.jsonl', [{'id': f's{ids[0]}', 'response': 'No acute process.'},
                                         {'id': 'nope', 'response': 'x'}])
    code = main(['report', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'drift'), '--workers', '1',
                 '--source', f'apo={tmp_path / "apo.jsonl"}', '--source', f'sft={tmp_path / "sft.jsonl"}'])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads((tmp_path / 'drift' / 'drift.json').read_text())
    assert summary['teachers']['apo']['answers'] == len(ids) and summary['teachers']['sft']['answers'] == 1
    apo = summary['students']['apo']
    labelled = [o for o in apo['versus_best_teacher'] if apo['versus_best_teacher'][o]]
    assert labelled and all(summary['label_accuracy']['apo'][o]['accuracy'] == 1.0 for o in labelled)
    assert summary['students']['sft']['file']['unknown_ids'] == 1
    assert summary['students']['sft']['file']['unknown_examples'] == ['nope']
    assert 'belong to no study' in out
    text = (tmp_path / 'drift' / 'drift.md').read_text()
    assert '### apo' in text and 'McNemar' in text


@pytest.mark.parametrize('rows, message', [
    (['{"id": "1", "response": "x"}', '{"id": "2", '], 'line 2'),
    (['{"response": "x"}'], "field 'id'"),
    (['{"id": "1"}'], "field 'response'"),
    (['{"id": "1", "response": 3}'], "field 'response'"),
    (['{"id": "1", "response": "a"}', '{"id": "s1", "response": "b"}'], 'already answered'),
])
def test_report_source_bad_input(tmp_path, capsys, rows, message):
    path = tmp_path / 'bad.jsonl'
    path.write_text('\n'.join(rows) + '\n')
    assert main(['report', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'd'), '--workers', '1',
                 '--source', f'x={path}']) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err


def test_report_source_bad_spec(tmp_path, capsys):
    good = tmp_path / 'a.jsonl'
    good.write_text('{"id": "1", "response": "x"}\n')
    for spec in ('nameonly', f'consensus={good}', f'x={tmp_path / "missing.jsonl"}'):
        assert main(['report', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'd'), '--source', spec]) == 2
    assert main(['report', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'd'), '--source', f'x={good}',
                 '--source', f'x={good}']) == 2
    assert not (tmp_path / 'd').exists()


def test_report_source_swift_infer_rows_joined_by_request(tmp_path, capsys):
    from cxr_data import infer_result_rows
    # the students answer data_prep's own SFT rows (one per study and teacher): swift infer keeps no study_id
    assert main(['sft', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'sft.jsonl')]) == 0
    requests = [json.loads(line) for name in ('sft.jsonl', 'sft.eval.jsonl') if (tmp_path / name).exists()
                for line in (tmp_path / name).read_text().splitlines()]
    requests = [{'messages': r['messages'][:-1], 'images': r['images']} for r in requests]
    write_jsonl(tmp_path / 'apo.jsonl', infer_result_rows(requests, lambda r: 'No pleural effusion.'))
    capsys.readouterr()
    assert main(['report', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'drift'), '--workers', '1',
                 '--source', f'apo={tmp_path / "apo.jsonl"}']) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / 'drift' / 'drift.json').read_text())
    ids = _sample_ids()
    assert summary['teachers']['apo']['answers'] == len(ids)
    assert summary['students']['apo']['file']['unknown_ids'] == 0
    # one request per teacher and study: the repeats are counted, not silently dropped
    assert len(requests) > len(ids) and 'a second answer to the same request' in out
