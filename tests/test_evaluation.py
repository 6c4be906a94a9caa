"""evaluation/: the answer parser, accuracy / intervals / paired tests on hand-computed cases, the Table 1
Markdown and PNG, report-generation metrics, input errors, and end to end on the tiny Qwen2.5-VL through the
real `swift infer` (CPU)."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from datafiles import DataError
from evaluation.cli import main
from evaluation.compare import compare
from evaluation.items import read_items
from evaluation.labels import MS_CXR_T, label_set_from_dict, load_label_set
from evaluation.metrics import (accuracy, bootstrap_ci, macro_accuracy, macro_bootstrap_ci, mcnemar_exact,
                                paired_bootstrap)
from evaluation.parser import parse_answer
from evaluation.report_gen import text_metrics, wordnet_problem
from evaluation.scoring import score
from evaluation.table import compare_markdown, markdown

SAMPLE_ITEMS = REPO / 'sample_data' / 'ms_cxr_t_sample.jsonl'
TEMPORAL = ('improving', 'stable', 'worsening')

# ---------------------------------------------------------------- parser

PARSER_CASES = [
    # plain label words, any case / markup
    ('Worsening.', 'Pleural effusion', 'worsening'),
    ('**Stable**', 'Edema', 'stable'),
    ('IMPROVING', 'Pneumonia', 'improving'),
    # synonyms
    ('The left pleural effusion has increased in size compared to the prior study.', 'Pleural effusion', 'worsening'),
    ('Interval resolution of the right lower lobe consolidation.', 'Consolidation', 'improving'),
    ('The pneumothorax is smaller than before.', 'Pneumothorax', 'improving'),
    ('Edema has progressed since the prior radiograph.', 'Edema', 'worsening'),
    ('Unchanged appearance of the consolidation.', 'Consolidation', 'stable'),
    ('No significant change in the left pleural effusion.', 'Pleural effusion', 'stable'),
    ('No interval change.', 'Edema', 'stable'),
    ('The right apical pneumothorax is no longer seen.', 'Pneumothorax', 'improving'),
    ('Decreased pulmonary vascular congestion.', 'Edema', 'improving'),
    # hedged
    ('Findings are likely slightly worse.', 'Edema', 'worsening'),
    ('It is hard to tell, but probably improving.', 'Pneumonia', 'improving'),
    ('Worsening of the consolidation cannot be excluded.', 'Consolidation', 'worsening'),
    ('Possibly a small increase in the effusion.', 'Pleural effusion', 'worsening'),
    # negated
    ('There is no new or worsening consolidation.', 'Consolidation', None),
    ('The edema is unchanged, not worse.', 'Edema', 'stable'),
    ('Worsening is not seen; the effusion is similar to before.', 'Pleural effusion', 'stable'),
    ('It is improving rather than worsening.', 'Pneumonia', 'improving'),
    ('The opacity has not improved and is now larger.', 'Consolidation', 'worsening'),
    ('The effusion has not changed.', 'Pleural effusion', 'stable'),
    ('No pleural effusion.', 'Pleural effusion', None),     # says nothing about progression
    # answer marker, several observations
    ('The image shows bibasilar opacities. Final answer: worsening', 'Consolidation', 'worsening'),
    ('Some parts look better, others worse. Answer: stable', 'Edema', 'stable'),
    ('The effusion is stable. The consolidation has worsened.', 'Pleural effusion', 'stable'),
    ('The effusion is stable. The consolidation has worsened.', 'Consolidation', 'worsening'),
    # unparseable: listed, never guessed
    ('I cannot determine whether the edema is improving or worsening.', 'Edema', None),
    ('Both improving and worsening features.', 'Pneumonia', None),
    ('hjdfsk qwe zzq', 'Pneumonia', None),
    ('', 'Pneumonia', None),
    ('   ', 'Pneumonia', None),
]


@pytest.mark.parametrize('answer, observation, expected', PARSER_CASES)
def test_parser_on_real_looking_answers(answer, observation, expected):
    parsed = parse_answer(answer, TEMPORAL, observation, MS_CXR_T)
    assert parsed.label == expected, parsed
    assert parsed.rule


def test_parser_says_why_not():
    assert parse_answer('', TEMPORAL, 'Edema').rule == 'empty answer'
    assert parse_answer('Cannot determine from a single image.', TEMPORAL, 'Edema').rule == 'indeterminate'
    assert parse_answer('Both improving and worsening.', TEMPORAL, 'Edema').rule == 'ambiguous: improving, worsening'
    assert parse_answer('Final answer: worsening', TEMPORAL, 'Edema').rule == 'answer marker'


def test_presence_label_set_reads_negated_observation():
    labels = label_set_from_dict({'name': 'presence', 'observations': ['Pleural effusion', 'Edema'],
                                  'classes': ['present', 'absent'],
                                  'observation_synonyms': {'Pleural effusion': ['effusion']},
                                  'negated_observation': 'absent', 'affirmed_observation': 'present'}, 'x.yaml')
    cases = [('No pleural effusion.', 'absent'), ('There is no evidence of an effusion.', 'absent'),
             ('Small left pleural effusion.', 'present'), ('A pleural effusion cannot be excluded.', 'present'),
             ('Pleural effusion is absent.', 'absent'), ('The heart is normal.', None)]
    for answer, expected in cases:
        assert parse_answer(answer, ('present', 'absent'), 'Pleural effusion', labels).label == expected, answer


def test_label_set_file(tmp_path):
    path = tmp_path / 'labels.yaml'
    path.write_text('name: two\nobservations:\n  Edema: [better, worse]\n  Effusion: [better, worse]\n')
    labels = load_label_set(str(path))
    assert labels.observations == {'Edema': ('better', 'worse'), 'Effusion': ('better', 'worse')}
    assert load_label_set(None) is MS_CXR_T and load_label_set('MS-CXR-T') is MS_CXR_T
    path.write_text('observations:\n  Edema: [better]\n')
    with pytest.raises(DataError, match=r"labels.yaml: field 'observations.Edema'"):
        load_label_set(str(path))


# ---------------------------------------------------------------- metrics

def test_accuracy_and_bootstrap_interval():
    assert accuracy([1, 0, 1, 1]) == 0.75
    assert bootstrap_ci([1] * 20) == (1.0, 1.0) and bootstrap_ci([0] * 7) == (0.0, 0.0)
    rng = np.random.default_rng(1)
    small, large = rng.random(40) < 0.7, rng.random(4000) < 0.7
    low, high = bootstrap_ci(small, seed=3)
    assert low <= accuracy(small) <= high
    assert bootstrap_ci(small, seed=3) == (low, high)                       # deterministic with the seed
    assert bootstrap_ci(small, seed=4) != (low, high)
    big_low, big_high = bootstrap_ci(large, seed=3)
    assert big_high - big_low < (high - low) / 5                            # narrows like 1/sqrt(n)
    p, n = accuracy(large), len(large)                                      # independent: the normal interval
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert big_low == pytest.approx(p - half, abs=0.006) and big_high == pytest.approx(p + half, abs=0.006)


def test_macro_accuracy_and_interval():
    groups = {'A': [1, 1, 1, 1], 'B': [1, 0, 0, 0]}                         # 1.0 and 0.25 -> 0.625 (micro 5/8)
    assert macro_accuracy(groups) == pytest.approx(0.625)
    low, high = macro_bootstrap_ci(groups, seed=0)
    # A never varies, so Avg = 1/2 + B/2 with B = k/4, k ~ Binomial(4, 1/4): P(k = 0) = 0.32 and
    # P(k >= 3) = 0.051 > 2.5% > P(k = 4) = 0.004, so the 2.5% and 97.5% quantiles are k = 0 and k = 3
    assert (low, high) == (0.5, 0.875)
    assert macro_bootstrap_ci({'A': [1, 1], 'B': [1]}) == (1.0, 1.0)


def test_mcnemar_exact_hand_computed():
    a = [1, 0, 0, 0, 0, 0, 1, 1]        # only A right: 0; only B right: 5 (items 1-5); both right: 2; neither: 0
    b = [1, 1, 1, 1, 1, 1, 1, 1]
    result = mcnemar_exact(a, b)
    assert (result['a_only'], result['b_only']) == (0, 5)
    assert result['p_value'] == pytest.approx(2 / 32)                        # 2 * (1/2)^5
    result = mcnemar_exact([1, 0, 0, 0, 0], [0, 1, 1, 1, 1])                 # 1 vs 4: 2 * (1 + 5) / 32
    assert result['p_value'] == pytest.approx(12 / 32)
    assert mcnemar_exact([1, 0, 1, 0], [0, 1, 0, 1])['p_value'] == 1.0       # 2 vs 2
    assert mcnemar_exact([1, 1], [1, 1]) == {'a_only': 0, 'b_only': 0, 'discordant': 0, 'p_value': 1.0}
    stats = pytest.importorskip('scipy.stats')                               # independent implementation
    for a_only, b_only in [(3, 11), (7, 9), (0, 1), (12, 30)]:
        a = [1] * a_only + [0] * b_only
        b = [0] * a_only + [1] * b_only
        expected = stats.binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue
        assert mcnemar_exact(a, b)['p_value'] == pytest.approx(expected, rel=1e-12)


def test_paired_bootstrap_hand_computed():
    same = {'A': [1, 0, 1], 'B': [0, 1]}
    result = paired_bootstrap(same, same)
    assert result['difference'] == 0 and (result['ci_low'], result['ci_high']) == (0, 0) and result['p_value'] == 1
    result = paired_bootstrap({'A': [0, 0, 0], 'B': [0, 0]}, {'A': [1, 1, 1], 'B': [1, 1]})
    assert result['difference'] == 1 and (result['ci_low'], result['ci_high']) == (1, 1) and result['p_value'] == 0
    a = {'A': [1, 0, 0, 1], 'B': [0, 0]}                                     # macro 0.25
    b = {'A': [1, 1, 0, 1], 'B': [1, 0]}                                     # macro 0.625
    result = paired_bootstrap(a, b, seed=5)
    assert result['difference'] == pytest.approx(0.375)
    assert result['ci_low'] <= 0.375 <= result['ci_high'] and result['ci_low'] >= 0   # B never worse on an item
    assert paired_bootstrap(a, b, seed=5) == result


# ---------------------------------------------------------------- scoring, tables, compare

def _result(name, answers, path=SAMPLE_ITEMS):
    items = read_items(str(path), MS_CXR_T)
    return score(items, answers, MS_CXR_T, name, n_boot=500, seed=0)


def test_score_counts_unparsed_as_wrong_and_lists_them():
    items = read_items(str(SAMPLE_ITEMS), MS_CXR_T)
    answers = {item.id: item.label.capitalize() + '.' for item in items}
    answers[items[0].id] = 'I am not sure.'
    answers[items[1].id] = None                                              # no answer at all
    result = score(items, answers, MS_CXR_T, 'm', n_boot=200)
    assert result['average']['correct'] == len(items) - 2 and result['average']['unparsed'] == 2
    assert [u['id'] for u in result['unparsed']] == [items[0].id, items[1].id]
    assert {u['rule'] for u in result['unparsed']} == {'indeterminate', 'no answer'}     # 'I am not sure.'
    first = result['observations'][items[0].observation]
    assert (first['n'], first['correct'], first['accuracy']) == (2, 0, 0.0)
    assert list(result['observations']) == list(MS_CXR_T.observations)
    assert result['average']['accuracy'] == pytest.approx(np.mean([c['accuracy'] for c in
                                                                   result['observations'].values()]))


def test_table_markdown_and_png(tmp_path):
    items = read_items(str(SAMPLE_ITEMS), MS_CXR_T)
    good = _result('APO', {item.id: item.label for item in items})
    bad = _result('SFT', {item.id: 'stable' for item in items})
    for result in (good, bad):
        (tmp_path / f'{result["model"]}.json').write_text(json.dumps(result))
    out = tmp_path / 'table' / 'table1.md'
    assert main(['table', str(tmp_path / 'APO.json'), '--baseline', str(tmp_path / 'SFT.json'), '--published',
                 '--out', str(out)]) == 0
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.startswith('|')]
    assert lines[0] == ('| model | Consolidation | Pleural effusion | Pneumonia | Pneumothorax | Edema | Avg | '
                        'Δ Avg vs baseline |')
    assert lines[2].startswith('| SFT (baseline) |') and lines[3].startswith('| APO | 1.00 [1.00, 1.00] (2/2) |')
    stable_share = sum(item.label == 'stable' for item in items) / len(items)
    assert lines[3].endswith(f'| {1 - bad["average"]["accuracy"]:+.2f} |') and stable_share > 0
    published = [line for line in lines if '(published)' in line]
    assert len(published) == 8
    assert published[-1] == '| APO student (7B) (published) | 0.84 | 0.67 | 0.78 | 0.96 | 0.65 | 0.78 | – |'
    assert 'arXiv 2510.04142' in text and 'not computed here' in text
    png = out.with_suffix('.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000
    assert not [p for p in out.parent.iterdir() if p.name.startswith('.')]    # no temporary files left


def test_table_shows_generative_and_likelihood_side_by_side():
    items = read_items(str(SAMPLE_ITEMS), MS_CXR_T)
    # likelihood: 'stable' most likely everywhere (ties go to the first class listed, here never needed)
    class_scores = {item.id: {c: {'text': c, 'sum_logp': -1.0 if c == 'stable' else -2.0 - i, 'mean_logp': -1.0,
                                  'n_tokens': 1} for i, c in enumerate(item.classes)} for item in items}
    loglik = score(items, {}, MS_CXR_T, 'SFT', n_boot=100, class_scores=class_scores)
    assert loglik['scoring'] == 'loglik' and loglik['average']['unparsed'] == 0
    assert [r['predicted'] for r in loglik['items']] == ['stable'] * len(items)
    assert loglik['items'][0]['scores'] == class_scores[items[0].id]
    stable = sum(item.label == 'stable' for item in items)
    assert loglik['average']['correct'] == stable
    sft, apo = _result('SFT', {item.id: item.label for item in items}), _result('APO', {})
    rows = [line for line in markdown([loglik, apo, sft], baseline=1).splitlines() if line.startswith('| ')][1:]
    assert [row.split(' | ')[0] for row in rows] == ['| APO', '| SFT (generative)', '| SFT (likelihood) (baseline)']
    assert rows[1].endswith(f'| {1 - loglik["average"]["accuracy"]:+.2f} |') and rows[2].endswith('| – |')
    assert '- SFT (likelihood): 10 items, likelihood scoring' in markdown([loglik])
    assert markdown([loglik]).splitlines()[2].startswith('| SFT (likelihood) |')
    text = compare_markdown(sft, loglik, compare(sft, loglik, n_boot=100))  # one model, its two scorings
    assert text.startswith('# SFT (likelihood) vs SFT (generative) (paired, 10 items)')
    assert text.rstrip().endswith('A = SFT (generative), B = SFT (likelihood).')
    assert compare_markdown(sft, apo, compare(sft, apo, n_boot=100)).startswith('# APO vs SFT (paired')


def test_table_without_published_rows_for_other_label_sets():
    result = _result('m', {})
    result['observations'] = {'Atelectasis': result['observations']['Edema']}
    text = markdown([result], published=True)
    assert '(published)' not in text and 'Published rows left out' in text


def test_compare_two_models_on_the_same_items(tmp_path):
    items = read_items(str(SAMPLE_ITEMS), MS_CXR_T)
    a = _result('SFT', {item.id: 'stable' for item in items})
    b = _result('APO', {item.id: item.label for item in items})
    comparison = compare(a, b, n_boot=1000)
    stable = sum(item.label == 'stable' for item in items)
    assert comparison['pooled']['mcnemar'] == {'a_only': 0, 'b_only': len(items) - stable,
                                               'discordant': len(items) - stable,
                                               'p_value': pytest.approx(min(1, 2 / 2 ** (len(items) - stable)))}
    assert comparison['paired_bootstrap']['difference'] == pytest.approx(b['average']['accuracy'] -
                                                                         a['average']['accuracy'])
    paths = [tmp_path / 'a.json', tmp_path / 'b.json']
    for path, result in zip(paths, (a, b)):
        path.write_text(json.dumps(result))
    assert main(['compare', *map(str, paths), '--out', str(tmp_path / 'cmp.md')]) == 0
    assert '| all items | 10 |' in (tmp_path / 'cmp.md').read_text()
    assert json.loads((tmp_path / 'cmp.json').read_text())['n_items'] == 10
    other = dict(a, items=a['items'][1:])
    with pytest.raises(DataError, match='not scored on the same items'):
        compare(other, b)


# ---------------------------------------------------------------- inputs and the CLI without a model

def _write(path: Path, rows):
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path


def test_bad_items_name_file_line_and_field(tmp_path):
    good = json.loads(SAMPLE_ITEMS.read_text().splitlines()[0])
    cases = [({k: v for k, v in good.items() if k != 'question'}, r"line 2: field 'question': missing"),
             (dict(good, label='better'), r"line 2: field 'label': 'better' is not a class of 'Consolidation'"),
             (dict(good, observation='Cardiomegaly'), r"line 2: field 'observation': 'Cardiomegaly' is not an "),
             (dict(good, images=[]), r"line 2: field 'images': expected a path"),
             (dict(good), r"line 2: field 'id': 'sample-01' already used at .* line 1")]
    for i, (row, message) in enumerate(cases):
        row = dict(row, id=row['id'] if i == len(cases) - 1 else 'other')
        path = _write(tmp_path / 'items.jsonl', [good, row])
        with pytest.raises(DataError, match=message):
            read_items(str(path), MS_CXR_T)
    (tmp_path / 'broken.jsonl').write_text(json.dumps(good) + '\n{"id": \n')
    with pytest.raises(DataError, match=r'broken.jsonl line 2: not valid JSON'):
        read_items(str(tmp_path / 'broken.jsonl'), MS_CXR_T)
    own = dict(good, id='x', observation='Cardiomegaly', choices=['better', 'worse'], label='Worse')
    item = read_items(str(_write(tmp_path / 'own.jsonl', [own])), MS_CXR_T, image_root=str(REPO / 'sample_data'))[0]
    assert (item.classes, item.label) == (('better', 'worse'), 'worse')
    assert item.images[0] == str(REPO / 'sample_data' / good['images'][0])


def test_item_images_stay_under_the_image_root(tmp_path, capsys):
    """data_prep's rule and message: `..`, absolute paths and symbolic links out of the root need the flag."""
    good = json.loads(SAMPLE_ITEMS.read_text().splitlines()[0])
    outside = tmp_path / 'outside.png'
    outside.write_bytes(b'')
    (tmp_path / 'items').mkdir()
    (tmp_path / 'items' / 'link.png').symlink_to(outside)
    (tmp_path / 'items' / 'ok.png').symlink_to(tmp_path / 'items' / 'link.png')  # a link to a link: still out
    cases = {'../../../etc/passwd': 'leaves the image root', str(outside): 'is absolute',
             'link.png': f'leads out of the image root through a symbolic link (to {outside})',
             'ok.png': f'leads out of the image root through a symbolic link (to {outside})'}
    answers = _write(tmp_path / 'answers.jsonl', [{'id': good['id'], 'answer': 'stable'}])
    for path, how in cases.items():
        items = _write(tmp_path / 'items' / 'items.jsonl', [dict(good, images=['inside.png', path])])
        message = (f"{items} line 1: field 'images': image path {path!r} {how} ({tmp_path / 'items'}); "
                   f"pass --allow-outside-image-root if that is intended")
        with pytest.raises(DataError) as error:
            read_items(str(items), MS_CXR_T)
        assert str(error.value) == message
        argv = ['classify', '--answers', str(answers), '--dataset', str(items), '--out', str(tmp_path / 'out'),
                '--n-boot', '10']
        assert main(argv) == 2 and message in capsys.readouterr().err
        assert main(argv + ['--allow-outside-image-root']) == 0
        assert read_items(str(items), MS_CXR_T, allow_outside_root=True)[0].images[1] == \
            os.path.normpath(os.path.join(tmp_path / 'items', path))
    (tmp_path / 'root').mkdir()
    (tmp_path / 'root' / 'real.png').write_bytes(b'')
    (tmp_path / 'items' / 'root-link').symlink_to(tmp_path / 'root')   # the root itself through a link: fine
    items = _write(tmp_path / 'items' / 'items.jsonl', [dict(good, images=['real.png'])])
    assert read_items(str(items), MS_CXR_T, image_root=str(tmp_path / 'items' / 'root-link'))[0].images == \
        (str(tmp_path / 'items' / 'root-link' / 'real.png'),)


