"""``python -m benchmarks.drift_gym run``: every arm on every seed (and the sweeps), scored, into one page.

Phase 1 trains and answers (pipeline.py) and scores every run with ``python -m evaluation classify`` on the
validation and test items; the validation studies then choose each arm's stage-2 learning rate from the grid (the
mean over seeds of the validation macro accuracy; the first of equals). Phase 2 runs, for the chosen runs of the
main configuration, ``python -m evaluation consistency`` and the drift report (``python -m data_prep report
--labels-csv truth.csv --source ...``, one per seed). Phase 3 writes the page (page.py).
"""
import json
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .config import ARMS, CONSENSUS_SOURCES, GymConfig, main_point, sweep_point
from .pipeline import ArmRun, Pipeline, write_teacher_answers
from .steps import Runner, Step, python_module
from .student import REPO
from .teachers import TEACHERS

LABELS = ['--labels', 'presence', '--prompt-template', '{question}']
# the readers behind every score: a change there (another engineer's, say) rescores, without retraining
READERS_CODE = tuple(str(REPO / package) for package in ('evaluation', 'clinical_text', 'data_prep'))


@dataclass
class Point:
    """One configuration of the experiment (the main one, or a sweep point) and its runs."""
    label: str                         # 'main', or e.g. 'teachers=3'
    config: GymConfig
    runs: List[ArmRun] = field(default_factory=list)
    scores: Dict[Tuple[str, int, float], Dict[str, str]] = field(default_factory=dict)   # run -> split -> json
    teacher_scores: Dict[str, Dict[str, str]] = field(default_factory=dict)            # teacher -> split -> json
    chosen_lr: Dict[str, float] = field(default_factory=dict)
    data: str = ''


def points(config: GymConfig, with_sweeps: bool) -> List[Point]:
    """The main point first; with ``compare_consensus`` the main point with t+ from the other source second."""
    found = [Point('main', main_point(config))]
    if config.compare_consensus:
        other = next(c for c in CONSENSUS_SOURCES if c != config.consensus)
        found.append(Point(f'main:consensus={other}', main_point(config).with_changes(consensus=other)))
    if with_sweeps:
        for name, values in config.sweeps.items():
            reference = sweep_point(config, name, getattr(config, name))
            found.append(Point(f'{name}={getattr(config, name)}', reference))
            found += [Point(f'{name}={value}', sweep_point(config, name, value)) for value in values]
    unique: Dict[str, Point] = {}
    for point in found:
        unique.setdefault(point.label if point.label == 'main' else f'{point.label}|{point.config}', point)
    return list(unique.values())


