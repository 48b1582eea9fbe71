"""Uncertainty of retrieval results, from the per-query ranks every evaluation saves (ranks.npz).

- `bootstrap_retrieval`: 95 % percentile-bootstrap intervals for R@K of each direction and for RSUM. Queries are
  the sampling unit: image queries (I→T) and text queries (T→I) are resampled independently, each replicate
  recomputing every recall from the resampled ranks (scipy.stats.bootstrap, two independent samples for RSUM).
- `paired_retrieval_test`: two methods on the *same* queries. For each R@K an exact McNemar test on the queries
  where exactly one method hits (a two-sided binomial test of the discordant pairs); for RSUM a paired bootstrap
  of the difference (both methods' ranks resampled with the same query indices), with its interval and the
  two-sided bootstrap p-value.
- `seed_summary`: mean ± sample standard deviation over seeds (n - 1 in the denominator).

Recalls are in percent, as everywhere in vlpbench. Everything is seeded: the same inputs give the same intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

KS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    level: float = 0.95

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def _recall(ranks: np.ndarray, k: int, axis: int = -1) -> np.ndarray:
    return 100.0 * np.mean(ranks <= k, axis=axis)


def _check(ranks: np.ndarray, what: str) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-d array of 1-based ranks, got shape {r.shape}")
    if np.any(r < 1):
        raise ValueError(f"{what}: ranks are 1-based; found {int(r.min())}")
    return r


def bootstrap_retrieval(i2t_ranks: np.ndarray, t2i_ranks: np.ndarray, *, n_resamples: int = 2000,
                        level: float = 0.95, seed: int = 0) -> dict[str, Interval]:
    """Percentile-bootstrap intervals for i2t_R{1,5,10}, t2i_R{1,5,10} and rsum. A direction with a single query
    has no interval (nothing to resample): its metrics, and RSUM, are left out."""
    i2t, t2i = _check(i2t_ranks, "i2t ranks"), _check(t2i_ranks, "t2i ranks")
    out: dict[str, Interval] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        if ranks.size < 2:
            continue
        for k in KS:
            res = stats.bootstrap((ranks,), lambda r, axis, k=k: _recall(r, k, axis), n_resamples=n_resamples,
                                  confidence_level=level, method="percentile", vectorized=True,
                                  random_state=np.random.default_rng([seed, k, name == "t2i"]))
            out[f"{name}_R{k}"] = Interval(float(_recall(ranks, k)), float(res.confidence_interval.low),
                                           float(res.confidence_interval.high), level)

    def rsum(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        return sum(_recall(a, k, axis) + _recall(b, k, axis) for k in KS)

    if i2t.size < 2 or t2i.size < 2:
        return out

    res = stats.bootstrap((i2t, t2i), rsum, n_resamples=n_resamples, confidence_level=level, method="percentile",
                          vectorized=True, paired=False, random_state=np.random.default_rng([seed, 99]))
    out["rsum"] = Interval(float(rsum(i2t, t2i, -1)), float(res.confidence_interval.low),
                           float(res.confidence_interval.high), level)
    return out


@dataclass(frozen=True)
class PairedComparison:
    metric: str
    a: float
    b: float
    difference: float              # a - b
    p_value: float
    test: str
    interval: Interval | None = None   # of the difference (RSUM)

    def significant(self, alpha: float = 0.05) -> bool:
        return self.p_value < alpha


def mcnemar_exact(hits_a: np.ndarray, hits_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value for paired binary outcomes (1.0 when no query is discordant)."""
    a, b = np.asarray(hits_a, dtype=bool), np.asarray(hits_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need the same queries: {a.shape} vs {b.shape}")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_retrieval_test(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], *, n_resamples: int = 2000,
                          level: float = 0.95, seed: int = 0) -> dict[str, PairedComparison]:
    """Method A vs method B on the same split: `a` and `b` hold 'i2t' and 't2i' ranks of the same queries."""
    out: dict[str, PairedComparison] = {}
    for d in ("i2t", "t2i"):
        ra, rb = _check(a[d], f"A {d} ranks"), _check(b[d], f"B {d} ranks")
        if ra.shape != rb.shape:
            raise ValueError(f"{d}: the two methods were not ranked on the same queries ({ra.size} vs {rb.size})")
        for k in KS:
            va, vb = float(_recall(ra, k)), float(_recall(rb, k))
            out[f"{d}_R{k}"] = PairedComparison(f"{d}_R{k}", va, vb, va - vb, mcnemar_exact(ra <= k, rb <= k),
                                                "exact McNemar")
    ia, ib, ta, tb = (np.asarray(x) for x in (a["i2t"], b["i2t"], a["t2i"], b["t2i"]))

    def diff(i_a: np.ndarray, i_b: np.ndarray, t_a: np.ndarray, t_b: np.ndarray, axis: int) -> np.ndarray:
        return sum(_recall(i_a, k, axis) - _recall(i_b, k, axis) + _recall(t_a, k, axis) - _recall(t_b, k, axis)
                   for k in KS)

    rng = np.random.default_rng([seed, 7])
    # paired: the same image indices for both methods' I→T ranks, the same text indices for T→I
    img_idx = rng.integers(0, ia.size, size=(n_resamples, ia.size))
    txt_idx = rng.integers(0, ta.size, size=(n_resamples, ta.size))
    reps = diff(ia[img_idx], ib[img_idx], ta[txt_idx], tb[txt_idx], axis=-1)
    observed = float(diff(ia, ib, ta, tb, axis=-1))
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    # two-sided bootstrap p-value: how often the resampled difference falls on the other side of zero
    p = min(1.0, 2 * min(np.mean(reps <= 0), np.mean(reps >= 0))) if observed != 0 else 1.0
    sum_a = float(sum(_recall(ia, k) + _recall(ta, k) for k in KS))
    out["rsum"] = PairedComparison("rsum", sum_a, sum_a - observed, observed, float(max(p, 1 / n_resamples)),
                                   "paired bootstrap", Interval(observed, float(lo), float(hi), level))
    return out


@dataclass(frozen=True)
class SeedSummary:
    mean: float
    std: float | None      # None with a single seed
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.2f}" if self.std is None else f"{self.mean:.2f} ± {self.std:.2f} (n={self.n})"


def seed_summary(values: Sequence[float]) -> SeedSummary:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("no values to summarise")
    return SeedSummary(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None, int(v.size))
