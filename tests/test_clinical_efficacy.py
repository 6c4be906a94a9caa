"""Clinical efficacy of generated reports (labelled by the project's findings reader), checked against hand
computations; report-gen and compare on tiny synthetic reports; the shared statistics helpers."""
import json
import math
import re

import numpy as np
import pytest

from clinical_text import OBSERVATIONS
from evaluation.cli import main
from evaluation.clinical_efficacy import COMMON_5, binary, compare_efficacy, efficacy, label_reports
from evaluation.metrics import bootstrap_weights


def _labels(**calls):
    row = {obs: None for obs in OBSERVATIONS}
    row.update({k.replace('_', ' '): v for k, v in calls.items()})
    return row


# Four reports, hand-made labels. Reference / generated:
#  1: Edema +        / Edema +, Cardiomegaly +
#  2: Cardiomegaly + / Cardiomegaly -
#  3: Effusion +     / Effusion ? (uncertain)
#  4: Pneumothorax + / Pneumothorax +
REF = [_labels(Edema='positive'), _labels(Cardiomegaly='positive'), _labels(Pleural_Effusion='positive'),
       _labels(Pneumothorax='positive')]
HYP = [_labels(Edema='positive', Cardiomegaly='positive'), _labels(Cardiomegaly='negative'),
       _labels(Pleural_Effusion='uncertain'), _labels(Pneumothorax='positive')]


def test_efficacy_matches_hand_computation():
    r = efficacy(HYP, REF, n_boot=0)
    pos, neg = r['uncertain_as_positive'], r['uncertain_as_negative']
    # uncertain as positive: TP Edema, Effusion, Pneumothorax = 3; FP Cardiomegaly (report 1) = 1; FN Cardiomegaly
    # (report 2) = 1. Micro P = 3/4, R = 3/4, F1 = 3/4.
    assert pos['14']['micro_precision']['value'] == pytest.approx(3 / 4)
    assert pos['14']['micro_recall']['value'] == pytest.approx(3 / 4)
    assert pos['14']['micro_f1']['value'] == pytest.approx(3 / 4)
    # per observation F1: Edema 1, Effusion 1, Pneumothorax 1, Cardiomegaly (TP 0) 0, others 0 (0/0 -> 0)
    assert pos['14']['macro_f1']['value'] == pytest.approx(3 / 14)
    # the common 5 drop Pneumothorax: TP 2, FP 1, FN 1 -> 2/3; macro F1 over 5: (1 + 1 + 0) / 5
    assert pos['5']['micro_f1']['value'] == pytest.approx(2 / 3)
    assert pos['5']['macro_f1']['value'] == pytest.approx(2 / 5)
    assert pos['5']['macro_precision']['value'] == pytest.approx(2 / 5)
    # uncertain as negative: the effusion becomes a FN: TP 2, FP 1, FN 2 -> P 2/3, R 1/2, F1 = 2PR/(P+R) = 4/7
    assert neg['14']['micro_precision']['value'] == pytest.approx(2 / 3)
    assert neg['14']['micro_recall']['value'] == pytest.approx(1 / 2)
    assert neg['14']['micro_f1']['value'] == pytest.approx(4 / 7)
    row = pos['observations']['Cardiomegaly']
    assert (row['tp'], row['fp'], row['fn'], row['tn'], row['f1']) == (0, 1, 1, 2, 0)
    assert neg['observations']['Pleural Effusion']['fn'] == 1 and pos['observations']['Pleural Effusion']['tp'] == 1
    assert "project's findings reader" in r['labeller'] and 'not CheXbert' in r['labeller']
    assert r['sets']['5'] == list(COMMON_5)


def test_efficacy_against_a_direct_loop():
    rng = np.random.default_rng(3)
    calls = [None, 'positive', 'negative', 'uncertain']
    hyp = [{o: calls[rng.integers(4)] for o in OBSERVATIONS} for _ in range(30)]
    ref = [{o: calls[rng.integers(4)] for o in OBSERVATIONS} for _ in range(30)]
    r = efficacy(hyp, ref, n_boot=0)
    for policy, hits in (('uncertain_as_positive', {'positive', 'uncertain'}), ('uncertain_as_negative', {'positive'})):
        f1s, tp_all, fp_all, fn_all = [], 0, 0, 0
        for obs in COMMON_5:
            tp = sum(1 for h, g in zip(hyp, ref) if h[obs] in hits and g[obs] in hits)
            fp = sum(1 for h, g in zip(hyp, ref) if h[obs] in hits and g[obs] not in hits)
            fn = sum(1 for h, g in zip(hyp, ref) if h[obs] not in hits and g[obs] in hits)
            p = tp / (tp + fp) if tp + fp else 0.0
            rc = tp / (tp + fn) if tp + fn else 0.0
            f1s.append(2 * p * rc / (p + rc) if p + rc else 0.0)
            tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        assert r[policy]['5']['macro_f1']['value'] == pytest.approx(sum(f1s) / 5)
        assert r[policy]['5']['micro_f1']['value'] == pytest.approx(2 * tp_all / (2 * tp_all + fp_all + fn_all))