def test_classify_answers_file_and_failures_leave_nothing(tmp_path, capsys):
    out = tmp_path / 'eval'
    answers = _write(tmp_path / 'gpt5.jsonl', [{'id': 'sample-01', 'answer': 'The consolidation has progressed.'},
                                                {'id': 'sample-02', 'answer': 'Unchanged.'},
                                                {'id': 'sample-03', 'answer': 'gibberish'}])
    assert main(['classify', '--answers', str(answers), '--dataset', str(SAMPLE_ITEMS), '--out', str(out),
                 '--n-boot', '200']) == 0
    result = json.loads((out / 'gpt5.json').read_text())
    assert result['model'] == 'gpt5' and result['average']['correct'] == 2
    assert result['observations']['Consolidation']['accuracy'] == 1.0
    assert [u['id'] for u in result['unparsed']][:2] == ['sample-03', 'sample-04']  # unparsed, then unanswered
    assert len(result['unparsed']) == 8
    assert (out / 'gpt5.md').read_text().startswith('| model | Consolidation |')

    bad = _write(tmp_path / 'bad.jsonl', [{'id': 'sample-01', 'answer': 'stable'}, {'id': 'nope', 'answer': 'x'}])
    assert main(['classify', '--answers', str(bad), '--dataset', str(SAMPLE_ITEMS), '--out',
                 str(tmp_path / 'bad-out')]) == 2
    assert "bad.jsonl line 2: field 'id': 'nope' is not an item" in capsys.readouterr().err
    assert not (tmp_path / 'bad-out').exists() or not list((tmp_path / 'bad-out').iterdir())


