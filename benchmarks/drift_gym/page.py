"""The result page: ``<out>/drift_gym.md`` with ``drift_gym.png`` (and ``results.json``, its figures).

Accuracy is read two ways, both the project's readers: the answer reader of ``evaluation classify`` (label set
``presence``; an answer it cannot read counts as wrong) and the findings reader of the drift report (a finding
the answer calls positive or uncertain is said present; negative or not mentioned, absent). Both are computed on
the same held-out test studies, for every arm on every seed, with the arm's learning rate chosen on the validation
studies; the teachers' own traces on those studies are scored the same way.
"""
import json
import os
import platform
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from clinical_text.findings import read_findings

from .answers import read_jsonl
from .config import ARM_NAMES, ARMS
from .stats import Summary, fmt, outcome_array, paired_difference, spread, study_resamples, summarise

READERS = ('answer reader (classify)', 'findings reader (drift report)')


def classify_correct(path: str) -> Dict[str, bool]:
    with open(path, encoding='utf-8') as f:
        return {item['id']: bool(item['correct']) for item in json.load(f)['items']}


def classify_parse_rate(path: str) -> float:
    with open(path, encoding='utf-8') as f:
        return json.load(f)['average']['parse_rate']


def findings_correct(answers: Dict[str, str], truth: Dict[str, Dict[str, bool]],
                     findings: Sequence[str]) -> Dict[str, bool]:
    """``"<study>:<finding>" -> right`` by the findings reader: said (positive / uncertain) == present."""
    out = {}
    for study, present in truth.items():
        calls = read_findings(answers[study])
        for finding in findings:
            out[f'{study}:{finding}'] = (calls.get(finding) in ('positive', 'uncertain')) == present[finding]
    return out


def test_truth(data: str, findings: Sequence[str]) -> Dict[str, Dict[str, bool]]:
    truth: Dict[str, Dict[str, bool]] = {}
    for item in read_jsonl(os.path.join(data, 'test.items.jsonl')):
        study, finding = item['id'].split(':', 1)
        truth.setdefault(study, {})[finding] = item['label'] == 'present'
    return truth


class PointResults:
    """Both readers' outcome arrays for ``arms`` (each at its chosen learning rate) and the teachers of one point."""

    def __init__(self, experiment, point, arms: Sequence[str] = ARMS):
        config = point.config
        self.point, self.config = point, config
        self.findings = list(config.observations)
        self.truth = test_truth(point.data, self.findings)
        self.studies = list(self.truth)
        self.resamples = study_resamples(len(self.studies), config.n_boot, 0)
        self.arms: Dict[str, List[np.ndarray]] = {}
        self.parse: Dict[str, float] = {}
        for arm in arms:
            runs = [experiment.chosen(point, arm, seed) for seed in config.seeds]
            by_classify = [classify_correct(point.scores[(arm, r.seed, r.lr)]['test']) for r in runs]
            by_findings = [findings_correct({row['id']: row['response'] for row in
                                             read_jsonl(os.path.join(r.answers, 'test.studies.jsonl'))},
                                            self.truth, self.findings) for r in runs]
            self.arms[arm] = [outcome_array(by_classify, self.studies, self.findings),
                              outcome_array(by_findings, self.studies, self.findings)]
            self.parse[arm] = float(np.mean([classify_parse_rate(point.scores[(arm, r.seed, r.lr)]['test'])
                                             for r in runs]))
        self.teachers: Dict[str, List[np.ndarray]] = {}
        teacher_traces = {}
        for row in read_jsonl(os.path.join(point.data, 'test.jsonl')):
            teacher_traces.setdefault(row['model'], {})[str(row['study_id'])] = row['response']
        for teacher, files in point.teacher_scores.items():
            self.teachers[teacher] = [
                outcome_array([classify_correct(files['test'])], self.studies, self.findings),
                outcome_array([findings_correct(teacher_traces[teacher], self.truth, self.findings)], self.studies,
                              self.findings)]
            self.parse[teacher] = classify_parse_rate(files['test'])

    def summary(self, name: str, reader: int) -> Summary:
        source = self.arms.get(name) or self.teachers[name]
        return summarise(source[reader], self.resamples)

    def versus(self, a: str, b: str, reader: int):
        return paired_difference(self.arms[a][reader], self.arms[b][reader], self.resamples)


