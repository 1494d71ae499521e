"""Statistics of a comparison over seeds: mean, sample std, t-based 95 % intervals, paired tests.

Pure functions on plain sequences of floats (one value per seed). ``describe`` summarizes one loss;
``paired`` compares two losses run with the same seeds (seed i of one against seed i of the other: same
initial weights and batch order), by a paired t-test and an exact two-sided sign test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as scipy_stats

__all__ = ["describe", "paired", "t_interval"]


def _floats(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{name} is empty: need at least one value per seed")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} holds a non-finite value: {out}")
    return out


def t_interval(mean: float, std: float, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Two-sided ``level`` confidence interval of a mean from ``n`` values with sample std ``std``
    (Student's t with n - 1 degrees of freedom); None when n < 2 (no spread to estimate)."""
    if n < 2:
        return None
    half = float(scipy_stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return (mean - half, mean + half)


def describe(values: Sequence[float]) -> dict:
    """``{"n", "mean", "std" (sample, n - 1; 0 for one value), "ci95": [low, high] or None}``."""
    x = _floats(values, "values")
    n = len(x)
    mean = math.fsum(x) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in x) / (n - 1)) if n > 1 else 0.0
    ci = t_interval(mean, std, n)
    return {"n": n, "mean": mean, "std": std, "ci95": None if ci is None else list(ci)}


def paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """Paired comparison of ``a`` against ``b`` (same seeds, same order): differences ``a - b``.

    Returns ``n``, ``mean_diff``, ``std_diff``, ``ci95`` of the mean difference (t), ``t_p`` (two-sided
    paired t-test; 0 or 1 when every difference is equal, None for n < 2), ``sign_p`` (exact two-sided sign
    test over the non-zero differences; 1.0 when all are zero), and ``wins`` / ``losses`` / ``ties`` of
    ``a``. With 5 seeds the smallest possible sign-test p is 2/32 = 0.0625.
    """
    x, y = _floats(a, "a"), _floats(b, "b")
    if len(x) != len(y):
        raise ValueError(f"paired comparison needs the same seeds on both sides, got {len(x)} and {len(y)}")
    diffs = [u - v for u, v in zip(x, y, strict=True)]
    summary = describe(diffs)
    n = summary["n"]
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    if n < 2:
        t_p = None
    elif summary["std"] == 0.0:  # t is 0/0 or infinite: the differences are exactly constant
        t_p = 1.0 if summary["mean"] == 0.0 else 0.0
    else:
        t_p = float(scipy_stats.ttest_rel(x, y).pvalue)
    sign_p = float(scipy_stats.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return {"n": n, "mean_diff": summary["mean"], "std_diff": summary["std"], "ci95": summary["ci95"],
            "t_p": t_p, "sign_p": sign_p, "wins": wins, "losses": losses, "ties": n - wins - losses}