# ---------------------------------------------------------------- report generation

def test_report_metrics_hand_checkable():
    same = text_metrics(['No pleural effusion. Heart size is normal.'] * 2,
                        ['No pleural effusion. Heart size is normal.'] * 2, clinical=False)['metrics']
    assert all(same[f'bleu_{n}'] == pytest.approx(1.0) for n in range(1, 5)) and same['rouge_l'] == pytest.approx(1)
    disjoint = text_metrics(['aaa bbb ccc ddd'], ['xxx yyy zzz www'], clinical=False)['metrics']
    assert all(disjoint[f'bleu_{n}'] == 0 for n in range(1, 5)) and disjoint['rouge_l'] == 0
    # 5/6 unigrams, 3/5 bigrams, 1/4 trigrams match; LCS "the cat on the mat" = 5 of 6 words
    cat = text_metrics(['the cat sat on the mat'], ['the cat is on the mat'], clinical=False)['metrics']
    assert cat['bleu_1'] == pytest.approx(5 / 6) and cat['bleu_2'] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert cat['bleu_3'] == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3)) and cat['bleu_4'] < 1e-10
    assert cat['rouge_l'] == pytest.approx(5 / 6)


def test_unavailable_metrics_are_reported_not_fatal():
    result = text_metrics(['small left effusion'], ['small left pleural effusion'])
    problem = wordnet_problem()
    if problem:
        assert result['unavailable']['meteor'] == problem and 'meteor' not in result['metrics']
    else:
        assert 0 < result['metrics']['meteor'] <= 1
    assert 'chexbert_f1' in result['unavailable'] or 'chexbert_f1_micro_5' in result['metrics']
    assert 'radgraph_f1' in result['unavailable'] or 'radgraph_f1_partial' in result['metrics']
    assert all(isinstance(reason, str) and reason for reason in result['unavailable'].values())