@dataclass(frozen=True)
class Row:
    """One arm of the main table: its key in results.json and the page (``e``, ``e-majority``), its results."""
    key: str
    label: str
    results: PointResults
    arm: str

    def outcome(self, reader: int) -> np.ndarray:
        return self.results.arms[self.arm][reader]

    def summary(self, reader: int) -> Summary:
        return summarise(self.outcome(reader), self.results.resamples)


def main_rows(experiment, main: Sequence[PointResults]) -> List[Row]:
    rows = [Row(arm, f'({arm}) {ARM_NAMES[arm]}', main[0], arm) for arm in ARMS]
    for other in main[1:]:
        source = other.config.consensus
        rows += [Row(f'{arm}-{source}', f'({arm}) {ARM_NAMES[arm]}, t+ = {source}', other, arm) for arm in 'cde']
    if len(main) > 1:
        first = main[0].config.consensus
        rows = [Row(r.key, f'{r.label}, t+ = {first}' if r.arm in 'cde' and '-' not in r.key else r.label,
                    r.results, r.arm) for r in rows]
    return rows


def _table(rows: Sequence[Row], reader: int) -> List[str]:
    results = rows[0].results
    f = results.findings
    lines = [f'| source | {" | ".join(f)} | macro [95% CI] | seeds (min–max) | parse rate |',
             '|' + '---|' * (len(f) + 4)]
    for row in rows:
        s = row.summary(reader)
        cells = ' | '.join(fmt(*c) for c in s.per_finding)
        lines.append(f'| {row.label} | {cells} | **{fmt(s.mean, s.low, s.high)}** | '
                     f'{spread(list(s.per_seed))} | {_parse(row.results, row.arm, reader)} |')
    for teacher in results.teachers:
        s = results.summary(teacher, reader)
        cells = ' | '.join(fmt(c[0]) for c in s.per_finding)
        lines.append(f'| teacher {teacher} | {cells} | {fmt(s.mean, s.low, s.high)} | – | '
                     f'{_parse(results, teacher, reader)} |')
    return lines


def _parse(results: PointResults, name: str, reader: int) -> str:
    """The answer reader's parse rate (an unread answer counts as wrong); the findings reader reads every text."""
    return f'{results.parse[name]:.2f}' if reader == 0 else '–'


def comparisons(rows: Sequence[Row]) -> List[Tuple[Row, Row]]:
    """APO of each setting of t+ against every other arm of the table."""
    apo = [r for r in rows if r.arm == 'e']
    return [(e, other) for e in apo for other in rows if other.arm != 'e']


def _versus_table(rows: Sequence[Row], reader: int) -> List[str]:
    lines = ['| APO | minus | Δ macro [95% CI] | p | Δ per seed |', '|---|---|---|---|---|']
    for e, other in comparisons(rows):
        d = paired_difference(e.outcome(reader), other.outcome(reader), e.results.resamples)
        lines.append(f'| ({e.key}) | {other.label} | {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | {d.p_value:.3f} | '
                     + ', '.join(f'{v:+.3f}' for v in d.per_seed) + ' |')
    return lines


