"""Statistics shared by data_prep (the drift report) and evaluation (paired tests): the standard library only.

- ``mcnemar_exact``: McNemar's exact test for two raters scored on the same items: under H0 the discordant
  items split 50/50, so the two-sided p-value is ``min(1, 2 * P(X <= min(b, c)))`` with X ~ Binomial(b + c, 1/2).
- ``cohen_kappa``: Cohen's kappa of two raters from their table of counts, (observed - chance) / (1 - chance),
  chance the sum over classes of the product of the raters' marginal rates; ``binary_kappa`` from paired calls.
"""
import math
from typing import Dict, Optional, Sequence, Tuple


def cohen_kappa(table: Sequence[Sequence[int]]) -> Optional[float]:
    """Cohen's kappa of a square table of counts (rows: rater A's class, columns: B's); None when chance
    agreement is 1 (both raters always gave the same one class) or the table is empty."""
    n = sum(map(sum, table))
    if not n:
        return None
    observed = sum(table[i][i] for i in range(len(table))) / n
    chance = sum(sum(table[i]) * sum(row[i] for row in table) for i in range(len(table))) / (n * n)
    return None if chance == 1 else (observed - chance) / (1 - chance)


def binary_kappa(pairs: Sequence[Tuple[bool, bool]]) -> Optional[float]:
    """Cohen's kappa of two binary raters, from their (A, B) calls on each item."""
    table = [[0, 0], [0, 0]]
    for a, b in pairs:
        table[bool(a)][bool(b)] += 1
    return cohen_kappa(table)


def mcnemar_from_counts(a_only: int, b_only: int) -> Dict[str, float]:
    """McNemar's exact test from the discordant counts (``a_only``: items only A got right; ``b_only``: only B)."""
    n = a_only + b_only
    if n == 0:
        p = 1.0
    else:
        tail = sum(math.comb(n, i) for i in range(min(a_only, b_only) + 1)) / 2 ** n
        p = min(1.0, 2 * tail)
    return {'a_only': a_only, 'b_only': b_only, 'discordant': n, 'p_value': p}


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> Dict[str, float]:
    """McNemar's exact (binomial) test. ``a_only``: items only A got right; ``b_only``: only B."""
    if len(a_correct) != len(b_correct):
        raise ValueError(f'paired test needs the same items: {len(a_correct)} vs {len(b_correct)}')
    a_only = sum(1 for a, b in zip(a_correct, b_correct) if a and not b)
    b_only = sum(1 for a, b in zip(a_correct, b_correct) if b and not a)
    return mcnemar_from_counts(a_only, b_only)