def test_report_gen_cli_with_answers(tmp_path):
    dataset = _write(tmp_path / 'eval.jsonl', [
        {'messages': [{'role': 'user', 'content': '<image>Describe the findings.'},
                      {'role': 'assistant', 'content': 'Small left pleural effusion.'}],
         'images': [str(REPO / 'sample_data/files/p10/p10000032/s50414267/view1_frontal.jpg')]},
        {'id': 'r2', 'images': ['x.jpg'], 'question': 'Findings?', 'reference': 'There is no pneumothorax.'}])
    answers = _write(tmp_path / 'answers.jsonl', [{'id': '1', 'answer': 'Small left pleural effusion.'},
                                                   {'id': 'r2', 'answer': 'There is no pneumothorax.'}])
    assert main(['report-gen', '--answers', str(answers), '--dataset', str(dataset), '--out', str(tmp_path / 'gen'),
                 '--name', 'teacher']) == 0
    result = json.loads((tmp_path / 'gen' / 'teacher.gen.json').read_text())
    assert result['metrics']['bleu_4'] == pytest.approx(1) and result['missing_answers'] == []
    assert 'unavailable' in (tmp_path / 'gen' / 'teacher.gen.md').read_text() or not result['unavailable']


# ---------------------------------------------------------------- end to end: swift infer on the tiny model

