"""Clinical efficacy of generated reports, offline: the generated reports are labelled by the project's own
findings reader (``clinical_text.findings``, CheXpert conventions; NOT CheXbert) over the 14 CheXpert
observations, and scored against the reference labels: the reference reports read by the same reader, or labels
given with ``report-gen --reference-labels FILE`` (hand labels, MIMIC-CXR's CheXpert labels).

- Beside every CE table where labels are given (and CheXbert's where its weights are present): the reader's
  agreement with them on the reference reports, per observation: present-vs-not agreement and Cohen's kappa (and
  the 4-class agreement where the labels have classes), so that the labeller's error is read next to the F1.

- Positive = the reader calls the observation ``positive``. ``negative`` and not mentioned are negative.
  ``uncertain`` is counted both ways, in two separate sets of figures: ``uncertain_as_positive`` and
  ``uncertain_as_negative`` (the same policy for the generated and the reference report).
- Per observation: TP, FP, FN, TN over reports; precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = 2PR / (P + R); a 0/0 is 0 (as scikit-learn's ``zero_division=0``, which CheXbert's scripts use).
- Micro: P, R, F1 from TP, FP, FN summed over the observations of the set. Macro: the mean over the set's
  observations of the per-observation P, R and F1. Sets: all 14, and the common 5 (Atelectasis, Cardiomegaly,
  Consolidation, Edema, Pleural Effusion).
- Intervals: percentile bootstrap over reports (reports resampled with replacement, 95%); ``compare`` resamples
  the same reports for both models (paired bootstrap) and gives the difference B - A with its interval and a
  two-sided bootstrap p-value.
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from clinical_text import OBSERVATIONS, POSITIVE, UNCERTAIN, reader
from clinical_text.stats import binary_kappa

from .metrics import DEFAULT_N_BOOT, DEFAULT_SEED, bootstrap_p_value, bootstrap_weights, interval

LABELLER = "labelled by the project's findings reader (clinical_text, CheXpert conventions; not CheXbert)"
GIVEN = "generated reports labelled by the project's findings reader, references by the given labels"
COMMON_5 = ('Atelectasis', 'Cardiomegaly', 'Consolidation', 'Edema', 'Pleural Effusion')
SETS = {'14': tuple(OBSERVATIONS), '5': COMMON_5}
POLICIES = ('uncertain_as_positive', 'uncertain_as_negative')
STATS = ('micro_precision', 'micro_recall', 'micro_f1', 'macro_precision', 'macro_recall', 'macro_f1')


def label_reports(texts: Sequence[Optional[str]], vocabulary=None) -> List[Dict[str, Optional[str]]]:
    """Each text's reader call per observation (positive / negative / uncertain / None)."""
    read = reader(vocabulary).read
    return [dict(read(text or '')) for text in texts]


def binary(labels: Sequence[Mapping[str, Optional[str]]], policy: str) -> np.ndarray:
    """``(reports, 14)`` 0/1 matrix in OBSERVATIONS order under ``policy``."""
    if policy not in POLICIES:
        raise ValueError(f'unknown uncertainty policy {policy!r}: one of {POLICIES}')
    hits = (POSITIVE, UNCERTAIN) if policy == 'uncertain_as_positive' else (POSITIVE,)
    return np.array([[1 if row.get(obs) in hits else 0 for obs in OBSERVATIONS] for row in labels],
                    dtype=np.int64).reshape(len(labels), len(OBSERVATIONS))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> Dict[str, np.ndarray]:
    """Counts with observations on the last axis -> the six statistics (leading axes kept: replicates)."""
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * p * r, p + r)
    stp, sfp, sfn = tp.sum(-1), fp.sum(-1), fn.sum(-1)
    mp, mr = _ratio(stp, stp + sfp), _ratio(stp, stp + sfn)
    return {'micro_precision': mp, 'micro_recall': mr, 'micro_f1': _ratio(2 * mp * mr, mp + mr),
            'macro_precision': p.mean(-1), 'macro_recall': r.mean(-1), 'macro_f1': f1.mean(-1)}


def _counts(hyp: np.ndarray, ref: np.ndarray) -> Dict[str, np.ndarray]:
    return {'tp': hyp & ref, 'fp': hyp & (1 - ref), 'fn': (1 - hyp) & ref, 'tn': (1 - hyp) & (1 - ref)}


def _set_scores(counts: Dict[str, np.ndarray], weights: Optional[np.ndarray], columns: List[int]):
    """Totals (weights None) or bootstrap replicates (weights @ per-report counts) of the set's statistics."""
    def total(key):
        c = counts[key][:, columns]
        return c.sum(0) if weights is None else weights @ c
    return _scores(total('tp'), total('fp'), total('fn'))