def test_bootstrap_intervals_and_weights():
    w = bootstrap_weights(5, n_boot=7, seed=1)
    assert w.shape == (7, 5) and (w.sum(axis=1) == 5).all()
    assert (bootstrap_weights(5, 7, 1) == w).all()
    r = efficacy(HYP, REF, n_boot=300, seed=0)
    for policy in ('uncertain_as_positive', 'uncertain_as_negative'):
        for name in ('14', '5'):
            for stat, entry in r[policy][name].items():
                low, high = entry['ci']
                assert 0 <= low <= high <= 1, (policy, name, stat)
    perfect = efficacy(REF, REF, n_boot=100)
    assert perfect['uncertain_as_positive']['14']['micro_f1'] == {'value': 1.0, 'ci': [1.0, 1.0]}


def test_reader_labels_reports():
    labels = label_reports(['Large right pleural effusion. No pneumothorax.', 'Possible mild pulmonary edema.', None])
    assert labels[0]['Pleural Effusion'] == 'positive' and labels[0]['Pneumothorax'] == 'negative'
    assert labels[1]['Edema'] == 'uncertain'
    assert labels[2]['Edema'] is None
    assert binary(labels, 'uncertain_as_positive')[1, OBSERVATIONS.index('Edema')] == 1
    assert binary(labels, 'uncertain_as_negative')[1, OBSERVATIONS.index('Edema')] == 0


def test_compare_efficacy_paired():
    same = compare_efficacy(HYP, HYP, REF, n_boot=200)
    entry = same['uncertain_as_positive']['14']['micro_f1']
    assert entry['difference'] == 0 and entry['ci_low'] == entry['ci_high'] == 0 and entry['p_value'] == 1
    better = compare_efficacy(HYP, REF, REF, n_boot=200)
    entry = better['uncertain_as_positive']['14']['micro_f1']
    assert entry['a'] == pytest.approx(3 / 4) and entry['b'] == 1 and entry['difference'] == pytest.approx(1 / 4)
    assert entry['ci_low'] >= 0


