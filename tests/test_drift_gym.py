"""The drift gym (benchmarks/drift_gym): the truth it draws, the teachers' drift, the statistics of its page, and
one end-to-end run of every stage and arm through the real CLIs on the ``ci`` configuration."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.drift_gym import config as gym_config
from benchmarks.drift_gym.answers import read_jsonl, study_answers
from benchmarks.drift_gym.films import Finding, draw_film
from benchmarks.drift_gym.make import make, truth_row
from benchmarks.drift_gym.stats import outcome_array, paired_difference, study_resamples, summarise
from benchmarks.drift_gym.steps import Runner, Step, StepFailed, code_digest
from benchmarks.drift_gym.teachers import TEACHERS, Call, Trace, draw_calls, majority_calls

REPO = Path(__file__).resolve().parents[1]
TINY = gym_config.CI.with_changes(train_studies=12, val_studies=2, test_studies=4)


@pytest.fixture(scope='module')
def gym_data(tmp_path_factory):
    return make(TINY, str(tmp_path_factory.mktemp('gym') / 'data'))


# -- the films ----------------------------------------------------------------------------------------------------
def _pair(finding: str, details: Finding, size: int = 84):
    """The same film (same jitter and noise) without and with one finding."""
    without = draw_film(size, {}, np.random.default_rng(7)).astype(float)
    with_it = draw_film(size, {finding: details}, np.random.default_rng(7)).astype(float)
    return without, with_it


def test_consolidation_brightens_its_zone_only():
    without, with_it = _pair('Consolidation', Finding(side='right', zone='lower'))
    diff = with_it - without
    h, w = diff.shape
    right_lung_lower = diff[int(0.55 * h):int(0.75 * h), :w // 2]   # the patient's right is the image's left
    left_lung_upper = diff[int(0.2 * h):int(0.4 * h), w // 2:]
    assert right_lung_lower.mean() > 20
    assert np.abs(left_lung_upper).max() == 0


def test_effusion_fills_the_base_of_its_side():
    without, with_it = _pair('Pleural Effusion', Finding(side='left', size='large'))
    diff = with_it - without
    h, w = diff.shape
    assert diff[int(0.6 * h):int(0.8 * h), w // 2:].mean() > 15          # the patient's left base
    assert np.abs(diff[:, :w // 2]).max() == 0                          # nothing on the right


def test_pneumothorax_blacks_out_an_apex_and_draws_a_line():
    without, with_it = _pair('Pneumothorax', Finding(side='right', size='moderate'))
    diff = with_it - without
    h, w = diff.shape
    apex = diff[int(0.15 * h):int(0.45 * h), :w // 2]
    assert (apex < -20).sum() > 20 and apex.max() > 100                 # black field beyond a bright pleural line


def test_device_is_the_brightest_thing_and_cardiomegaly_widens_the_heart():
    without, with_it = _pair('Support Devices', Finding(device='endotracheal tube'))
    assert with_it.max() >= 240 and (with_it >= 240).sum() > (without >= 240).sum() + 20
    rows = slice(int(0.62 * 84), int(0.72 * 84))

    def heart_width(img):
        return int((img[rows] > 0.55 * 255 * 0.95).sum(axis=1).max())

    normal = draw_film(84, {}, np.random.default_rng(3)).astype(float)
    wide = draw_film(84, {'Cardiomegaly': Finding(size='large')}, np.random.default_rng(3)).astype(float)
    assert heart_width(wide) > heart_width(normal) + 8


# -- the truth and the teachers -------------------------------------------------------------------------------------
def test_truth_file_matches_the_drawn_findings(gym_data):
    studies = json.load(open(os.path.join(gym_data, 'studies.json')))
    with open(os.path.join(gym_data, 'truth.csv'), newline='') as f:
        truth = {row['study_id']: row for row in csv.DictReader(f)}
    assert len(truth) == len(studies) == 18
    for study in studies:
        row = truth[str(study['study_id'])]
        for finding in TINY.observations:
            assert row[finding] == ('1.0' if study['truth'][finding] else '0.0')
        others = [f for f in TINY.observations if f != 'Support Devices' and study['truth'][f]]
        assert row['No Finding'] == ('' if others else '1.0')
        assert row['Edema'] == row['Atelectasis'] == ''
    items = read_jsonl(os.path.join(gym_data, 'test.items.jsonl'))
    assert len(items) == 4 * len(TINY.observations)
    for item in items:
        study, finding = item['id'].split(':')
        assert item['label'] == ('present' if truth[study][finding] == '1.0' else 'absent')


def test_truth_row_by_hand():
    study = {'subject_id': 1, 'study_id': 2,
             'truth': {'Consolidation': None, 'Support Devices': Finding(device='endotracheal tube')}}
    row = truth_row(study, ['Consolidation', 'Support Devices'])
    assert (row['Consolidation'], row['Support Devices'], row['No Finding'], row['Edema']) == ('0.0', '1.0', '1.0', '')


def test_the_dataset_is_what_data_prep_reads(gym_data, tmp_path):
    out = tmp_path / 'sft.jsonl'
    command = [sys.executable, '-m', 'data_prep', 'sft', '--dataset', os.path.join(gym_data, 'teachers.jsonl'),
               '--eval-fraction', '0', '--out', str(out)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(str(out))
    teachers = read_jsonl(os.path.join(gym_data, 'teachers.jsonl'))
    assert len(rows) == len(teachers) == 12 * TINY.teachers
    assert 'per-trace layout' in done.stdout
    assert {r['teacher'] for r in rows} == {t.name for t in TEACHERS[:TINY.teachers]}


def _rates(teacher, drift: float, n: int = 4000):
    """Realised sensitivity and specificity of ``teacher`` on Consolidation over ``n`` draws."""
    rng = np.random.default_rng(0)
    hits = misses = 0
    for i in range(n):
        present = i % 2 == 0
        call = draw_calls(teacher, {'Consolidation': Finding(side='right', zone='mid') if present else None},
                          drift, rng)['Consolidation']
        if present:
            hits += call.present
        else:
            misses += not call.present
    return hits / (n / 2), misses / (n / 2)


def test_teacher_profiles_are_what_the_calls_realise():
    moonshot = next(t for t in TEACHERS if t.name == 'Moonshot')
    sensitivity, specificity = _rates(moonshot, 1.0)
    # 0.95 - 0.75 and 0.95 - 0.7, within 4 binomial standard errors of 2,000 draws
    assert abs(sensitivity - 0.20) < 0.04 and abs(specificity - 0.25) < 0.04
    sensitivity, specificity = _rates(moonshot, 0.0)
    assert abs(sensitivity - 0.95) < 0.02 and abs(specificity - 0.95) < 0.02


def test_more_drift_only_turns_right_calls_wrong():
    rng_seed = 5
    truth = {'Consolidation': Finding(side='left', zone='upper'), 'Pleural Effusion': None}
    for teacher in TEACHERS:
        low = draw_calls(teacher, truth, 0.3, np.random.default_rng(rng_seed))
        high = draw_calls(teacher, truth, 1.0, np.random.default_rng(rng_seed))
        for finding, present in (('Consolidation', True), ('Pleural Effusion', False)):
            if low[finding].present != present:     # wrong at low drift stays wrong at high drift
                assert high[finding].present != present


def test_first_teachers_write_the_same_traces_whatever_k(tmp_path):
    small = make(TINY.with_changes(teachers=2), str(tmp_path / 'k2'))
    large = make(TINY.with_changes(teachers=3), str(tmp_path / 'k3'))
    two = read_jsonl(os.path.join(small, 'teachers.jsonl'))
    three = [r for r in read_jsonl(os.path.join(large, 'teachers.jsonl')) if r['model'] != TEACHERS[2].name]
    assert two == three


def test_majority_by_hand():
    yes = Call(True, Finding(side='left', zone='upper'))
    other = Call(True, Finding(side='right', zone='lower'))
    no = Call(False)
    traces = [Trace('A', '', 'answer', {'Consolidation': yes, 'Cardiomegaly': no}),
              Trace('B', '', 'answer', {'Consolidation': other, 'Cardiomegaly': Call(True, Finding(size='large'))}),
              Trace('C', '', 'answer', {'Consolidation': yes, 'Cardiomegaly': no}),
              Trace('D', 'I am sorry', 'refusal')]
    calls = majority_calls(traces, ['Consolidation', 'Cardiomegaly'])
    assert calls['Consolidation'].present and calls['Consolidation'].details == yes.details   # 3 of 3, 2 say left upper
    assert not calls['Cardiomegaly'].present                                                 # 1 of 3
    tie = majority_calls(traces[:2], ['Cardiomegaly'])
    assert not tie['Cardiomegaly'].present                                                   # 1 of 2: a tie is absent


def test_make_is_idempotent_and_refuses_a_foreign_folder(tmp_path, gym_data):
    assert make(TINY, gym_data) == gym_data
    foreign = tmp_path / 'other'
    foreign.mkdir()
    with pytest.raises(FileExistsError):
        make(TINY, str(foreign))


# -- configuration ----------------------------------------------------------------------------------------------------
def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('base: ci\nimage_size: 60\n')
    with pytest.raises(gym_config.DataError, match="image_size"):
        gym_config.load(str(bad))
    bad.write_text('base: ci\nteachrs: 3\n')
    with pytest.raises(gym_config.DataError, match="unknown field"):
        gym_config.load(str(bad))
    with pytest.raises(gym_config.DataError, match="stage2_lrs.*|val_studies"):
        gym_config.load('ci', ['stage2_lrs=1e-4,2e-4', 'val_studies=0'])
    config = gym_config.load('small', ['teachers=5', 'seeds=0,1'])
    assert (config.teachers, config.seeds) == (5, (0, 1))


# -- statistics --------------------------------------------------------------------------------------------------------
def test_summary_and_paired_difference_by_hand():
    # 2 seeds x 4 studies x 2 findings
    a = np.array([[[1, 1], [1, 0], [0, 0], [1, 1]], [[1, 1], [1, 1], [0, 1], [1, 1]]], dtype=float)
    b = np.zeros_like(a)
    b[:, 0, :] = 1
    resamples = study_resamples(4, 4000, 0)
    s = summarise(a, resamples)
    assert s.mean == pytest.approx(12 / 16)
    assert s.per_seed == pytest.approx((5 / 8, 7 / 8))
    assert s.per_finding[0][0] == pytest.approx(6 / 8) and s.per_finding[1][0] == pytest.approx(6 / 8)
    identity = np.tile(np.arange(4), (1, 1))        # the one "resample" that is the studies themselves
    assert summarise(a, identity).low == pytest.approx(12 / 16)
    # study means 1, 3/4, 1/4, 1: the bootstrap interval of their mean lies inside [1/4, 1] and holds 3/4
    assert 0.25 <= s.low < 0.75 < s.high <= 1.0
    d = paired_difference(a, b, resamples)
    assert d.mean == pytest.approx(12 / 16 - 4 / 16)
    assert d.per_seed == pytest.approx((5 / 8 - 2 / 8, 7 / 8 - 2 / 8))
    assert d.low <= d.mean <= d.high
    assert paired_difference(a, a, resamples).p_value == 1.0


def test_outcome_array_needs_every_item():
    correct = [{'1:X': True, '2:X': False}]
    assert outcome_array(correct, ['1', '2'], ['X']).tolist() == [[[1.0], [0.0]]]
    with pytest.raises(KeyError):
        outcome_array(correct, ['1', '3'], ['X'])


def test_answers_join_by_request(tmp_path):
    requests = tmp_path / 'req.jsonl'
    results = tmp_path / 'res.jsonl'
    reqs = [{'messages': [{'role': 'user', 'content': f'<image>q{i}'}], 'images': [f'/x/{i}.png'], 'study_id': str(i)}
            for i in range(3)]
    requests.write_text(''.join(json.dumps(r) + '\n' for r in reqs))
    rows = [{'messages': r['messages'] + [{'role': 'assistant', 'content': f'a{r["study_id"]}'}],
             'images': [{'path': r['images'][0]}], 'response': f'a{r["study_id"]}'} for r in reversed(reqs)]
    results.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    assert study_answers(str(requests), str(results)) == {'0': 'a0', '1': 'a1', '2': 'a2'}
    results.write_text(json.dumps(rows[0]) + '\n')
    with pytest.raises(ValueError, match='no answer for 2'):
        study_answers(str(requests), str(results))


# -- the step runner ---------------------------------------------------------------------------------------------------
def test_steps_run_once_and_redo_when_their_command_changes(tmp_path):
    out = tmp_path / 'x.txt'
    ran = []

    def step(text):
        return Step('write', [str(out)], action=lambda: (ran.append(text), out.write_text(text)), signature=text)

    runner = Runner(str(tmp_path), log=lambda *_: None)
    runner.add(step('one'))
    runner.run()
    again = Runner(str(tmp_path), log=lambda *_: None)
    again.add(step('one'))
    again.run()
    assert ran == ['one']
    changed = Runner(str(tmp_path), log=lambda *_: None)
    changed.add(step('two'))
    changed.run()
    assert ran == ['one', 'two'] and out.read_text() == 'two'
    source = tmp_path / 'builder.py'
    source.write_text('one')

    def built():
        return Step('write', [str(out)], action=lambda: (ran.append('built'), out.write_text('built')),
                    signature='two', code=(str(source),))
    for text in ('one', 'one', 'two'):     # a source file named in code: its change redoes the step
        source.write_text(text)
        code_digest.cache_clear()
        rerun = Runner(str(tmp_path), log=lambda *_: None)
        rerun.add(built())
        rerun.run()
    assert ran == ['one', 'two', 'built', 'built']
    failing = Runner(str(tmp_path), log=lambda *_: None)
    failing.add(Step('fails', [str(tmp_path / 'never')], command=[sys.executable, '-c', 'raise SystemExit(3)']))
    with pytest.raises(StepFailed, match='step fails failed \\(exit 3\\)'):
        failing.run()


# -- end to end: every stage and arm through the real CLIs (the ``ci`` configuration) ---------------------------------
@pytest.fixture(scope='module')
def ci_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('gym-ci') / 'run'
    command = [sys.executable, '-m', 'benchmarks.drift_gym', 'run', '--config', 'ci', '--out', str(out), '--jobs', '2']
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, command


def _work(out: Path, prefix: str) -> Path:
    found = sorted(p for p in (out / 'work').iterdir() if p.name.startswith(prefix) and p.is_dir())
    assert len(found) == 1, (prefix, found)
    return found[0]


def test_ci_run_trains_each_arm_as_specified(ci_run):
    out, _ = ci_run
    config = gym_config.CI
    args = {arm: json.load(open(_work(out, f'arm-{arm}-s0-') / 'args.json')) for arm in 'abcde'}
    assert [args[a].get('rlhf_type') for a in 'abcde'] == [None, None, None, 'dpo', 'apo']
    assert args['d']['per_device_train_batch_size'] == config.batch_size * config.teachers
    assert all(args[a]['per_device_train_batch_size'] == config.batch_size for a in 'abce')
    assert all(args[a]['max_steps'] == config.stage2_steps for a in 'abcde')
    assert args['d']['beta'] == args['e']['beta'] == config.beta
    assert args['b']['model'].startswith(str(_work(out, 'stage1-majority-s0-')))
    assert all(args[a]['model'].startswith(str(_work(out, 'stage1-teachers-s0-'))) for a in 'acde')
    assert args['b']['dataset'][0].endswith('majority_sft.jsonl') and args['a']['dataset'][0].endswith('/sft.jsonl')
    # the pairwise rows are the APO rows split, one per rejected trace
    data = _work(out, 'apo-data-')
    apo = read_jsonl(str(data / 'apo.jsonl'))
    pairs = read_jsonl(str(data / 'pairs.jsonl'))
    assert len(pairs) == sum(len(r['rejected_response']) for r in apo) > len(apo) > 0
    assert {p['rejected_response'] for p in pairs} == {t for r in apo for t in r['rejected_response']}


def test_ci_page_figures_come_from_the_answer_files(ci_run):
    out, _ = ci_run
    results = json.load(open(out / 'results.json'))
    page = (out / 'drift_gym.md').read_text()
    for arm in 'abcde':
        assert f'| ({arm}) ' in page
    data = _work(out, 'data-')
    truth = {}
    for item in read_jsonl(str(data / 'test.items.jsonl')):
        truth[item['id']] = item['label']
    drift = json.load(open(out / 'reports' / 'main' / 'drift-s0' / 'drift.json'))
    for arm in 'abcde':
        run = _work(out, f'answers-arm-{arm}-s0-')
        # answer reader: the page's macro accuracy is the classify result's mean correctness over items
        scored = json.load(open(run / 'scores-test' / f'arm-{arm}.json'))
        assert {i['id'] for i in scored['items']} == set(truth)
        mean = sum(i['correct'] for i in scored['items']) / len(scored['items'])
        assert results['main']['arms'][arm]['answer_reader']['macro'] == pytest.approx(mean)
        assert results['main']['arms'][arm]['answer_reader']['macro'] == pytest.approx(scored['average']['accuracy'])
        # findings reader: per finding, the drift report's label accuracy of the same answers
        per_finding = results['main']['arms'][arm]['findings_reader']['per_finding']
        for finding, value in per_finding.items():
            assert value == pytest.approx(drift['label_accuracy'][f'arm-{arm}'][finding]['accuracy'])
    teacher = TEACHERS[0].name
    scored = json.load(open(_work(out, 'teachers-') / 'scores-test' / f'{teacher}.json'))
    teacher_figures = results['main']['teachers'][teacher]['answer_reader']
    assert teacher_figures['macro'] == pytest.approx(scored['average']['accuracy'])
    d = results['main']['apo_versus']['e - d']['answer_reader']
    e_minus_d = (results['main']['arms']['e']['answer_reader']['macro'] -
                 results['main']['arms']['d']['answer_reader']['macro'])
    assert d['delta'] == pytest.approx(e_minus_d)


def test_ci_rerun_keeps_every_step(ci_run):
    out, command = ci_run
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'done before, kept' in done.stdout
    started = [line for line in done.stdout.splitlines()
               if line.startswith('== ') and 'done before' not in line and not line.startswith('== drift gym')]
    assert started == []
    assert (out / 'drift_gym.md').is_file()


def test_a_redone_step_redoes_what_needs_it(tmp_path):
    ran = []

    def plan(first: str):
        runner = Runner(str(tmp_path), log=lambda *_: None)
        a, b = tmp_path / 'a.txt', tmp_path / 'b.txt'
        runner.add(Step('a', [str(a)], action=lambda: (ran.append('a'), a.write_text(first)), signature=first))
        runner.add(Step('b', [str(b)], needs=['a'], signature='b from a',
                        action=lambda: (ran.append('b'), b.write_text(a.read_text() + '!'))))
        return runner

    plan('one').run()
    plan('one').run()
    assert ran == ['a', 'b']
    plan('two').run()
    assert ran == ['a', 'b', 'a', 'b'] and (tmp_path / 'b.txt').read_text() == 'two!'
