"""The drift report: how the teachers differ, measured over the whole dataset.

Per teacher: traces, empty ones, refusals and the length distribution (characters) of the rest.
Per observation: studies whose labels (or, without labels, whose question) name it.
Teacher-to-teacher agreement: mean Jaccard similarity of content words (text.py, negated words marked)
over the studies where both teachers gave a non-empty, non-refusal trace.

Against the study labels (the dataset's label columns, or ``--labels-csv`` joined by study id): each usable
trace is read by the findings reader (clinical_text/findings.py) and its call taken as positive when the
reader says positive or uncertain, negative when it says negative or nothing (a finding a trace does not name is
one it does not see). Per teacher x observation, over the studies with a definite label (1.0 or 0.0): accuracy,
sensitivity (on the 1.0 studies), specificity (on the 0.0 studies), each with a 95% Wilson interval; per
observation the spread (best minus worst teacher accuracy); per observation and teacher pair Cohen's kappa of
the reader's three-way calls (positive / uncertain / negative or not mentioned). Written as drift.md, drift.json
and two heatmaps, agreement.png (word overlap) and accuracy.png (teacher x observation accuracy).
"""
import json
import math
import multiprocessing
import os
from array import array
from collections import Counter, defaultdict
from functools import lru_cache, partial
from itertools import combinations, islice
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from clinical_text import NEGATIVE, POSITIVE, UNCERTAIN, FindingsReader, load_vocabulary
from clinical_text.labels import study_key
from clinical_text.stats import cohen_kappa, mcnemar_from_counts
from datafiles import OutputSet

from .outputs import Tally
from .records import Study
from .text import OBSERVATIONS, content_words, is_empty, is_refusal, jaccard, observations_in

Z95 = 1.959963984540054
CONSENSUS = 'consensus'     # the source name of the consensus answers (``report --consensus``)
_KAPPA_CLASS = {POSITIVE: 0, UNCERTAIN: 1, NEGATIVE: 2, None: 2}

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@lru_cache(maxsize=None)
def _reader(vocabulary: Optional[str]) -> FindingsReader:
    """The findings reader of a vocabulary file (None: the built-in vocabulary), built once per process."""
    return FindingsReader(load_vocabulary(vocabulary))


def read_study(study: Study, vocabulary: Optional[str] = None) -> Dict[str, tuple]:
    """teacher -> (content words, findings calls) of each usable (non-empty, non-refusal) trace: the costly part
    of the report, done in worker processes by ``read_studies``. ``vocabulary``: a vocabulary file's path (a path
    rather than the vocabulary itself, so that each worker builds its reader once)."""
    reader = _reader(vocabulary)
    return {t.teacher: (content_words(t.text), reader.read(t.text)) for t in study.traces
            if not is_empty(t.text) and not is_refusal(t.text)}