def test_classify_tiny_model_end_to_end(tiny_vl_model, tmp_path):
    out = tmp_path / 'reports'
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'MAX_PIXELS': '3136', 'OMP_NUM_THREADS': '2',
           'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')])}
    proc = subprocess.run([sys.executable, '-m', 'evaluation', 'classify', '--model', tiny_vl_model, '--name', 'tiny',
                           '--dataset', str(SAMPLE_ITEMS), '--out', str(out), '--infer-backend', 'transformers',
                           '--max-new-tokens', '12', '--n-boot', '200', '--swift-args',
                           '--model_type qwen2_5_vl --template qwen2_5_vl --torch_dtype float32 --max_batch_size 10 '
                           '--temperature 1 --top_k 50 --seed 0'],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    answers = [json.loads(line) for line in (out / 'tiny.answers.jsonl').read_text().splitlines()]
    assert len(answers) == 10 and all(isinstance(a['response'], str) for a in answers)
    result = json.loads((out / 'tiny.json').read_text())
    rows = result['items']
    assert [r['id'] for r in rows] == [f'sample-{i:02d}' for i in range(1, 11)]
    assert [r['answer'] for r in rows] == [a['response'] for a in answers]     # joined back, in order
    assert all(r['rule'] != 'no answer' for r in rows)
    assert result['average']['n'] == 10 and sum(c['n'] for c in result['observations'].values()) == 10
    unparsed = [r['id'] for r in rows if r['predicted'] is None]
    assert [u['id'] for u in result['unparsed']] == unparsed
    assert all(not r['correct'] for r in rows if r['predicted'] is None)
    assert result['average']['correct'] == sum(r['correct'] for r in rows)
    assert not [p for p in out.iterdir() if p.name.startswith('.')]          # scratch and temporary files gone

    assert main(['table', str(out / 'tiny.json'), '--published', '--out', str(out / 'table1.md')]) == 0
    table = (out / 'table1.md').read_text()
    assert table.splitlines()[2].startswith('| tiny | ') and (out / 'table1.png').stat().st_size > 5000


def test_report_gen_tiny_model_end_to_end(tiny_vl_model, tmp_path, monkeypatch, capsys):
    rows = [json.loads(line) for line in (REPO / 'sample_data' / 'cxr_max_sample.jsonl').read_text().splitlines()[:2]]
    dataset = _write(tmp_path / 'eval.jsonl', [
        {'messages': [{'role': 'user', 'content': '<image>' + r['question']},
                      {'role': 'assistant', 'content': r['response']}],
         'images': [str(REPO / 'sample_data' / r['image_path'])]} for r in rows])
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('MAX_PIXELS', '3136')
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
    assert main(['report-gen', '--model', tiny_vl_model, '--name', 'tiny', '--dataset', str(dataset), '--out',
                 str(tmp_path / 'gen'), '--infer-backend', 'transformers', '--max-new-tokens', '8', '--swift-args',
                 '--model_type qwen2_5_vl --template qwen2_5_vl --torch_dtype float32 --temperature 1 --top_k 50 '
                 '--seed 0']) == 0
    answers = [json.loads(line) for line in (tmp_path / 'gen' / 'tiny.answers.jsonl').read_text().splitlines()]
    result = json.loads((tmp_path / 'gen' / 'tiny.gen.json').read_text())
    assert len(answers) == 2 and result['n'] == 2 and result['missing_answers'] == []
    assert set(result['metrics']) >= {'bleu_1', 'bleu_2', 'bleu_3', 'bleu_4', 'rouge_l'}
    assert all(0 <= v <= 1 for v in result['metrics'].values())
    assert ('meteor' in result['metrics']) != ('meteor' in result['unavailable'])
    assert 'chexbert_f1' in result['unavailable'] or 'chexbert_f1_micro_5' in result['metrics']


# ---------------------------------------------------------------- likelihood scoring on the tiny model

def _loglik_items(tmp_path):
    """Three items on 56x56 PNGs (no resizing on either side), one and two images, one with its own choices."""
    from PIL import Image
    for i in range(3):
        Image.new('RGB', (56, 56), (60 * i, 120, 200 - 50 * i)).save(tmp_path / f'img{i}.png')
    return _write(tmp_path / 'items.jsonl', [
        {'id': 'a', 'images': ['img0.png', 'img1.png'], 'observation': 'Edema',
         'question': 'Compared with the prior, how has the edema changed?', 'label': 'stable'},
        {'id': 'b', 'images': 'img2.png', 'observation': 'Pneumothorax', 'question': 'Pneumothorax?',
         'label': 'worsening'},
        {'id': 'c', 'images': ['img1.png'], 'observation': 'Cardiomegaly', 'choices': ['smaller', 'larger'],
         'question': 'How has the heart size changed?', 'label': 'larger'}])


def _reference_logps(model_dir, adapter, items_path, answer_template):
    """Independent: transformers' model and processor, the processor's chat template, log-softmax by hand."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration
    from evaluation.items import request_row
    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter).eval()
    expected = {}
    for item in read_items(str(items_path), MS_CXR_T):
        prompt = request_row(item)['messages'][0]['content'].replace('<image>', '')
        messages = [{'role': 'user', 'content': [{'type': 'image'}] * len(item.images) +
                     [{'type': 'text', 'text': prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=[Image.open(p).convert('RGB') for p in item.images], return_tensors='pt')
        expected[item.id] = {}
        for choice in item.classes:
            answer = processor.tokenizer(answer_template.format(choice=choice, observation=item.observation),
                                         add_special_tokens=False)['input_ids']
            ids = torch.cat([inputs['input_ids'][0], torch.tensor(answer)])[None]
            # the answer tokens are text: mm_token_type_ids 0 (the model places image tokens' 3D positions by it)
            mm_types = torch.cat([inputs['mm_token_type_ids'][0], torch.zeros(len(answer), dtype=torch.long)])[None]
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm_types,
                               pixel_values=inputs['pixel_values'], image_grid_thw=inputs['image_grid_thw']
                               ).logits[0].double()
            n, total = len(answer), ids.shape[1]
            logps = torch.log_softmax(logits[total - n - 1:total - 1], dim=-1)
            token_logps = logps[torch.arange(n), torch.tensor(answer)]
            expected[item.id][choice] = (token_logps.sum().item(), token_logps.mean().item(), n)
    return expected


@pytest.mark.parametrize('answer_template, adapter', [('{choice}', False), ('The {observation} is {choice}.', True)])
def test_loglik_equals_transformers(tiny_vl_model, tmp_path, monkeypatch, capsys, answer_template, adapter):
    items_path = _loglik_items(tmp_path)
    adapter_dir = None
    if adapter:   # a LoRA with non-zero B, so that it changes the scores
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import Qwen2_5_VLForConditionalGeneration
        torch.manual_seed(0)
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_vl_model, dtype=torch.float32)
        lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj'],
                                               init_lora_weights=False))
        adapter_dir = tmp_path / 'adapter'
        lora.save_pretrained(adapter_dir)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    out = tmp_path / 'eval'
    argv = ['classify', '--model', tiny_vl_model, '--scoring', 'loglik', '--name', 'tiny', '--dataset',
            str(items_path), '--out', str(out), '--batch-size', '2', '--answer-template', answer_template,
            '--n-boot', '50', '--swift-args', '--model_type qwen2_5_vl --template qwen2_5_vl --torch_dtype float32']
    if adapter_dir:
        argv[3:3] = ['--adapters', str(adapter_dir)]
    assert main(argv) == 0
    assert 'loglik: 100%' in capsys.readouterr().err          # the progress bar
    result = json.loads((out / 'tiny.loglik.json').read_text())
    expected = _reference_logps(tiny_vl_model, adapter_dir, items_path, answer_template)
    assert result['scoring'] == 'loglik' and result['source']['answer_template'] == answer_template
    for row in result['items']:
        want = expected[row['id']]
        assert set(row['scores']) == set(want)
        for choice, (total, mean, n) in want.items():
            got = row['scores'][choice]
            assert got['n_tokens'] == n
            assert got['sum_logp'] == pytest.approx(total, abs=1e-5)
            assert got['mean_logp'] == pytest.approx(mean, abs=1e-5)
        best = max(want, key=lambda c: want[c][0])
        assert row['predicted'] == best and row['correct'] == (best == row['gold']) and row['answer'] is None
    assert result['average']['unparsed'] == 0 and (out / 'tiny.requests.jsonl').exists()
    if adapter_dir:   # the adapter was applied: without it the scores differ
        plain = _reference_logps(tiny_vl_model, None, items_path, answer_template)
        assert max(abs(plain['a'][c][0] - expected['a'][c][0]) for c in plain['a']) > 1e-2


def test_swift_infer_runs_in_the_inference_environment(monkeypatch, tmp_path):
    from evaluation import swift_infer as cli
    monkeypatch.delenv('INFER_PYTHON', raising=False)
    monkeypatch.setattr(cli, 'INFER_VENV', tmp_path / '.venv-infer')
    assert cli.infer_python() == sys.executable  # not built: this environment
    bin_dir = tmp_path / '.venv-infer' / 'bin'
    bin_dir.mkdir(parents=True)
    for name, target in [('python', sys.executable), ('swift', str(Path(sys.executable).with_name('swift')))]:
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {target} "$@"\n')
        (bin_dir / name).chmod(0o755)
    python = str(bin_dir / 'python')
    assert cli.infer_python() == python and cli.swift_executable(python) == str(bin_dir / 'swift')
    assert cli.infer_backend('auto', python) == 'transformers'  # asked of that interpreter: no vLLM, no GPU here
    assert cli.infer_backend('vllm', python) == 'vllm'
    monkeypatch.setenv('INFER_PYTHON', 'python3')
    assert cli.infer_python() == 'python3' and cli.swift_executable('python3') == (shutil.which('swift') or 'swift')