class Experiment:
    def __init__(self, config: GymConfig, out: str, jobs: int, with_sweeps: bool, log=print):
        self.config = config
        self.out = os.path.abspath(out)
        os.makedirs(self.out, exist_ok=True)
        self.runner = Runner(self.out, jobs=jobs, log=log)
        self.pipeline = Pipeline(self.out, self.runner, config)
        self.points = points(config, with_sweeps)
        self.log = log

    def _classify(self, step: str, name: str, answers: str, items: str, out_dir: str, needs: List[str]) -> str:
        result = os.path.join(out_dir, f'{name}.json')
        command = python_module('evaluation', 'classify', '--answers', answers, '--name', name, '--dataset', items,
                                *LABELS, '--n-boot', str(self.config.n_boot), '--out', out_dir)
        self.runner.add(Step(step, [result], command=command, needs=needs, clean=[result], code=READERS_CODE))
        return result

    def plan_scores(self, point: Point) -> None:
        """Training, answers and classification of every run of ``point``."""
        config = point.config
        prepared = self.pipeline.prepared(config)
        point.data = prepared.data
        data_step = self.pipeline.data_name(config)
        teacher_dir = os.path.join(self.out, 'work', f'teachers-{data_step[5:]}')
        teacher_step = f'teacher-answers-{data_step[5:]}'
        names = [t.name for t in TEACHERS[:config.teachers]]
        outputs = [os.path.join(teacher_dir, t, f'{s}.answers.jsonl') for t in names for s in ('val', 'test')]
        self.runner.add(Step(teacher_step, outputs, needs=[data_step], clean=outputs,
                             action=lambda: write_teacher_answers(prepared.data, teacher_dir),
                             signature=f'teacher answer files of {prepared.data}'))
        for teacher in names:
            for split in ('val', 'test'):
                result = self._classify(f'classify-{split}-{teacher}-{data_step[5:]}', teacher,
                                        os.path.join(teacher_dir, teacher, f'{split}.answers.jsonl'),
                                        os.path.join(prepared.data, f'{split}.items.jsonl'),
                                        os.path.join(teacher_dir, f'scores-{split}'), [teacher_step])
                point.teacher_scores.setdefault(teacher, {})[split] = result
        for seed in config.seeds:
            for arm in ARMS:
                for lr in config.stage2_lrs:
                    answers_step, run = self.pipeline.arm(config, arm, seed, lr)
                    point.runs.append(run)
                    for split in ('val', 'test') if len(config.stage2_lrs) > 1 else ('test',):
                        result = self._classify(f'classify-{split}-{os.path.basename(run.answers)}', f'arm-{arm}',
                                                os.path.join(run.answers, f'{split}.answers.jsonl'),
                                                os.path.join(prepared.data, f'{split}.items.jsonl'),
                                                os.path.join(run.answers, f'scores-{split}'), [answers_step])
                        point.scores.setdefault((arm, seed, lr), {})[split] = result

    def choose_learning_rates(self, point: Point) -> None:
        config = point.config
        for arm in ARMS:
            if len(config.stage2_lrs) == 1:
                point.chosen_lr[arm] = config.stage2_lrs[0]
                continue
            best, best_score = None, None
            for lr in config.stage2_lrs:
                scores = [_read(point.scores[(arm, seed, lr)]['val'])['average']['accuracy'] for seed in config.seeds]
                mean = sum(scores) / len(scores)
                if best_score is None or mean > best_score + 1e-12:
                    best, best_score = lr, mean
            point.chosen_lr[arm] = best

    def main_points(self) -> List[Point]:
        return [p for p in self.points if p.label.startswith('main')]

    def chosen(self, point: Point, arm: str, seed: int) -> ArmRun:
        return next(r for r in point.runs if r.arm == arm and r.seed == seed and r.lr == point.chosen_lr[arm])

    def plan_reports(self, main: List[Point]) -> Dict[str, Dict]:
        """Consistency and drift reports of the chosen runs of the main point(s); returns where they are."""
        point = main[0]
        config, data = point.config, point.data
        reports: Dict[str, Dict] = {'consistency': {}, 'drift': {}}
        folder = os.path.join(self.out, 'reports', point.label.replace('=', '-'))
        items = os.path.join(data, 'test.items.jsonl')
        teacher_step = f'consistency-teachers-{os.path.basename(data)}'
        teacher_out = os.path.join(self.out, 'work', f'teachers-{os.path.basename(data)[5:]}', 'consistency')
        result = os.path.join(teacher_out, 'test.teachers.consistency.json')
        self.runner.add(Step(teacher_step, [result], clean=[result], needs=[], code=READERS_CODE,
                             command=python_module('evaluation', 'consistency', '--teachers',
                                                   os.path.join(data, 'test.jsonl'), '--out', teacher_out)))
        reports['consistency']['teachers'] = result
        for seed in config.seeds:
            sources = []
            for source, arm in arms_of(main):
                run = self.chosen(source, arm, seed)
                name = f'{source_name(source, arm)}-s{seed}'
                out = os.path.join(folder, 'consistency')
                answers = [os.path.join(run.answers, 'test.answers.jsonl')]
                samples = os.path.join(run.answers, 'test.samples.jsonl')
                if config.consistency_samples:
                    answers = [samples]
                result = os.path.join(out, f'{name}.consistency.json')
                self.runner.add(Step(f'consistency-{point.label}-{name}', [result], clean=[result], code=READERS_CODE,
                                     command=python_module('evaluation', 'consistency', '--answers', *answers,
                                                           '--dataset', items, *LABELS, '--name', name,
                                                           '--out', out)))
                reports['consistency'][(source_name(source, arm), seed)] = result
                sources += ['--source', f'{source_name(source, arm)}={os.path.join(run.answers, "test.studies.jsonl")}']
            out = os.path.join(folder, f'drift-s{seed}')
            self.runner.add(Step(f'drift-{point.label}-s{seed}', [os.path.join(out, 'drift.json')], clean=[out],
                                 code=READERS_CODE,
                                 command=python_module('data_prep', 'report', '--dataset',
                                                       os.path.join(data, 'test.jsonl'), '--labels-csv',
                                                       os.path.join(data, 'truth.csv'), '--workers', '1',
                                                       '--out', out, *sources)))
            reports['drift'][seed] = os.path.join(out, 'drift.json')
        return reports

    def dry_run(self) -> List[str]:
        """What phase 1 would run (phase 2 depends on its results): one line per step."""
        for point in self.points:
            self.plan_scores(point)
        return [f'{s.name}: {s.key()}' for s in self.runner.plan()]

    def run(self) -> Dict:
        started, load = time.time(), os.getloadavg()
        for point in self.points:
            self.plan_scores(point)
        self.runner.run()
        for point in self.points:
            self.choose_learning_rates(point)
        reports = self.plan_reports(self.main_points())
        self.runner.run()
        return {'seconds': time.time() - started, 'load_start': load, 'load_end': os.getloadavg(),
                'reports': reports}


def arms_of(main: List[Point]) -> List[Tuple[Point, str]]:
    """(point, arm) of the main table: every arm of the first point, then arms c, d, e of the second."""
    return [(main[0], arm) for arm in ARMS] + [(point, arm) for point in main[1:] for arm in 'cde']


def source_name(point: Point, arm: str) -> str:
    """``arm-e``, or ``arm-e-majority`` for the second setting of t+."""
    return f'arm-{arm}' if point.label == 'main' else f'arm-{arm}-{point.config.consensus}'


def _read(path: str) -> Dict:
    with open(path, encoding='utf-8') as f:
        return json.load(f)
