"""Accuracy, bootstrap confidence intervals and paired tests (numpy and the standard library only).

- ``bootstrap_ci``: percentile bootstrap of a mean of 0/1 outcomes (resampling items with replacement).
- ``macro_bootstrap_ci``: the same for the mean over observations of per-observation accuracy (Table 1's
  "Avg"), resampling within each observation (a stratified bootstrap), so every replicate has every cell.
- ``mcnemar_exact`` (defined in ``clinical_text.stats``, shared with data_prep): McNemar's exact test for two
  models scored on the same items: under H0 the discordant items split 50/50, so the two-sided p-value is ``min(1, 2 * P(X <= min(b, c)))`` with X ~ Binomial(b + c, 1/2).
- ``paired_bootstrap``: the difference of two models' (macro) accuracies on the same items, resampling the
  items together, with a 95% interval and a two-sided bootstrap p-value ``min(1, 2 * min(P(d <= 0), P(d >= 0)))``.
All random draws come from ``numpy.random.default_rng(seed)``: the same seed gives the same figures.
"""
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np

from clinical_text.stats import mcnemar_exact  # noqa: F401  (one implementation, shared with data_prep)

DEFAULT_N_BOOT = 2000
DEFAULT_SEED = 0


def accuracy(correct: Sequence[bool]) -> float:
    if len(correct) == 0:
        raise ValueError('accuracy of no items')
    return float(np.mean(np.asarray(correct, dtype=float)))


def _percentiles(values: np.ndarray, level: float) -> Tuple[float, float]:
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(correct: Sequence[bool], n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED,
                 level: float = 0.95) -> Tuple[float, float]:
    """Percentile bootstrap interval of the accuracy of ``correct`` (a sequence of 0/1)."""
    values = np.asarray(correct, dtype=float)
    if values.size == 0:
        raise ValueError('confidence interval of no items')
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    return _percentiles(means, level)


def _macro_replicates(groups: Mapping[str, Sequence], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot replicates of the mean over groups of each group's mean (groups resampled separately)."""
    total = np.zeros(n_boot)
    for values in groups.values():
        values = np.asarray(values, dtype=float)
        total += values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    return total / len(groups)


def macro_accuracy(groups: Mapping[str, Sequence[bool]]) -> float:
    return float(np.mean([accuracy(v) for v in groups.values()]))


def macro_bootstrap_ci(groups: Mapping[str, Sequence[bool]], n_boot: int = DEFAULT_N_BOOT,
                       seed: int = DEFAULT_SEED, level: float = 0.95) -> Tuple[float, float]:
    if not groups or any(len(v) == 0 for v in groups.values()):
        raise ValueError('confidence interval with an empty group')
    return _percentiles(_macro_replicates(groups, n_boot, np.random.default_rng(seed)), level)


def paired_bootstrap(a_groups: Mapping[str, Sequence[bool]], b_groups: Mapping[str, Sequence[bool]],
                     n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED,
                     level: float = 0.95) -> Dict[str, float]:
    """Macro accuracy of B minus that of A on the same items (``*_groups``: observation -> outcomes in the
    same item order for A and B); items are resampled jointly, within each observation."""
    if set(a_groups) != set(b_groups) or any(len(a_groups[k]) != len(b_groups[k]) for k in a_groups):
        raise ValueError('paired bootstrap needs the same observations and items for both models')
    diff = {k: np.asarray(b_groups[k], dtype=float) - np.asarray(a_groups[k], dtype=float) for k in a_groups}
    replicates = _macro_replicates(diff, n_boot, np.random.default_rng(seed))
    low, high = _percentiles(replicates, level)
    p = min(1.0, 2 * min(float(np.mean(replicates <= 0)), float(np.mean(replicates >= 0))))
    return {'difference': float(np.mean([v.mean() for v in diff.values()])), 'ci_low': low, 'ci_high': high,
            'p_value': p, 'n_boot': n_boot, 'seed': seed}


def bootstrap_weights(n_items: int, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> np.ndarray:
    """``(n_boot, n_items)`` counts: how often each item is drawn in each replicate of a plain bootstrap (items
    resampled with replacement, ``numpy.random.default_rng(seed)``). A statistic built from per-item counts
    (true positives, false positives...) is then ``weights @ counts`` per replicate; using the same weights for
    two models on the same items gives a paired bootstrap."""
    if n_items <= 0:
        raise ValueError('bootstrap of no items')
    draws = np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))
    weights = np.zeros((n_boot, n_items), dtype=np.int64)
    np.add.at(weights, (np.repeat(np.arange(n_boot), n_items), draws.ravel()), 1)
    return weights


def interval(replicates: np.ndarray, level: float = 0.95) -> Tuple[float, float]:
    """Percentile interval of bootstrap replicates."""
    return _percentiles(np.asarray(replicates, dtype=float), level)


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference: ``min(1, 2 * min(P(d <= 0), P(d >= 0)))``."""
    differences = np.asarray(differences, dtype=float)
    return min(1.0, 2 * min(float(np.mean(differences <= 0)), float(np.mean(differences >= 0))))