def chart(rows: Sequence[Row], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    results = rows[0].results
    colours = {'a': '#999999', 'b': '#bbbbbb', 'c': '#7fa7d8', 'd': '#d8a77f', 'e': '#4c9a5b'}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for reader, ax in enumerate(axes):
        sums = [r.summary(reader) for r in rows]
        ax.bar([f'({r.key})' for r in rows], [s.mean for s in sums], color=[colours[r.arm] for r in rows],
               yerr=[[s.mean - s.low for s in sums], [s.high - s.mean for s in sums]], capsize=4)
        for x, s in enumerate(sums):
            ax.scatter([x] * len(s.per_seed), s.per_seed, color='black', s=8, zorder=3)
        teacher_means = [results.summary(t, reader).mean for t in results.teachers]
        if teacher_means:
            ax.axhspan(min(teacher_means), max(teacher_means), color='orange', alpha=0.15, label='teachers (range)')
            ax.axhline(max(teacher_means), color='orange', lw=1)
        ax.set_title(READERS[reader])
        ax.set_ylim(0, 1)
        ax.set_ylabel('macro accuracy (test)')
        ax.tick_params(axis='x', labelrotation=30)
        ax.legend(loc='lower right', fontsize=8)
    fig.suptitle('Arms: mean over seeds with 95% study-bootstrap interval; dots: seeds')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _consistency(reports: Dict, config, names: Sequence[str]) -> List[str]:
    lines = ['| arm | reasoning-answer consistency (checked) | majority agreement |', '|---|---|---|']
    for name in names:
        rates, checked, agreement = [], 0, []
        for seed in config.seeds:
            with open(reports['consistency'][(name, seed)], encoding='utf-8') as f:
                data = json.load(f)
            ra = data['reasoning_answer']
            if ra['consistency_rate'] is not None:
                rates.append(ra['consistency_rate'])
            checked += ra['checked']
            if data.get('majority_agreement') is not None and config.consistency_samples:
                agreement.append(data['majority_agreement'])
        rate = f'{np.mean(rates):.3f} ({checked})' if rates else '– (none checked)'
        agree = f'{np.mean(agreement):.3f}' if agreement else '– (greedy answers only)'
        lines.append(f'| {name} | {rate} | {agree} |')
    with open(reports['consistency']['teachers'], encoding='utf-8') as f:
        teachers = json.load(f)
    lines += ['', '| teacher | reasoning-answer consistency (checked) |', '|---|---|']
    for name, entry in teachers['teachers'].items():
        rate = entry.get('consistency_rate')
        lines.append(f'| {name} | {"–" if rate is None else f"{rate:.3f}"} ({entry.get("checked", 0)}) |')
    return lines


def _drift(reports: Dict, config, names: Sequence[str]) -> List[str]:
    lines = ['| arm | macro label accuracy (per seed) | findings better than the best teacher, p < 0.05 (per seed) |',
             '|---|---|---|']
    accuracy: Dict[str, List[str]] = {n: [] for n in names}
    beats: Dict[str, List[str]] = {n: [] for n in names}
    for seed in config.seeds:
        with open(reports['drift'][seed], encoding='utf-8') as f:
            students = json.load(f).get('students', {})
        for name in names:
            entry = students.get(name, {})
            value = entry.get('macro_accuracy')
            accuracy[name].append('–' if value is None else f'{value:.3f}')
            b = entry.get('beats_best_teacher', {})
            beats[name].append(f'{b.get("better_p_below_0.05", 0)}/{b.get("observations", 0)}')
    for name in names:
        lines.append(f'| {name} | {", ".join(accuracy[name])} | {", ".join(beats[name])} |')
    return lines


def _lr_table(experiment, point) -> List[str]:
    config = point.config
    if len(config.stage2_lrs) == 1:
        return [f'One stage-2 learning rate for every arm: {config.stage2_lrs[0]:g}.']
    lines = ['| arm | ' + ' | '.join(f'lr {lr:g}' for lr in config.stage2_lrs) + ' | chosen |',
             '|' + '---|' * (len(config.stage2_lrs) + 2)]
    for arm in ARMS:
        cells = []
        for lr in config.stage2_lrs:
            vals = []
            for seed in config.seeds:
                with open(point.scores[(arm, seed, lr)]['val'], encoding='utf-8') as f:
                    vals.append(json.load(f)['average']['accuracy'])
            cells.append(f'{np.mean(vals):.3f}')
        lines.append(f'| ({arm}) | ' + ' | '.join(cells) + f' | {point.chosen_lr[arm]:g} |')
    return ['Validation macro accuracy (answer reader, mean over seeds) per stage-2 learning rate; each arm keeps '
            'its best:', ''] + lines


def sweep_tables(sweep_results: Dict[str, PointResults]) -> List[str]:
    lines = []
    by_sweep: Dict[str, List[str]] = {}
    for label in sweep_results:
        by_sweep.setdefault(label.split('=')[0], []).append(label)
    for sweep, labels in by_sweep.items():
        lines += [f'### {sweep}', '']
        for reader in (1, 0):
            lines += [f'{READERS[reader]}: macro accuracy, mean over seeds [95% CI]; Δ = APO minus the arm [95% CI].',
                      '', f'| {sweep} | ' + ' | '.join(f'({a})' for a in ARMS)
                      + ' | APO − (c) | APO − (d) | best teacher |',
                      '|' + '---|' * (len(ARMS) + 4)]
            for label in labels:
                r = sweep_results[label]
                cells = [fmt(s.mean, s.low, s.high) for s in (r.summary(a, reader) for a in ARMS)]
                deltas = []
                for other in 'cd':
                    d = r.versus('e', other, reader)
                    deltas.append(f'{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]')
                best = max((r.summary(t, reader).mean, t) for t in r.teachers)
                lines.append(f'| {label.split("=", 1)[1]} | ' + ' | '.join(cells) + ' | ' + ' | '.join(deltas) +
                             f' | {best[0]:.3f} ({best[1]}) |')
            lines.append('')
        lines += ['Learning rates chosen on the validation studies: ' + '; '.join(
            f'{label.split("=", 1)[1]}: '
            + ', '.join(f'({a}) {sweep_results[label].point.chosen_lr[a]:g}' for a in ARMS)
            for label in labels), '']
    return lines


def write(experiment, outcome: Dict, sweeps: bool) -> str:
    from .experiment import arms_of, source_name

    main_points = experiment.main_points()
    main = main_points[0]
    config = main.config
    main_results = [PointResults(experiment, main)] + [PointResults(experiment, p, 'cde') for p in main_points[1:]]
    rows = main_rows(experiment, main_results)
    names = [source_name(p, a) for p, a in arms_of(main_points)]
    out = experiment.out
    chart(rows, os.path.join(out, 'drift_gym.png'))
    with open(os.path.join(main.data, 'manifest.json'), encoding='utf-8') as f:
        manifest = json.load(f)
    load0, load1 = outcome['load_start'], outcome['load_end']
    settings = ' and, for arms c, d, e, from the ' + ', '.join(p.config.consensus for p in main_points[1:]) \
        if len(main_points) > 1 else ''
    lines = [
        f'# Drift gym: `{config.name}`', '',
        f'{config.train_studies} training studies, {config.val_studies} validation and {config.test_studies} test '
        f'studies ({config.image_size}x{config.image_size} films; findings {", ".join(config.observations)}, '
        f'each present in {config.prevalence:.0%} of studies); {config.teachers} teachers at drift {config.drift:g}; '
        f'student: random Qwen2.5-VL, text hidden {config.hidden_size} x {config.num_layers} layers, vision '
        f'{config.vision_hidden} x {config.vision_depth} blocks, gym vocabulary; stage 1 {config.stage1_steps} '
        f'steps at lr {config.stage1_lr:g}, stage 2 {config.stage2_steps} steps, {config.batch_size} studies a step, '
        f'beta {config.beta:g}; t+ (the consensus) from the {config.consensus}{settings}; seeds '
        f'{", ".join(map(str, config.seeds))}.',
        '',
        f'Run: {outcome["seconds"] / 60:.1f} min wall on {os.cpu_count()} CPU(s) ({platform.machine()}), '
        f'{experiment.runner.jobs} step(s) at a time, {config.threads} thread(s) each; load average '
        f'{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} at the start, {load1[0]:.1f} / {load1[1]:.1f} / '
        f'{load1[2]:.1f} at the end (other jobs share the machine). Steps done before were kept, not rerun; the '
        f'step times below are those of the runs that made the results.', '',
        '![arms](drift_gym.png)', '',
    ]
    for reader in (1, 0):
        lines += [f'## Test accuracy, {READERS[reader]}', '',
                  'Per finding and macro: mean over seeds [95% bootstrap interval over test studies]; seeds: the '
                  'range of the per-seed macro accuracy. Teachers: their own traces on the same studies.', '']
        lines += _table(rows, reader) + ['']
        lines += ['APO against each other arm, paired (same studies and seeds; bootstrap over studies):', '']
        lines += _versus_table(rows, reader) + ['']
    lines += ['## Learning rates', ''] + _lr_table(experiment, main) + ['']
    lines += ['## Chain-of-thought consistency (`evaluation consistency`, test items)', '']
    lines += _consistency(outcome['reports'], config, names) + ['']
    lines += ['## Drift report (`data_prep report --source`): the students beside the teachers', '']
    lines += _drift(outcome['reports'], config, names) + ['']
    rates = manifest['teacher_rates']['train']
    lines += ['## The teachers (training studies, from the generator\'s own calls)', '',
              '| teacher | refusals | generic | ' + ' | '.join(config.observations) + ' |',
              '|' + '---|' * (len(config.observations) + 3)]
    for teacher, r in rates.items():
        cells = ' | '.join(f'{r["findings"][o]["accuracy"]:.2f}' for o in config.observations)
        lines.append(f'| {teacher} | {r["refusals"]} | {r["generic"]} | {cells} |')
    lines += ['', 'Accuracy per finding (a refusal or generic trace counts as not calling it).', '']
    sweep_results = {}
    if sweeps:
        for point in experiment.points[len(main_points):]:
            sweep_results[point.label] = PointResults(experiment, point)
        if sweep_results:
            lines += ['## Sweeps', '', f'Each point reruns every arm it changes on seeds '
                      f'{", ".join(map(str, sweep_results[next(iter(sweep_results))].config.seeds))} and the '
                      f'learning-rate grid (the same for every arm), t+ from the '
                      f'{sweep_results[next(iter(sweep_results))].config.consensus}; the test figures are each arm '
                      f'at its validation-chosen rate.', '']
            lines += sweep_tables(sweep_results)
    lines += ['## Step times', '', '| step kind | runs | seconds (sum) |', '|---|---|---|']
    kinds: Dict[str, List[float]] = {}
    for name, entry in experiment.runner.record.items():
        if name in experiment.runner.steps:
            kinds.setdefault(name.split('-')[0], []).append(entry.get('seconds', 0))
    for kind, secs in sorted(kinds.items()):
        lines.append(f'| {kind} | {len(secs)} | {sum(secs):.0f} |')
    lines += ['', 'Every command is in `logs/<step>.log` (first line) and `.gym-steps.json`.', '']
    figures = {'config': config.as_dict(), 'seconds': outcome['seconds'], 'load_start': load0, 'load_end': load1,
               'main': _figures(rows),
               'sweeps': {k: _figures(main_rows(experiment, [v])) for k, v in sweep_results.items()}}
    page = os.path.join(out, 'drift_gym.md')
    for path, text in ((page, '\n'.join(lines)), (os.path.join(out, 'results.json'), json.dumps(figures, indent=1))):
        with open(path + '.tmp', 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(path + '.tmp', path)
    return page


def _figures(rows: Sequence[Row]) -> Dict[str, Any]:
    results = rows[0].results
    out: Dict[str, Any] = {'chosen_lr': {r.key: r.results.point.chosen_lr[r.arm] for r in rows}, 'arms': {},
                           'teachers': {}, 'apo_versus': {}}
    for reader, key in ((0, 'answer_reader'), (1, 'findings_reader')):
        for row in rows:
            s = row.summary(reader)
            out['arms'].setdefault(row.key, {})[key] = {
                'macro': s.mean, 'ci95': [s.low, s.high], 'per_seed': list(s.per_seed),
                'per_finding': dict(zip(results.findings, [c[0] for c in s.per_finding]))}
        for teacher in results.teachers:
            s = results.summary(teacher, reader)
            out['teachers'].setdefault(teacher, {})[key] = {'macro': s.mean, 'ci95': [s.low, s.high]}
        for e, other in comparisons(rows):
            d = paired_difference(e.outcome(reader), other.outcome(reader), e.results.resamples)
            out['apo_versus'].setdefault(f'{e.key} - {other.key}', {})[key] = {
                'delta': d.mean, 'ci95': [d.low, d.high], 'p': d.p_value, 'per_seed': list(d.per_seed)}
    return out
