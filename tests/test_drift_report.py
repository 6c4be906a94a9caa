"""The drift report's label statistics (data_prep/report.py), each checked against an independent computation on
a small hand-made dataset, the labels CSV (data_prep/chexpert.py) and the negation-aware word overlap."""
import csv
import json
import math

import pytest

from cxr_data import SAMPLE_FILE, infer_result_rows, write_jsonl
from clinical_text.labels import REQUIRED, load_labels_csv
from data_prep.cli import main
from data_prep.records import Study, StudyHead, Trace
from clinical_text.stats import binary_kappa, cohen_kappa
from data_prep.report import DriftReport, wilson
from datafiles import DataError
from data_prep.text import OBSERVATIONS, content_words, jaccard


def _study(study_id, labels, traces):
    head = StudyHead(study_id, 'p1', ('x.jpg',), 'q', tuple(o for o, v in labels.items() if v == 1.0),
                     tuple(labels.items()))
    return Study(head, tuple(Trace(t, text) for t, text in traces.items()), study_id)


# Effusion labels of 5 studies, and what two teachers say (A: right on 4 of 5; B: says effusion everywhere).
STUDIES = [
    ({'Pleural Effusion': 1.0}, 'Large left pleural effusion.', 'Small pleural effusion.'),
    ({'Pleural Effusion': 1.0}, 'Possible small effusion.', 'Pleural effusion.'),
    ({'Pleural Effusion': 0.0}, 'No pleural effusion.', 'Effusion on the right.'),
    ({'Pleural Effusion': 0.0}, 'The heart is enlarged.', 'Bilateral effusions.'),
    ({'Pleural Effusion': 1.0, 'Edema': -1.0}, 'No effusion or edema.', 'Effusion, cannot exclude edema.'),
]


def _report():
    report = DriftReport()
    for i, (labels, a, b) in enumerate(STUDIES):
        report.add(_study(f's{i}', labels, {'A': a, 'B': b}))
    return report.summary()


def _wilson_by_roots(k, n, z=1.959963984540054):
    """The interval's ends as the roots in p of (k/n - p)^2 = z^2 p (1 - p) / n."""
    a, b, c = 1 + z * z / n, -(2 * k / n + z * z / n), (k / n) ** 2
    root = math.sqrt(b * b - 4 * a * c)
    return [(-b - root) / (2 * a), (-b + root) / (2 * a)]


@pytest.mark.parametrize('k, n', [(8, 10), (0, 5), (5, 5), (37, 120)])
def test_wilson_interval(k, n):
    assert wilson(k, n) == pytest.approx(_wilson_by_roots(k, n), abs=1e-4)
    assert wilson(0, 0) is None


def test_cohen_kappa_by_hand():
    # 2x2: observed 35/50, chance (25*30 + 25*20) / 50^2 = 0.5 -> 0.4
    assert cohen_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    # 3x3: observed (10+8+12)/45, chance (15*14 + 12*13 + 18*18) / 45^2
    observed, chance = 30 / 45, (15 * 14 + 12 * 13 + 18 * 18) / 45 ** 2
    assert cohen_kappa([[10, 2, 3], [1, 8, 3], [3, 3, 12]]) == pytest.approx((observed - chance) / (1 - chance))
    assert cohen_kappa([[4, 0], [0, 0]]) is None and cohen_kappa([[0, 0], [0, 0]]) is None
    # from paired calls: A says yes on 25 items (B agrees on 20), B says yes on 30
    pairs = [(True, True)] * 20 + [(True, False)] * 5 + [(False, True)] * 10 + [(False, False)] * 15
    assert binary_kappa(pairs) == pytest.approx(0.4) and binary_kappa([]) is None


def test_label_accuracy_spread_and_kappa():
    summary = _report()
    a, b = summary['label_accuracy']['A']['Pleural Effusion'], summary['label_accuracy']['B']['Pleural Effusion']
    # A: positive, uncertain (counts as positive), negative, not mentioned, negative -> TP 2, FN 1, TN 2, FP 0
    assert (a['n'], a['correct'], a['accuracy']) == (5, 4, 0.8)
    assert a['ci95'] == pytest.approx(_wilson_by_roots(4, 5), abs=1e-4)
    assert (a['sensitivity']['n'], a['sensitivity']['value'], a['specificity']['value']) == (3, round(2 / 3, 4), 1.0)
    assert a['calls'] == {'positive': 1, 'uncertain': 1, 'negative': 2, 'not mentioned': 1}
    assert (b['correct'], b['sensitivity']['value'], b['specificity']['value']) == (3, 1.0, 0.0)
    assert summary['spread']['Pleural Effusion'] == pytest.approx(0.8 - 0.6)
    assert summary['label_accuracy']['A']['Edema']['n'] == 0       # -1.0 is not a definite label
    assert summary['spread']['Edema'] is None
    # Effusion calls, A vs B in classes (positive, uncertain, negative/none): (p,p) (u,p) (n,p) (none,p) (n,p)
    assert summary['finding_agreement']['kappa']['Pleural Effusion']['A']['B'] == cohen_kappa(
        [[1, 0, 0], [1, 0, 0], [3, 0, 0]])
    # Edema: A none x4 + negative; B none x4 + uncertain
    expected = cohen_kappa([[0, 0, 0], [0, 0, 0], [0, 1, 4]])
    assert summary['finding_agreement']['kappa']['Edema']['A']['B'] == expected
    assert summary['labels'] == {'source': 'dataset', 'studies_labelled': 5, 'studies_unlabelled': 0}


