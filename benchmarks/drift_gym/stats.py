"""The page's statistics: accuracy over (seed, study, finding) arrays, study bootstrap, paired differences.

An arm's outcome is a 0/1 array ``[seeds, studies, findings]`` (1: right). Every study is asked about every
finding, so the macro accuracy (mean over findings of the per-finding accuracy) is the array's mean. Intervals
resample studies (the same resample for every arm and seed, so differences are paired); the spread over seeds is
the per-seed macro accuracy's minimum and maximum.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Summary:
    mean: float
    low: float
    high: float
    per_seed: Tuple[float, ...]
    per_finding: Tuple[Tuple[float, float, float], ...]   # (mean, low, high) per finding


def study_resamples(n_studies: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n_studies]`` study indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n_studies, size=(n_boot, n_studies))


def _interval(values: np.ndarray) -> Tuple[float, float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def summarise(outcome: np.ndarray, resamples: np.ndarray) -> Summary:
    """Mean accuracy over seeds, studies and findings, its 95% study-bootstrap interval, per seed, per finding."""
    outcome = np.asarray(outcome, dtype=float)
    per_study = outcome.mean(axis=(0, 2))                         # [studies]
    boot = per_study[resamples].mean(axis=1)
    per_finding = []
    for f in range(outcome.shape[2]):
        column = outcome[:, :, f].mean(axis=0)
        per_finding.append((float(column.mean()), *_interval(column[resamples].mean(axis=1))))
    return Summary(float(outcome.mean()), *_interval(boot), tuple(float(v) for v in outcome.mean(axis=(1, 2))),
                   tuple(per_finding))


@dataclass(frozen=True)
class Difference:
    mean: float
    low: float
    high: float
    p_value: float
    per_seed: Tuple[float, ...]


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: np.ndarray) -> Difference:
    """``a`` minus ``b`` (same seeds, studies and findings): mean, 95% interval, two-sided bootstrap p-value
    ``min(1, 2 min(P(d <= 0), P(d >= 0)))`` over the study resamples, and the per-seed differences."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    boot = diff.mean(axis=(0, 2))[resamples].mean(axis=1)
    p = min(1.0, 2 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    return Difference(float(diff.mean()), *_interval(boot), p, tuple(float(v) for v in diff.mean(axis=(1, 2))))


def outcome_array(correct: Sequence[Dict[str, bool]], studies: Sequence[str], findings: Sequence[str]) -> np.ndarray:
    """Per seed a map ``"<study>:<finding>" -> right`` into ``[seeds, studies, findings]``; a missing item is an
    error (every arm answers every item)."""
    out = np.zeros((len(correct), len(studies), len(findings)))
    for s, by_item in enumerate(correct):
        for i, study in enumerate(studies):
            for f, finding in enumerate(findings):
                out[s, i, f] = by_item[f'{study}:{finding}']
    return out


def fmt(value: float, low: float = None, high: float = None) -> str:
    text = f'{value:.3f}'
    return text if low is None else f'{text} [{low:.3f}, {high:.3f}]'


def spread(values: List[float]) -> str:
    return f'{min(values):.3f}–{max(values):.3f}' if len(values) > 1 else f'{values[0]:.3f}'