def efficacy(hyp_labels: Sequence[Mapping], ref_labels: Sequence[Mapping], n_boot: int = DEFAULT_N_BOOT,
             seed: int = DEFAULT_SEED, labeller: str = LABELLER) -> Dict[str, Any]:
    """Clinical efficacy of generated labels against reference labels (``hyp_labels[i]`` answers
    ``ref_labels[i]``), under both uncertainty policies, with bootstrap intervals."""
    if len(hyp_labels) != len(ref_labels) or not hyp_labels:
        raise ValueError(f'need the same, non-zero number of generated and reference reports: '
                         f'{len(hyp_labels)} vs {len(ref_labels)}')
    weights = bootstrap_weights(len(hyp_labels), n_boot, seed) if n_boot else None
    result: Dict[str, Any] = {'labeller': labeller, 'n': len(hyp_labels), 'n_boot': n_boot, 'seed': seed,
                              'sets': {k: list(v) for k, v in SETS.items()}}
    for policy in POLICIES:
        counts = _counts(binary(hyp_labels, policy), binary(ref_labels, policy))
        block: Dict[str, Any] = {}
        for name, observations in SETS.items():
            columns = [OBSERVATIONS.index(o) for o in observations]
            totals = _set_scores(counts, None, columns)
            block[name] = {stat: {'value': float(totals[stat])} for stat in STATS}
            if weights is not None:
                replicates = _set_scores(counts, weights, columns)
                for stat in STATS:
                    block[name][stat]['ci'] = list(interval(replicates[stat]))
        per_obs = {}
        for j, obs in enumerate(OBSERVATIONS):
            tp, fp, fn, tn = (int(counts[k][:, j].sum()) for k in ('tp', 'fp', 'fn', 'tn'))
            s = _scores(np.array([tp]), np.array([fp]), np.array([fn]))
            per_obs[obs] = {'tp': tp, 'fp': fp, 'fn': fn, 'tn': tn, 'reference_positive': tp + fn,
                            'precision': float(s['macro_precision']), 'recall': float(s['macro_recall']),
                            'f1': float(s['macro_f1'])}
        block['observations'] = per_obs
        result[policy] = block
    return result


def agreement(read: Sequence[Mapping], given: Sequence[Mapping], binary_only: bool = False) -> Dict[str, Any]:
    """The reader's calls ``read`` against labels ``given`` for the same texts, per observation: present-vs-not
    agreement (positive or uncertain = present; not mentioned = absent) and Cohen's kappa of it (None when one
    rater has a single class), the 4-class agreement (unless ``binary_only``: a labeller without classes), and
    their means over the observations the labels hold present at least once."""
    if len(read) != len(given) or not read:
        raise ValueError(f'need the same, non-zero number of read and given labels: {len(read)} vs {len(given)}')
    rows: Dict[str, Any] = {}
    for obs in OBSERVATIONS:
        pairs = [(r.get(obs) in (POSITIVE, UNCERTAIN), g.get(obs) in (POSITIVE, UNCERTAIN))
                 for r, g in zip(read, given)]
        row = {'n': len(pairs), 'given_present': sum(g for _, g in pairs),
               'present_agreement': sum(a == b for a, b in pairs) / len(pairs), 'kappa': binary_kappa(pairs)}
        if not binary_only:
            row['four_class_agreement'] = sum(r.get(obs) == g.get(obs) for r, g in zip(read, given)) / len(pairs)
        rows[obs] = row
    present = [row for row in rows.values() if row['given_present']]
    kappas = [row['kappa'] for row in present if row['kappa'] is not None]
    macro = {'present_agreement': float(np.mean([row['present_agreement'] for row in present])) if present else None,
             'kappa': float(np.mean(kappas)) if kappas else None}
    if not binary_only and present:
        macro['four_class_agreement'] = float(np.mean([row['four_class_agreement'] for row in present]))
    return {'observations': rows, 'macro': macro, 'n': len(read)}


def agreement_markdown_lines(title: str, block: Mapping) -> List[str]:
    """An agreement block as Markdown: the labeller's error, to be read next to the F1 it affects."""
    four = 'four_class_agreement' in block['macro']
    lines = [f'### {title}', '', f'{block["n"]} reference reports; present = positive or uncertain; means over the '
             f'observations the labels hold present at least once.', '',
             '| observation | given present | present-vs-not agreement | kappa |' +
             (' 4-class agreement |' if four else ''),
             '|---|---|---|---|' + ('---|' if four else '')]

    def number(value):
        return '-' if value is None else f'{value:.3f}'
    for obs, row in block['observations'].items():
        cells = [str(row['given_present']), number(row['present_agreement']), number(row['kappa'])]
        cells += [number(row['four_class_agreement'])] if four else []
        lines.append(f'| {obs} | ' + ' | '.join(cells) + ' |')
    macro = block['macro']
    lines.append(f'| **mean** | | {number(macro["present_agreement"])} | {number(macro["kappa"])} |' +
                 (f' {number(macro["four_class_agreement"])} |' if four else ''))
    return lines