def test_word_overlap_marks_negated_words():
    affirmed, negated = content_words('large left pleural effusion'), content_words('no large left pleural effusion')
    assert jaccard(affirmed, negated) == 0.0
    assert content_words("No effusion, but the heart isn't enlarged. Edema.") == {
        'neg_effusion', 'heart', 'neg_enlarged', 'edema'}


def _write_labels(path, rows, fields=REQUIRED):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def test_labels_csv_join_and_errors(tmp_path, capsys):
    path = tmp_path / 'chexpert.csv'
    rows = [{'subject_id': 10000032, 'study_id': 50414267, 'Pleural Effusion': '1.0', 'Atelectasis': '-1.0',
             'Cardiomegaly': '0.0'}, {'subject_id': 10000032, 'study_id': 53189527, 'Cardiomegaly': '1.0'}]
    _write_labels(path, rows)
    assert load_labels_csv(str(path))['50414267'] == {'Atelectasis': -1.0, 'Cardiomegaly': 0.0,
                                                      'Pleural Effusion': 1.0}
    code = main(['report', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'drift'), '--labels-csv', str(path)])
    capsys.readouterr()
    summary = json.loads((tmp_path / 'drift' / 'drift.json').read_text())
    assert code == 0 and summary['labels']['studies_labelled'] == 2
    assert summary['labels']['studies_unlabelled'] == summary['studies'] - 2
    counted = {t: summary['label_accuracy'][t]['Cardiomegaly']['n'] for t in summary['teachers']}
    assert max(counted.values()) == 2 and (tmp_path / 'drift' / 'accuracy.png').stat().st_size > 1000

    _write_labels(path, [{**rows[0], 'Edema': 'maybe'}])
    with pytest.raises(DataError, match=r"chexpert\.csv: line 2: column 'Edema': .*'maybe'"):
        load_labels_csv(str(path))
    _write_labels(path, rows, fields=[f for f in REQUIRED if f != 'Fracture'])
    with pytest.raises(DataError, match=r'chexpert\.csv: line 1: missing column\(s\) Fracture'):
        load_labels_csv(str(path))
    with pytest.raises(DataError, match='labels file not found'):
        load_labels_csv(str(tmp_path / 'absent.csv'))
    assert set(OBSERVATIONS) < set(REQUIRED)


def test_consensus_scored_next_to_the_teachers(tmp_path, capsys):
    requests = tmp_path / 'req.jsonl'
    assert main(['consensus', '--dataset', str(SAMPLE_FILE), '--out', str(requests)]) == 0
    rows = [json.loads(line) for line in requests.read_text().splitlines()]
    # the consensus names every labelled finding of the sample as present: right on every positive label
    write_jsonl(tmp_path / 'result.jsonl', infer_result_rows(rows, lambda r: (
        'Atelectasis, cardiomegaly, consolidation, edema, opacity, pleural effusion, pneumonia and pneumothorax.')))
    code = main(['report', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'drift'), '--consensus',
                 str(tmp_path / 'result.jsonl'), '--requests', str(requests), '--workers', '1'])
    capsys.readouterr()
    summary = json.loads((tmp_path / 'drift' / 'drift.json').read_text())
    consensus = summary['label_accuracy']['consensus']
    assert code == 0 and summary['teachers']['consensus']['answers'] == summary['studies']
    labelled = [o for o in OBSERVATIONS if summary['label_accuracy']['GPT-5'][o]['n']]
    assert labelled and all(consensus[o]['accuracy'] == 1.0 for o in labelled)
    assert main(['report', '--dataset', str(SAMPLE_FILE), '--out', str(tmp_path / 'x'), '--consensus',
                 str(tmp_path / 'result.jsonl')]) == 2
    assert '--consensus and --requests go together' in capsys.readouterr().err
