"""Chain-of-thought consistency: do a model's sampled answers agree with each other, and with their own reasoning?

- Self-consistency (per item, over its N sampled answers, each parsed to a class; an unparsed answer is the
  category ``unparsed``): majority agreement = (count of the most common class) / N, averaged over items;
  Fleiss' kappa per observation over the items with at least two samples.
- Reasoning-answer consistency: the findings reader (``clinical_text.findings``) reads the reasoning (the text
  before the last answer marker, else the whole trace); a trace is inconsistent when it rules the item's
  observation out ("negative") while its final answer presupposes it (``worsening``, ``present``), or affirms it
  ("positive") while the answer is ``absent``.
"""
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

from clinical_text.findings import read_findings
from datafiles import field_error

from .items import Item, _rows
from .parser import _MARKER, _clean, parse_answer

UNPARSED = 'unparsed'
PRESUPPOSE = {'worsening', 'present', 'positive', 'yes'}
DENY = {'absent', 'negative', 'no'}


def majority_agreement(labels: Sequence[Optional[str]]) -> float:
    """Share of the samples that give the item's most common answer (``None`` counts as one class)."""
    if not labels:
        raise ValueError('no samples')
    return Counter(UNPARSED if x is None else x for x in labels).most_common(1)[0][1] / len(labels)


def fleiss_kappa(counts: Sequence[Dict[str, int]]) -> Optional[float]:
    """Fleiss' kappa from per-item category counts: P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1)),
    P_bar = mean P_i, p_j = sum_i n_ij / sum_i n_i, P_e = sum_j p_j^2, kappa = (P_bar - P_e) / (1 - P_e).
    Items with fewer than two ratings are skipped; ``None`` when no item is left or P_e = 1."""
    rows = [c for c in counts if sum(c.values()) >= 2]
    if not rows:
        return None
    p_bar = sum((sum(v * v for v in c.values()) - sum(c.values())) /
                (sum(c.values()) * (sum(c.values()) - 1)) for c in rows) / len(rows)
    total = sum(sum(c.values()) for c in rows)
    cats = defaultdict(int)
    for c in rows:
        for k, v in c.items():
            cats[k] += v
    p_e = sum((v / total) ** 2 for v in cats.values())
    if p_e >= 1:
        return None
    return (p_bar - p_e) / (1 - p_e)


def reasoning_text(answer: str) -> str:
    text = _clean(answer)
    markers = list(_MARKER.finditer(text))
    return text[:markers[-1].start()] if markers else text


def reasoning_verdict(answer: Optional[str], observation: str, label: Optional[str]) -> Optional[str]:
    """'consistent', 'inconsistent', or None (the reasoning says nothing about the observation, or no label)."""
    if not answer or label is None:
        return None
    findings = read_findings(reasoning_text(answer))
    stated = next((v for k, v in findings.items() if k.lower() == observation.lower()), None)
    if stated is None or stated == 'uncertain':
        return None
    if (stated == 'negative' and label.lower() in PRESUPPOSE) or (stated == 'positive' and label.lower() in DENY):
        return 'inconsistent'
    return 'consistent'


def read_samples(ids: List[str], paths: Sequence[str]) -> Dict[str, List[Optional[str]]]:
    """item id -> its answers, from {"id", "response"|"answer"} rows (several rows per id = several samples)."""
    known = set(ids)
    out: Dict[str, List[Optional[str]]] = {i: [] for i in ids}
    for path in paths:
        for source in _rows(path):
            row, where = source.row, source.where
            if 'id' not in row:
                raise field_error(where, 'id', 'missing (answers for consistency need an item id per row)',
                                  'missing field')
            item_id = str(row['id'])
            if item_id not in known:
                raise field_error(where, 'id', f'{item_id!r} is not an item of the dataset', 'unknown item')
            field = 'answer' if 'answer' in row else 'response'
            answer = row.get(field)
            if answer is not None and not isinstance(answer, str):
                raise field_error(where, field, f'expected text, found {type(answer).__name__}', 'wrong type')
            out[item_id].append(answer)
    return out


def consistency(items: Sequence[Item], samples: Dict[str, List[Optional[str]]], label_set, name: str) -> Dict:
    per_obs = defaultdict(list)
    rows, inconsistent = [], []
    checked = bad = 0
    for item in items:
        answers = samples.get(item.id) or []
        labels = [parse_answer(a, item.classes, item.observation, label_set).label for a in answers]
        verdicts = [reasoning_verdict(a, item.observation, l) for a, l in zip(answers, labels)]
        row = {'id': item.id, 'observation': item.observation, 'labels': labels, 'verdicts': verdicts,
               'majority_agreement': majority_agreement(labels) if labels else None}
        rows.append(row)
        if labels:
            per_obs[item.observation].append(row)
        for k, v in enumerate(verdicts):
            if v is not None:
                checked += 1
            if v == 'inconsistent':
                bad += 1
                inconsistent.append({'id': item.id, 'sample': k, 'observation': item.observation,
                                     'answer_label': labels[k], 'answer': answers[k]})
    observations = {}
    for obs, group in per_obs.items():
        counts = [Counter(UNPARSED if x is None else x for x in r['labels']) for r in group]
        observations[obs] = {'items': len(group),
                             'majority_agreement': sum(r['majority_agreement'] for r in group) / len(group),
                             'fleiss_kappa': fleiss_kappa(counts)}
    scored = [r for r in rows if r['majority_agreement'] is not None]
    return {'name': name, 'items': len(items), 'items_with_samples': len(scored),
            'samples': sum(len(r['labels']) for r in rows),
            'majority_agreement': sum(r['majority_agreement'] for r in scored) / len(scored) if scored else None,
            'observations': observations,
            'reasoning_answer': {'checked': checked, 'inconsistent': bad,
                                 'consistency_rate': (checked - bad) / checked if checked else None},
            'inconsistent_items': inconsistent, 'per_item': rows}