def _write(path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path


REPORTS = [('r1', 'Moderate cardiomegaly. Small left pleural effusion.'),
           ('r2', 'Pulmonary edema. No pneumothorax.'),
           ('r3', 'No acute cardiopulmonary process.'),
           ('r4', 'Right lower lobe atelectasis.')]


def test_report_gen_and_compare_cli(tmp_path, capsys):
    dataset = _write(tmp_path / 'eval.jsonl', [{'id': i, 'images': ['x.jpg'], 'question': 'Findings?', 'reference': t}
                                               for i, t in REPORTS])
    good = _write(tmp_path / 'good.jsonl', [{'id': i, 'answer': t} for i, t in REPORTS])
    bad = _write(tmp_path / 'bad.jsonl', [{'id': i, 'answer': 'No acute cardiopulmonary process.'} for i, _ in REPORTS])
    for name, answers in (('good', good), ('bad', bad)):
        assert main(['report-gen', '--answers', str(answers), '--dataset', str(dataset), '--out', str(tmp_path / 'gen'),
                     '--name', name, '--no-clinical', '--n-boot', '100']) == 0
    result = json.loads((tmp_path / 'gen' / 'good.gen.json').read_text())
    ce = result['clinical_efficacy']
    assert ce['uncertain_as_positive']['5']['micro_f1']['value'] == 1.0
    assert ce['uncertain_as_negative']['14']['micro_f1']['value'] == 1.0
    assert [row['id'] for row in result['labels']] == ['r1', 'r2', 'r3', 'r4']
    bad_result = json.loads((tmp_path / 'gen' / 'bad.gen.json').read_text())
    # the bad model says "no finding" everywhere: only r3's No Finding is a true positive
    assert bad_result['clinical_efficacy']['uncertain_as_positive']['5']['micro_f1']['value'] == 0
    md = (tmp_path / 'gen' / 'good.gen.md').read_text()
    assert "labelled by the project's findings reader" in md and 'uncertain counted both ways' in md
    assert '| Cardiomegaly |' in md
    capsys.readouterr()
    out = tmp_path / 'cmp.md'
    assert main(['compare', str(tmp_path / 'gen' / 'bad.gen.json'), str(tmp_path / 'gen' / 'good.gen.json'),
                 '--n-boot', '200', '--out', str(out)]) == 0
    comparison = json.loads((tmp_path / 'cmp.json').read_text())
    entry = comparison['uncertain_as_positive']['5']['micro_f1']
    assert (comparison['a'], comparison['b'], entry['a'], entry['b']) == ('bad', 'good', 0, 1)
    assert 'paired bootstrap' in out.read_text()


def test_compare_rejects_mixed_or_mismatched(tmp_path):
    dataset = _write(tmp_path / 'eval.jsonl', [{'id': i, 'images': ['x.jpg'], 'question': 'Findings?', 'reference': t}
                                               for i, t in REPORTS])
    answers = _write(tmp_path / 'a.jsonl', [{'id': i, 'answer': t} for i, t in REPORTS])
    assert main(['report-gen', '--answers', str(answers), '--dataset', str(dataset), '--out', str(tmp_path / 'g1'),
                 '--name', 'm', '--no-clinical', '--n-boot', '10']) == 0
    dataset2 = _write(tmp_path / 'eval2.jsonl', [{'id': i, 'images': ['x.jpg'], 'question': 'Findings?', 'reference': t}
                                                 for i, t in REPORTS[:3]])
    answers2 = _write(tmp_path / 'a2.jsonl', [{'id': i, 'answer': t} for i, t in REPORTS[:3]])
    assert main(['report-gen', '--answers', str(answers2), '--dataset', str(dataset2), '--out', str(tmp_path / 'g2'),
                 '--name', 'm', '--no-clinical', '--n-boot', '10']) == 0
    other = _write(tmp_path / 'other.json', [{'format': 'x'}])
    assert main(['compare', str(tmp_path / 'g1' / 'm.gen.json'), str(tmp_path / 'g2' / 'm.gen.json')]) != 0
    assert main(['compare', str(tmp_path / 'g1' / 'm.gen.json'), str(other)]) != 0


def test_mcnemar_against_binomial_formula():
    from evaluation.metrics import mcnemar_exact
    a = [1] * 9 + [0] * 2 + [1] * 5
    b = [0] * 9 + [1] * 2 + [1] * 5
    r = mcnemar_exact(a, b)
    n, k = 11, 2
    direct = 2 * sum(math.comb(n, i) * 0.5 ** n for i in range(k + 1))
    assert (r['a_only'], r['b_only']) == (9, 2) and r['p_value'] == pytest.approx(direct)


def test_result_files_of_the_wrong_kind_are_refused_naming_the_file(tmp_path):
    from datafiles import DataError
    from evaluation.compare import load_gen_result
    from evaluation.scoring import RESULT_FORMAT
    from evaluation.table import load_result
    classification = tmp_path / 'SFT.json'
    classification.write_text(json.dumps({'format': RESULT_FORMAT, 'items': []}))
    assert load_result(str(classification))['_path'] == str(classification)
    for loader, path, message in [
            (load_gen_result, classification, 'not a report-generation result (expected "format"'),
            (load_result, tmp_path / 'missing.json', 'missing.json: no such file'),
            (load_result, tmp_path / 'SFT.jsonl', 'not a JSON result file')]:
        if path.suffix == '.jsonl':
            path.write_text('{"id": 1}\n{"id": 2}\n')
        with pytest.raises(DataError, match=re.escape(f'{path}: ') + '.*' + re.escape(message.split(': ')[-1])):
            loader(str(path))


def test_agreement_against_hand_computation():
    from evaluation.clinical_efficacy import agreement
    # 4 reference reports; the reader vs the given labels on Cardiomegaly: read +,+,-,None / given +,-,-,+
    read = [_labels(Cardiomegaly='positive'), _labels(Cardiomegaly='positive'), _labels(Cardiomegaly='negative'),
            _labels()]
    given = [_labels(Cardiomegaly='positive'), _labels(Cardiomegaly='negative'), _labels(Cardiomegaly='negative'),
             _labels(Cardiomegaly='uncertain')]
    block = agreement(read, given)
    row = block['observations']['Cardiomegaly']
    # present-vs-not: (T,T) (T,F) (F,F) (F,T): observed 2/4; marginals 1/2 and 1/2, chance 1/2: kappa 0
    assert row['present_agreement'] == pytest.approx(0.5) and row['kappa'] == pytest.approx(0.0)
    assert row['four_class_agreement'] == pytest.approx(0.5) and row['given_present'] == 2
    # observations the labels never hold present are left out of the means: only Cardiomegaly counts
    assert block['macro'] == {'present_agreement': 0.5, 'kappa': 0.0, 'four_class_agreement': 0.5}
    assert block['observations']['Edema']['kappa'] is None     # nobody says edema: nothing to agree on
    assert 'four_class_agreement' not in agreement(read, given, binary_only=True)['observations']['Edema']


@pytest.mark.parametrize('kind', ['csv', 'jsonl'])
def test_report_gen_scores_against_given_reference_labels(tmp_path, capsys, kind):
    # data_prep's rows carry study_id; MIMIC's CSV keys by study_id with or without the "s"
    dataset = _write(tmp_path / 'eval.jsonl', [
        {'messages': [{'role': 'user', 'content': 'Findings?'}, {'role': 'assistant', 'content': t}],
         'study_id': f's5000000{n}', 'id': i} for n, (i, t) in enumerate(REPORTS)])
    answers = _write(tmp_path / 'a.jsonl', [{'id': i, 'answer': t} for i, t in REPORTS])
    # the hand labels say r2 has Cardiomegaly too (its report does not), and r4's atelectasis is uncertain
    given = {'r1': {'Cardiomegaly': 1, 'Pleural Effusion': 1}, 'r2': {'Edema': 1, 'Pneumothorax': 0, 'Cardiomegaly': 1},
             'r3': {'No Finding': 1}, 'r4': {'Atelectasis': -1}}
    if kind == 'csv':
        labels = tmp_path / 'mimic-cxr-2.0.0-chexpert.csv'
        labels.write_text('subject_id,study_id,' + ','.join(OBSERVATIONS) + '\n' + ''.join(
            f'10000032,5000000{n},' + ','.join(str(given[i].get(o, '')) for o in OBSERVATIONS) + '\n'
            for n, (i, _) in enumerate(REPORTS)))
    else:
        labels = _write(tmp_path / 'labels.jsonl', [{'id': i, 'labels': given[i]} for i, _ in REPORTS])
    assert main(['report-gen', '--answers', str(answers), '--dataset', str(dataset), '--out', str(tmp_path / 'gen'),
                 '--name', 'm', '--no-clinical', '--n-boot', '0', '--reference-labels', str(labels)]) == 0
    result = json.loads((tmp_path / 'gen' / 'm.gen.json').read_text())
    ce = result['clinical_efficacy']['uncertain_as_positive']
    # the generated reports are the references, read by the reader; against the given labels the only miss is r2's
    # Cardiomegaly (FN); r4's uncertain atelectasis counts as present both ways round (the reader: positive)
    assert ce['observations']['Cardiomegaly'] == {**ce['observations']['Cardiomegaly'], 'tp': 1, 'fn': 1, 'fp': 0}
    tp = sum(row['tp'] for row in ce['observations'].values())
    assert ce['14']['micro_recall']['value'] == pytest.approx(tp / (tp + 1))
    assert result['clinical_efficacy']['labeller'].endswith('references by the given labels')
    agreement = result['reference_agreement']['observations']['Cardiomegaly']
    assert agreement['present_agreement'] == pytest.approx(3 / 4)     # the reader misses r2's
    md = (tmp_path / 'gen' / 'm.gen.md').read_text()
    assert 'The reader against the given reference labels' in md and '| Cardiomegaly | 2 | 0.750 |' in md
    # a report without labels stops the run, naming the file and the report
    _write(tmp_path / 'few.jsonl', [{'id': 'r1', 'labels': given['r1']}])
    assert main(['report-gen', '--answers', str(answers), '--dataset', str(dataset), '--out', str(tmp_path / 'x'),
                 '--name', 'm', '--no-clinical', '--reference-labels', str(tmp_path / 'few.jsonl')]) == 2
    err = capsys.readouterr().err
    assert 'few.jsonl: no labels for 3 of 4 reports' in err and not (tmp_path / 'x' / 'm.gen.json').exists()


@pytest.mark.parametrize('content, message', [
    ('{"id": "r1", "labels": {"Edema": 2}}\n', "line 1: field 'labels.Edema': expected 1, 0, -1 or blank, found 2"),
    ('{"id": "r1", "labels": {"Edemma": 1}}\n', "line 1: field 'labels': ['Edemma'] are not CheXpert observations"),
    ('{"labels": {"Edema": 1}}\n', "line 1: field 'id': missing"),
    ('{"id": "r1"}\n{"id": "r1"}\n', "line 2: field 'id': r1 listed twice"),
])
def test_reference_labels_errors_name_file_line_field(tmp_path, content, message):
    from clinical_text.labels import load_reference_labels
    from datafiles import DataError
    path = tmp_path / 'labels.jsonl'
    path.write_text(content)
    with pytest.raises(DataError, match=re.escape(f'{path} {message}')):
        load_reference_labels(str(path))
