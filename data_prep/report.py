"""The drift report: how the teachers differ, measured over the whole dataset.

Per teacher: traces, empty ones, refusals and the length distribution (characters) of the rest.
Per observation: studies whose labels (or, without labels, whose question) name it.
Teacher-to-teacher agreement: mean Jaccard similarity of content words (text.py) over the studies
where both teachers gave a non-empty, non-refusal trace. Written as drift.md, drift.json and a
heatmap, agreement.png.
"""
import json
import os
from array import array
from collections import Counter, defaultdict
from itertools import combinations
from typing import Dict, List

from .outputs import OutputSet, Tally
from .records import Study
from .text import OBSERVATIONS, content_words, is_empty, is_refusal, jaccard, observations_in

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


class DriftReport:

    def __init__(self):
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

    def add(self, study: Study) -> None:
        self.studies += 1
        self.traces_per_study[len(study.traces)] += 1
        labels = study.head.labels
        names = labels if labels else observations_in(study.head.question)
        self.observation_source['labels' if labels else 'question'] += 1
        self.observations.update(set(names))
        words = {}
        for trace in study.traces:
            self.traces[trace.teacher] += 1
            if is_empty(trace.text):
                self.empty[trace.teacher] += 1
            elif is_refusal(trace.text):
                self.refusals[trace.teacher] += 1
            else:
                self.lengths[trace.teacher].append(len(trace.text))
                words[trace.teacher] = content_words(trace.text)
        for a, b in combinations(sorted(words), 2):
            self.pair_sum[a, b] += jaccard(words[a], words[b])
            self.pair_count[a, b] += 1

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
        known = [o for o in OBSERVATIONS if o in self.observations]
        others = sorted(o for o in self.observations if o not in OBSERVATIONS)
        return {
            'studies': self.studies,
            'traces_per_study': {str(k): v for k, v in sorted(self.traces_per_study.items())},
            'teachers': per_teacher,
            'observations': {o: self.observations[o] for o in known + others},
            'observations_from': dict(sorted(self.observation_source.items())),
            'agreement': {'measure': 'mean Jaccard similarity of content words (data_prep/text.py)',
                          'mean': agreement, 'studies_compared': studies_compared},
        }

    def write(self, folder: str, outputs: OutputSet, tally: Tally) -> None:
        summary = self.summary()
        targets = {name: os.path.join(folder, name) for name in ('drift.json', 'drift.md', 'agreement.png')}
        with outputs.open(targets['drift.json']) as f:
            f.write(json.dumps(summary, indent=2, ensure_ascii=False) + '\n')
        with outputs.open(targets['drift.md']) as f:
            f.write(markdown(summary))
        _heatmap(summary, outputs.temp_path(targets['agreement.png']))
        for name, path in targets.items():
            tally.wrote[path] = {'drift.json': 1, 'drift.md': 1, 'agreement.png': 1}[name]


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
    return '\n'.join(lines) + '\n'


def _heatmap(summary: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    teachers = list(summary['teachers'])
    matrix = np.array([[np.nan if a == b or summary['agreement']['mean'][a][b] is None else
                        summary['agreement']['mean'][a][b] for b in teachers] for a in teachers], dtype=float)
    size = 1.2 + 0.8 * max(len(teachers), 2)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap='viridis')
    ax.set_xticks(range(len(teachers)), teachers, rotation=45, ha='right')
    ax.set_yticks(range(len(teachers)), teachers)
    for i in range(len(teachers)):
        for j in range(len(teachers)):
            if not np.isnan(matrix[i, j]):
                ax.text(j, i, f'{matrix[i, j]:.2f}', ha='center', va='center',
                        color='black' if matrix[i, j] > 0.5 else 'white', fontsize=8)
    fig.colorbar(image, ax=ax, label='mean Jaccard similarity of content words')
    ax.set_title(f'Teacher agreement over {summary["studies"]} studies')
    fig.tight_layout()
    fig.savefig(path, format='png', dpi=100, metadata={'Software': None})
    plt.close(fig)