def markdown(result: Dict) -> str:
    f = lambda v: '-' if v is None else f'{v:.3f}'
    lines = [f'# Chain-of-thought consistency: {result["name"]}', '',
             f'{result["items_with_samples"]} items, {result["samples"]} samples; majority agreement '
             f'{f(result["majority_agreement"])}; reasoning-answer consistency '
             f'{f(result["reasoning_answer"]["consistency_rate"])} ({result["reasoning_answer"]["inconsistent"]} '
             f'inconsistent of {result["reasoning_answer"]["checked"]} checked)', '',
             '| observation | items | majority agreement | Fleiss kappa |', '|---|---|---|---|']
    lines += [f'| {o} | {v["items"]} | {f(v["majority_agreement"])} | {f(v["fleiss_kappa"])} |'
              for o, v in sorted(result['observations'].items())]
    if result['inconsistent_items']:
        lines += ['', '## Inconsistent traces', '']
        lines += [f'- {r["id"]} (sample {r["sample"]}): reasoning contradicts answer on {r["observation"]}: '
                  f'{r["answer_label"]}' for r in result['inconsistent_items']]
    return '\n'.join(lines) + '\n'


def sample_command_args(temperature: float, seed: int, extra: str = '') -> str:
    """swift infer arguments for one sample (later --temperature overrides run_swift_infer's greedy default)."""
    return f'{extra} --temperature {temperature} --seed {seed}'.strip()


def split_trace(text: str):
    """(reasoning, final answer) of a free-text trace: split at the last answer marker; no marker -> (text, None)."""
    low = _clean(text)
    markers = list(_MARKER.finditer(low))
    if not markers:
        return low, None
    return low[:markers[-1].start()], low[markers[-1].end():]


def trace_verdict(text: str) -> Dict:
    """A CXR-MAX trace: findings the reasoning states vs the findings its final answer (impression) states.
    Inconsistent observations: positive in one part and negative in the other."""
    reasoning, answer = split_trace(text)
    if answer is None or not answer.strip():
        return {'verdict': None, 'conflicts': []}
    r, a = read_findings(reasoning), read_findings(answer)
    conflicts = sorted(o for o in r if o != 'No Finding' and {r[o], a.get(o)} == {'positive', 'negative'})
    compared = [o for o in r if o != 'No Finding' and r[o] in ('positive', 'negative')
                and a.get(o) in ('positive', 'negative')]
    if not compared:
        return {'verdict': None, 'conflicts': []}
    return {'verdict': 'inconsistent' if conflicts else 'consistent', 'conflicts': conflicts}


def teacher_consistency(studies) -> Dict:
    """Per teacher: reasoning-answer consistency of its traces; across teachers: per observation, the agreement
    of the teachers' calls on a study (each teacher one rater, calls positive / negative / uncertain / none):
    majority agreement and Fleiss' kappa."""
    teachers = defaultdict(lambda: {'traces': 0, 'checked': 0, 'inconsistent': 0, 'inconsistent_items': []})
    calls = defaultdict(list)    # observation -> per-study Counter of the teachers' calls
    for study in studies:
        per_obs = defaultdict(Counter)
        for trace in study.traces:
            t = teachers[trace.teacher]
            t['traces'] += 1
            v = trace_verdict(trace.text)
            if v['verdict'] is not None:
                t['checked'] += 1
            if v['verdict'] == 'inconsistent':
                t['inconsistent'] += 1
                t['inconsistent_items'].append({'study': study.head.study_id, 'where': study.where,
                                                'conflicts': v['conflicts']})
            for obs, call in read_findings(trace.text).items():
                per_obs[obs][call or 'none'] += 1
        if len(study.traces) >= 2:
            for obs, counter in per_obs.items():
                calls[obs].append(counter)
    for t in teachers.values():
        t['consistency_rate'] = (t['checked'] - t['inconsistent']) / t['checked'] if t['checked'] else None
    agreement = {obs: {'studies': len(c),
                       'majority_agreement': sum(max(x.values()) / sum(x.values()) for x in c) / len(c),
                       'fleiss_kappa': fleiss_kappa(c)} for obs, c in sorted(calls.items()) if c}
    return {'teachers': dict(sorted(teachers.items())), 'between_teachers': agreement}


def teacher_markdown(result: Dict) -> str:
    f = lambda v: '-' if v is None else f'{v:.3f}'
    lines = ['# Chain-of-thought consistency: CXR-MAX teachers', '',
             '| teacher | traces | checked | inconsistent | reasoning-answer consistency |', '|---|---|---|---|---|']
    lines += [f'| {n} | {t["traces"]} | {t["checked"]} | {t["inconsistent"]} | {f(t["consistency_rate"])} |'
              for n, t in result['teachers'].items()]
    lines += ['', '## Agreement between teachers (per observation)', '',
              '| observation | studies | majority agreement | Fleiss kappa |', '|---|---|---|---|']
    lines += [f'| {o} | {v["studies"]} | {f(v["majority_agreement"])} | {f(v["fleiss_kappa"])} |'
              for o, v in result['between_teachers'].items()]
    return '\n'.join(lines) + '\n'