def read_studies(studies: Iterable[Study], workers: int, batch: int = 1024,
                 vocabulary: Optional[str] = None) -> Iterator[Tuple[Study, Dict]]:
    """(study, read_study(study)) in order, read by ``workers`` processes a batch at a time (so memory stays
    bounded: one batch read while the one before is counted)."""
    read = partial(read_study, vocabulary=vocabulary)
    if workers < 2:
        yield from ((study, read(study)) for study in studies)
        return
    studies = iter(studies)
    with multiprocessing.get_context('forkserver').Pool(workers) as pool:
        pending = None
        while True:
            chunk = list(islice(studies, batch))
            job = pool.map_async(read, chunk, chunksize=max(1, batch // (4 * workers))) if chunk else None
            if pending is not None:
                yield from zip(pending[0], pending[1].get())
            if job is None:
                return
            pending = (chunk, job)


class DriftReport:

    def __init__(self, labels: Optional[Dict[str, Dict[str, float]]] = None, labels_source: str = 'dataset',
                 students: Sequence[str] = ()):
        self.labels = labels                # from --labels-csv: study key -> observation -> value
        self.labels_source = labels_source
        self.students = list(students)      # --source names: scored beside the teachers, tested against them
        self.source_files: Dict[str, Dict] = {}     # --source name -> rows read, joined, unknown ids
        # (student, teacher, observation) -> [both wrong, teacher only right, student only right, both right]
        self.paired: Dict[tuple, List[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.student_studies = Counter()    # studies with a usable answer of the student
        self.consensus_agree: Dict[tuple, List[int]] = defaultdict(lambda: [0, 0])     # (student, obs) -> agree, n
        self.labelled = 0
        self.confusion: Dict[tuple, List[int]] = defaultdict(lambda: [0, 0, 0, 0])     # tp, fn, fp, tn
        self.calls: Dict[tuple, Counter] = defaultdict(Counter)
        self.pair_calls: Dict[tuple, List[int]] = defaultdict(lambda: [0] * 9)
        self.studies = 0
        self.traces = Counter()
        self.empty = Counter()
        self.refusals = Counter()
        self.lengths: Dict[str, array] = defaultdict(lambda: array('I'))
        self.observations = Counter()
        self.observation_source = Counter()
        self.traces_per_study = Counter()
        self.pair_sum: Dict[tuple, float] = defaultdict(float)
        self.pair_count = Counter()

    def add(self, study: Study, reads: Optional[Dict[str, tuple]] = None) -> None:
        """Count one study; ``reads`` is ``read_study(study)`` when a worker process has computed it."""
        if reads is None:
            reads = read_study(study)
        self.studies += 1
        self.traces_per_study[len(study.traces)] += 1
        labels = study.head.labels
        names = labels if labels else observations_in(study.head.question)
        self.observation_source['labels' if labels else 'question'] += 1
        self.observations.update(set(names))
        if self.labels is None:
            values = dict(study.head.label_values)
        else:
            values = self.labels.get(study_key(study.head.study_id), {})
        self.labelled += bool(values)
        words, calls = {}, {}
        for trace in study.traces:
            self.traces[trace.teacher] += 1
            if is_empty(trace.text):
                self.empty[trace.teacher] += 1
            elif is_refusal(trace.text):
                self.refusals[trace.teacher] += 1
            else:
                self.lengths[trace.teacher].append(len(trace.text))
                words[trace.teacher], calls[trace.teacher] = reads[trace.teacher]
        correct: Dict[str, Dict[str, bool]] = defaultdict(dict)
        for teacher, read in calls.items():
            for observation, call in read.items():
                self.calls[teacher, observation][call or 'not mentioned'] += 1
                label = values.get(observation)
                if label in (1.0, 0.0):
                    said = call in (POSITIVE, UNCERTAIN)
                    self.confusion[teacher, observation][(0 if said else 1) if label else (2 if said else 3)] += 1
                    correct[teacher][observation] = said == bool(label)
        if self.students:
            self._add_students(calls, correct)
        for a, b in combinations(sorted(words), 2):
            self.pair_sum[a, b] += jaccard(words[a], words[b])
            self.pair_count[a, b] += 1
            for observation in OBSERVATIONS:
                i, j = _KAPPA_CLASS[calls[a][observation]], _KAPPA_CLASS[calls[b][observation]]
                self.pair_calls[a, b, observation][3 * i + j] += 1

    def _add_students(self, calls: Dict[str, Dict], correct: Dict[str, Dict[str, bool]]) -> None:
        """Paired outcomes of each student against each teacher on this study (both answered, definite label),
        and the student's agreement with the consensus's present / absent call."""
        teachers = [t for t in calls if t not in self.students and t != CONSENSUS]
        for student in self.students:
            if student not in calls:
                continue
            self.student_studies[student] += 1
            for teacher in teachers:
                for observation, s_ok in correct[student].items():
                    t_ok = correct[teacher].get(observation)
                    if t_ok is not None:
                        self.paired[student, teacher, observation][2 * s_ok + t_ok] += 1
            if CONSENSUS in calls:
                for observation in OBSERVATIONS:
                    said = calls[student][observation] in (POSITIVE, UNCERTAIN)
                    agreed = said == (calls[CONSENSUS][observation] in (POSITIVE, UNCERTAIN))
                    entry = self.consensus_agree[student, observation]
                    entry[0] += agreed
                    entry[1] += 1

    def _students_summary(self, accuracy: Dict, teachers: List[str], agreement: Dict, kappa: Dict) -> Dict:
        """Per student: macro accuracy, agreement with the consensus, and per observation McNemar's exact test
        against the best teacher (the teacher with the highest accuracy on the observation)."""
        out = {}
        for student in self.students:
            if student not in accuracy:     # no answer joined any study
                out[student] = {'studies_answered': 0, 'macro_accuracy': None, 'consensus': None,
                                'versus_best_teacher': {o: None for o in OBSERVATIONS},
                                'beats_best_teacher': {'observations': 0, 'better': 0, 'better_p_below_0.05': 0},
                                'versus_each_teacher_pooled': {},
                                **({'file': self.source_files[student]} if student in self.source_files else {})}
                continue
            per_obs, beats, significant, observed = {}, 0, 0, 0
            for o in OBSERVATIONS:
                ranked = sorted((t for t in teachers if accuracy[t][o]['n']),
                                key=lambda t: (-accuracy[t][o]['accuracy'], t))
                if not ranked or not accuracy[student][o]['n']:
                    per_obs[o] = None
                    continue
                best = ranked[0]
                both_wrong, t_only, s_only, both_right = self.paired.get((student, best, o), (0, 0, 0, 0))
                n = both_wrong + t_only + s_only + both_right
                test = mcnemar_from_counts(s_only, t_only)
                entry = {'best_teacher': best, 'teacher_accuracy': accuracy[best][o]['accuracy'],
                         'student_accuracy': accuracy[student][o]['accuracy'], 'paired_studies': n,
                         'student_accuracy_paired': _ratio(s_only + both_right, n),
                         'teacher_accuracy_paired': _ratio(t_only + both_right, n),
                         'student_only_right': s_only, 'teacher_only_right': t_only,
                         'p_value': test['p_value']}
                entry['student_better'] = bool(n) and s_only > t_only
                per_obs[o] = entry
                observed += 1
                beats += entry['student_better']
                significant += entry['student_better'] and test['p_value'] < 0.05
            pooled = {}
            for t in teachers:
                counts = [sum(self.paired.get((student, t, o), (0, 0, 0, 0))[k] for o in OBSERVATIONS)
                          for k in range(4)]
                test = mcnemar_from_counts(counts[2], counts[1])
                n = sum(counts)
                pooled[t] = {'paired': n, 'student_accuracy': _ratio(counts[2] + counts[3], n),
                             'teacher_accuracy': _ratio(counts[1] + counts[3], n), 'student_only_right': counts[2],
                             'teacher_only_right': counts[1], 'p_value': test['p_value']}
            scored = [accuracy[student][o]['accuracy'] for o in OBSERVATIONS if accuracy[student][o]['n']]
            agree = {o: _ratio(*self.consensus_agree[student, o]) for o in OBSERVATIONS
                     if self.consensus_agree[student, o][1]}
            out[student] = {
                'studies_answered': self.student_studies[student],
                'macro_accuracy': round(sum(scored) / len(scored), 4) if scored else None,
                'consensus': None if CONSENSUS not in agreement else {
                    'word_overlap': agreement[student].get(CONSENSUS),
                    'call_agreement': agree,
                    'kappa': {o: kappa[o][student].get(CONSENSUS) for o in OBSERVATIONS}},
                'versus_best_teacher': per_obs,
                'beats_best_teacher': {'observations': observed, 'better': beats, 'better_p_below_0.05': significant},
                'versus_each_teacher_pooled': pooled,
                **({'file': self.source_files[student]} if student in self.source_files else {})}
        return out

    def summary(self) -> Dict:
        teachers = sorted(self.traces)
        per_teacher = {}
        for teacher in teachers:
            lengths = sorted(self.lengths[teacher])
            per_teacher[teacher] = {
                'traces': self.traces[teacher], 'empty': self.empty[teacher], 'refusals': self.refusals[teacher],
                'answers': len(lengths),
                'length_chars': {
                    'mean': round(sum(lengths) / len(lengths), 1) if lengths else None,
                    'min': lengths[0] if lengths else None, 'max': lengths[-1] if lengths else None,
                    **{f'p{round(q * 100)}': _quantile(lengths, q) for q in QUANTILES}}}
        agreement = {a: {b: None for b in teachers} for a in teachers}
        studies_compared = {a: {b: 0 for b in teachers} for a in teachers}
        for (a, b), count in self.pair_count.items():
            agreement[a][b] = agreement[b][a] = round(self.pair_sum[a, b] / count, 4)
            studies_compared[a][b] = studies_compared[b][a] = count
        accuracy = {t: {o: self._accuracy(t, o) for o in OBSERVATIONS} for t in teachers}
        spread, spread_all = {}, {}
        for o in OBSERVATIONS:
            for target, sources in ((spread, [t for t in teachers if t not in self.students]), (spread_all, teachers)):
                scores = [accuracy[t][o]['accuracy'] for t in sources if accuracy[t][o]['n']]
                target[o] = round(max(scores) - min(scores), 4) if len(scores) > 1 else None
        kappa = {o: {a: {b: None for b in teachers} for a in teachers} for o in OBSERVATIONS}
        for (a, b, o), table in self.pair_calls.items():
            value = cohen_kappa([table[0:3], table[3:6], table[6:9]])
            kappa[o][a][b] = kappa[o][b][a] = None if value is None else round(value, 4)
        known = [o for o in OBSERVATIONS if o in self.observations]
        others = sorted(o for o in self.observations if o not in OBSERVATIONS)
        result = {
            'studies': self.studies,
            'traces_per_study': {str(k): v for k, v in sorted(self.traces_per_study.items())},
            'teachers': per_teacher,
            'observations': {o: self.observations[o] for o in known + others},
            'observations_from': dict(sorted(self.observation_source.items())),
            'agreement': {'measure': 'mean Jaccard similarity of content words (data_prep/text.py)',
                          'mean': agreement, 'studies_compared': studies_compared},
            'labels': {'source': self.labels_source, 'studies_labelled': self.labelled,
                       'studies_unlabelled': self.studies - self.labelled},
            'label_accuracy': accuracy,
            'spread': spread,
            'finding_agreement': {'measure': "Cohen's kappa of the findings reader's calls (positive / uncertain / "
                                             'negative or not mentioned), same studies as the word overlap',
                                  'kappa': kappa},
        }
        if self.students:
            pure = [t for t in teachers if t not in self.students and t != CONSENSUS]
            result['spread_with_students'] = spread_all
            result['students'] = self._students_summary(accuracy, pure, agreement, kappa)
        return result

    def _accuracy(self, teacher: str, observation: str) -> Dict:
        tp, fn, fp, tn = self.confusion.get((teacher, observation), (0, 0, 0, 0))
        n, correct = tp + fn + fp + tn, tp + tn
        return {'n': n, 'correct': correct, 'accuracy': _ratio(correct, n), 'ci95': wilson(correct, n),
                'sensitivity': {'n': tp + fn, 'value': _ratio(tp, tp + fn), 'ci95': wilson(tp, tp + fn)},
                'specificity': {'n': fp + tn, 'value': _ratio(tn, fp + tn), 'ci95': wilson(tn, fp + tn)},
                'calls': {c: self.calls[teacher, observation][c]
                          for c in (POSITIVE, UNCERTAIN, NEGATIVE, 'not mentioned')}}

    def write(self, folder: str, outputs: OutputSet, tally: Tally) -> None:
        summary = self.summary()
        targets = {name: os.path.join(folder, name)
                   for name in ('drift.json', 'drift.md', 'agreement.png', 'accuracy.png')}
        with outputs.open(targets['drift.json']) as f:
            f.write(json.dumps(summary, indent=2, ensure_ascii=False) + '\n')
        with outputs.open(targets['drift.md']) as f:
            f.write(markdown(summary))
        _heatmap(summary, outputs.temp_path(targets['agreement.png']))
        _accuracy_heatmap(summary, outputs.temp_path(targets['accuracy.png']))
        for path in targets.values():
            tally.wrote[path] = 1


def wilson(successes: int, n: int, z: float = Z95) -> Optional[List[float]]:
    """The Wilson score interval of a proportion (None without trials)."""
    if not n:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def _ratio(a: int, b: int) -> Optional[float]:
    return round(a / b, 4) if b else None


def _quantile(values: List[int], q: float):
    """Nearest-rank quantile: the smallest value with at least q of the values at or below it."""
    if not values:
        return None
    rank = max(1, -(-len(values) * q // 1))
    return values[int(rank) - 1]


def _fmt(value) -> str:
    return '–' if value is None else f'{value:.2f}' if isinstance(value, float) else str(value)


def markdown(summary: Dict) -> str:
    teachers = list(summary['teachers'])
    lines = ['# Drift report', '', f'{summary["studies"]} studies; traces per study: ' +
             ', '.join(f'{k}: {v}' for k, v in summary['traces_per_study'].items()), '',
             '## Teachers', '', '| teacher | traces | empty | refusals | answers | mean chars | p5 | p25 | median | '
             'p75 | p95 |', '|---|---|---|---|---|---|---|---|---|---|---|']
    for teacher, stats in summary['teachers'].items():
        length = stats['length_chars']
        lines.append(f'| {teacher} | {stats["traces"]} | {stats["empty"]} | {stats["refusals"]} | {stats["answers"]} | '
                     + ' | '.join(_fmt(length[k]) for k in ('mean', 'p5', 'p25', 'p50', 'p75', 'p95')) + ' |')
    source = ', '.join(f'{k}: {v} studies' for k, v in summary['observations_from'].items())
    lines += ['', '## Observations', '', f'Studies naming each observation (from {source}).', '',
              '| observation | studies |', '|---|---|']
    lines += [f'| {name} | {count} |' for name, count in summary['observations'].items()]
    agreement = summary['agreement']
    lines += ['', '## Teacher agreement', '', f'{agreement["measure"]}, over the studies where both teachers gave a '
              'non-empty, non-refusal answer (1 = same vocabulary, 0 = disjoint). See agreement.png.', '',
              '| | ' + ' | '.join(teachers) + ' |', '|---|' + '---|' * len(teachers)]
    for a in teachers:
        lines.append(f'| {a} | ' + ' | '.join('–' if a == b else _fmt(agreement['mean'][a][b]) for b in teachers) + ' |')
    lines += _label_sections(summary, teachers)
    if summary.get('students'):
        lines += _student_sections(summary)
    return '\n'.join(lines) + '\n'


def _p(value) -> str:
    return '–' if value is None else f'{value:.3g}'


def _student_sections(summary: Dict) -> List[str]:
    lines = ['', '## Students beside their teachers', '',
             'Each --source (a model\'s answers) is read like a teacher\'s trace and appears in the tables above. '
             'Per observation, the student is paired with the best teacher (highest accuracy on that observation) '
             'on the studies both answered with a definite label; McNemar\'s exact test on the discordant studies '
             '(two-sided, binomial). "spread with students": best minus worst over teachers and students.', '']
    for name, s in summary['students'].items():
        f = s.get('file')
        joined = f' ({f["file"]}: {f["rows"]} rows, {f["joined"]} joined, {f["unknown_ids"]} ids of no study' + \
            (f', e.g. {f["unknown_examples"]}' if f['unknown_ids'] else '') + ')' if f else ''
        b = s['beats_best_teacher']
        lines += [f'### {name}', '', f'{s["studies_answered"]} studies answered{joined}; macro accuracy '
                  f'{_fmt(s["macro_accuracy"])}; better than the best teacher on {b["better"]} of {b["observations"]} '
                  f'observations, with p < 0.05 on {b["better_p_below_0.05"]}.', '',
                  '| observation | best teacher | teacher acc. | student acc. | paired studies | student only right '
                  '| teacher only right | McNemar p | spread (teachers) | spread with students |',
                  '|---|---|---|---|---|---|---|---|---|---|']
        for o, e in s['versus_best_teacher'].items():
            if e is None:
                continue
            lines.append(f'| {o} | {e["best_teacher"]} | {_fmt(e["teacher_accuracy"])} | {_fmt(e["student_accuracy"])} '
                         f'| {e["paired_studies"]} | {e["student_only_right"]} | {e["teacher_only_right"]} | '
                         f'{_p(e["p_value"])} | {_fmt(summary["spread"][o])} | '
                         f'{_fmt(summary["spread_with_students"][o])} |')
        if s['versus_each_teacher_pooled']:
            lines += ['', 'Against each teacher, pooled over observations (study x observation pairs; not independent '
                      'within a study):', '', '| teacher | pairs | student acc. | teacher acc. | McNemar p |',
                      '|---|---|---|---|---|']
            lines += [f'| {t} | {e["paired"]} | {_fmt(e["student_accuracy"])} | {_fmt(e["teacher_accuracy"])} | '
                      f'{_p(e["p_value"])} |' for t, e in s['versus_each_teacher_pooled'].items()]
        if s['consensus']:
            c = s['consensus']
            lines += ['', f'Agreement with the consensus: word overlap {_fmt(c["word_overlap"])}; present/absent call '
                      'agreement and Cohen\'s kappa per observation:', '', '| observation | agreement | kappa |',
                      '|---|---|---|']
            lines += [f'| {o} | {_fmt(a)} | {_fmt(c["kappa"][o])} |' for o, a in c['call_agreement'].items()]
        lines.append('')
    return lines


def _ci(stat) -> str:
    return '–' if stat['ci95'] is None else f'{stat["value"]:.2f} [{stat["ci95"][0]:.2f}, {stat["ci95"][1]:.2f}]'


def _label_sections(summary: Dict, teachers: List[str]) -> List[str]:
    labels, accuracy = summary['labels'], summary['label_accuracy']
    lines = ['', '## Findings against the study labels', '',
             f'Labels from {labels["source"]}: {labels["studies_labelled"]} studies labelled, '
             f'{labels["studies_unlabelled"]} without labels. Each trace is read by the findings reader '
             '(clinical_text/findings.py); a positive or uncertain call counts as positive, a negative call or none '
             'as negative. Accuracy over the studies with a definite label (1.0 / 0.0); spread = best minus worst '
             'teacher. See accuracy.png.', '',
             '| observation | ' + ' | '.join(teachers) + ' | spread |', '|---|' + '---|' * (len(teachers) + 1)]
    for o in OBSERVATIONS:
        cells = [f'{accuracy[t][o]["accuracy"]:.2f} (n={accuracy[t][o]["n"]})' if accuracy[t][o]['n'] else '–'
                 for t in teachers]
        lines.append(f'| {o} | ' + ' | '.join(cells) + f' | {_fmt(summary["spread"][o])} |')
    lines += ['', 'Per teacher and observation, with 95% Wilson intervals (studies with a definite label only):', '',
              '| teacher | observation | n | accuracy | sensitivity (n) | specificity (n) | calls +/?/-/none |',
              '|---|---|---|---|---|---|---|']
    for t in teachers:
        for o in OBSERVATIONS:
            a = accuracy[t][o]
            if not a['n']:
                continue
            calls = '/'.join(str(v) for v in a['calls'].values())
            lines.append(f'| {t} | {o} | {a["n"]} | {_ci({"value": a["accuracy"], "ci95": a["ci95"]})} | '
                         f'{_ci(a["sensitivity"])} ({a["sensitivity"]["n"]}) | {_ci(a["specificity"])} '
                         f'({a["specificity"]["n"]}) | {calls} |')
    kappa = summary['finding_agreement']['kappa']
    lines += ['', '## Teacher agreement on findings', '', summary['finding_agreement']['measure'] +
              '. Per observation: the mean, lowest and highest kappa over teacher pairs, next to the mean word '
              'overlap of the same pairs.', '', '| observation | mean kappa | lowest pair | highest pair |',
              '|---|---|---|---|']
    pairs = list(combinations(teachers, 2))
    for o in OBSERVATIONS:
        scored = [(kappa[o][a][b], a, b) for a, b in pairs if kappa[o][a][b] is not None]
        if not scored:
            lines.append(f'| {o} | – | – | – |')
            continue
        low, high = min(scored), max(scored)
        lines.append(f'| {o} | {sum(k for k, _, _ in scored) / len(scored):.2f} | {low[1]}–{low[2]} {low[0]:.2f} | '
                     f'{high[1]}–{high[2]} {high[0]:.2f} |')
    overlap = [summary['agreement']['mean'][a][b] for a, b in pairs if summary['agreement']['mean'][a][b] is not None]
    if overlap:
        lines += ['', f'Mean word overlap over the same pairs: {sum(overlap) / len(overlap):.2f}.']
    return lines


def _heatmap(summary: Dict, path: str) -> None:
    import numpy as np
    teachers = list(summary['teachers'])
    mean = summary['agreement']['mean']
    matrix = np.array([[np.nan if a == b or mean[a][b] is None else mean[a][b] for b in teachers] for a in teachers],
                      dtype=float)
    size = 1.2 + 0.8 * max(len(teachers), 2)
    _write_heatmap(path, matrix, teachers, teachers, figsize=(size + 1.5, size), fontsize=8, aspect=None,
                   label='mean Jaccard similarity of content words',
                   title=f'Teacher agreement over {summary["studies"]} studies')


def _accuracy_heatmap(summary: Dict, path: str) -> None:
    import numpy as np
    teachers = list(summary['teachers'])
    accuracy = summary['label_accuracy']
    matrix = np.array([[accuracy[t][o]['accuracy'] if accuracy[t][o]['n'] else np.nan for o in OBSERVATIONS]
                       for t in teachers], dtype=float).reshape(len(teachers), len(OBSERVATIONS))
    _write_heatmap(path, matrix, teachers, OBSERVATIONS,
                   figsize=(2 + 0.75 * len(OBSERVATIONS), 1.8 + 0.45 * max(len(teachers), 2)), fontsize=7,
                   aspect='auto', label='accuracy against the study labels',
                   title=f'Teacher accuracy per observation ({summary["labels"]["studies_labelled"]} labelled studies)')


def _write_heatmap(path, matrix, rows, columns, figsize, fontsize, aspect, label, title) -> None:
    """A [rows x columns] matrix of values in [0, 1] as an annotated PNG; NaN cells stay blank."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=figsize)
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap='viridis', aspect=aspect)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha='right')
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if not np.isnan(matrix[i, j]):
                ax.text(j, i, f'{matrix[i, j]:.2f}', ha='center', va='center',
                        color='black' if matrix[i, j] > 0.5 else 'white', fontsize=fontsize)
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format='png', dpi=100, metadata={'Software': None})
    plt.close(fig)