def compare_efficacy(a_hyp: Sequence[Mapping], b_hyp: Sequence[Mapping], ref: Sequence[Mapping],
                     n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> Dict[str, Any]:
    """Paired bootstrap of B - A for each statistic, set and policy: the same resampled reports for both."""
    if not (len(a_hyp) == len(b_hyp) == len(ref)) or not ref:
        raise ValueError(f'paired comparison needs the same, non-zero number of reports: '
                         f'{len(a_hyp)}, {len(b_hyp)}, {len(ref)}')
    weights = bootstrap_weights(len(ref), n_boot, seed)
    result: Dict[str, Any] = {'labeller': LABELLER, 'n': len(ref), 'n_boot': n_boot, 'seed': seed}
    for policy in POLICIES:
        reference = binary(ref, policy)
        a_counts = _counts(binary(a_hyp, policy), reference)
        b_counts = _counts(binary(b_hyp, policy), reference)
        block = {}
        for name, observations in SETS.items():
            columns = [OBSERVATIONS.index(o) for o in observations]
            a_tot, b_tot = _set_scores(a_counts, None, columns), _set_scores(b_counts, None, columns)
            a_rep, b_rep = _set_scores(a_counts, weights, columns), _set_scores(b_counts, weights, columns)
            block[name] = {}
            for stat in STATS:
                diff = b_rep[stat] - a_rep[stat]
                low, high = interval(diff)
                block[name][stat] = {'a': float(a_tot[stat]), 'b': float(b_tot[stat]),
                                     'difference': float(b_tot[stat] - a_tot[stat]), 'ci_low': low,
                                     'ci_high': high, 'p_value': bootstrap_p_value(diff)}
        result[policy] = block
    return result


def _fmt_ci(entry: Mapping) -> str:
    ci = entry.get('ci')
    return f'{entry["value"]:.3f}' + (f' [{ci[0]:.3f}, {ci[1]:.3f}]' if ci else '')


def markdown_lines(result: Mapping) -> List[str]:
    """The efficacy block of a report-generation result as Markdown lines."""
    lines = [f'## Clinical efficacy, {result["labeller"]}', '',
             f'{result["n"]} reports; positive = present; uncertain counted both ways (as positive, and as '
             f'negative); 95% bootstrap intervals over reports ({result["n_boot"]} resamples, seed {result["seed"]}).',
             '', '| uncertain as | set | micro P | micro R | micro F1 | macro P | macro R | macro F1 |',
             '|---|---|---|---|---|---|---|---|']
    for policy in POLICIES:
        for name in SETS:
            cells = ' | '.join(_fmt_ci(result[policy][name][stat]) for stat in STATS)
            lines.append(f'| {policy.rsplit("_", 1)[-1]} | {name} | {cells} |')
    for policy in POLICIES:
        lines += ['', f'### Per observation (uncertain as {policy.rsplit("_", 1)[-1]})', '',
                  '| observation | reference positive | TP | FP | FN | TN | precision | recall | F1 |',
                  '|---|---|---|---|---|---|---|---|---|']
        for obs, row in result[policy]['observations'].items():
            lines.append(f'| {obs} | {row["reference_positive"]} | {row["tp"]} | {row["fp"]} | {row["fn"]} | '
                         f'{row["tn"]} | {row["precision"]:.3f} | {row["recall"]:.3f} | {row["f1"]:.3f} |')
    return lines


def compare_markdown_lines(a: str, b: str, result: Mapping) -> List[str]:
    lines = [f'# Clinical efficacy: {b} vs {a}, {result["labeller"]}', '',
             f'{result["n"]} reports; difference = B - A; paired bootstrap over reports ({result["n_boot"]} '
             f'resamples, seed {result["seed"]}); uncertain counted both ways.', '',
             '| uncertain as | set | statistic | A | B | B - A [95% CI] | p |', '|---|---|---|---|---|---|---|']
    for policy in POLICIES:
        for name in SETS:
            for stat in STATS:
                e = result[policy][name][stat]
                lines.append(f'| {policy.rsplit("_", 1)[-1]} | {name} | {stat} | {e["a"]:.3f} | {e["b"]:.3f} | '
                             f'{e["difference"]:+.3f} [{e["ci_low"]:+.3f}, {e["ci_high"]:+.3f}] | '
                             f'{e["p_value"]:.3g} |')
    return lines
