"""Bootstrap intervals, paired tests and seed summaries on cases with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlpbench.reports.stats import bootstrap_retrieval, mcnemar_exact, paired_retrieval_test, seed_summary


def _ranks(n: int, hits: int, seed: int = 0) -> np.ndarray:
    """n queries, `hits` of them at rank 1 and the rest at rank 20 (so R@1 = R@5 = R@10 = hits / n)."""
    r = np.full(n, 20)
    r[np.random.default_rng(seed).permutation(n)[:hits]] = 1
    return r


def test_bootstrap_interval_of_a_recall_matches_the_binomial_normal_interval() -> None:
    i2t, t2i = _ranks(4000, 1200), _ranks(8000, 4000, seed=1)
    ci = bootstrap_retrieval(i2t, t2i, n_resamples=4000, seed=0)
    half = 1.96 * 100 * math.sqrt(0.3 * 0.7 / 4000)                      # 1.42 points
    r1 = ci["i2t_R1"]
    assert r1.estimate == pytest.approx(30.0)
    assert (r1.high - r1.low) / 2 == pytest.approx(half, rel=0.1)
    assert (r1.high + r1.low) / 2 == pytest.approx(30.0, abs=0.25)
    assert ci["t2i_R10"].estimate == pytest.approx(50.0) and ci["t2i_R10"].contains(50.0)
    # RSUM = 3·R(i2t) + 3·R(t2i) here; the two query sets are independent, so the variances add
    sd = 300 * math.sqrt(0.3 * 0.7 / 4000 + 0.5 * 0.5 / 8000)
    assert ci["rsum"].estimate == pytest.approx(240.0)
    assert (ci["rsum"].high - ci["rsum"].low) / 2 == pytest.approx(1.96 * sd, rel=0.1)


def test_bootstrap_is_seeded_and_degenerate_cases_are_exact() -> None:
    i2t, t2i = _ranks(500, 100), _ranks(900, 450)
    assert bootstrap_retrieval(i2t, t2i, n_resamples=500, seed=3) == bootstrap_retrieval(i2t, t2i, n_resamples=500,
                                                                                         seed=3)
    perfect = bootstrap_retrieval(np.ones(50, dtype=int), np.ones(80, dtype=int), n_resamples=200)
    assert (perfect["i2t_R1"].low, perfect["i2t_R1"].high) == (100.0, 100.0)
    assert (perfect["rsum"].low, perfect["rsum"].high) == (600.0, 600.0)
    one = bootstrap_retrieval(np.array([1]), np.array([1, 3, 7]), n_resamples=100)   # one image query
    assert set(one) == {"t2i_R1", "t2i_R5", "t2i_R10"}
    with pytest.raises(ValueError, match="1-based"):
        bootstrap_retrieval(np.zeros(5, dtype=int), np.ones(5, dtype=int))


def test_exact_mcnemar_on_a_hand_made_table() -> None:
    # 8 queries only A gets right, 2 only B, 5 both, 5 neither: p = 2·P(X ≥ 8 | Bin(10, ½)) = 112/1024
    a = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5, dtype=bool)
    b = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 5, dtype=bool)
    assert mcnemar_exact(a, b) == pytest.approx(112 / 1024)
    assert mcnemar_exact(a, a) == 1.0


def test_paired_test_separates_a_real_difference_from_none() -> None:
    base_i, base_t = _ranks(1000, 300), _ranks(2000, 600)
    same = paired_retrieval_test({"i2t": base_i, "t2i": base_t}, {"i2t": base_i, "t2i": base_t}, n_resamples=500)
    assert same["rsum"].difference == 0 and same["rsum"].p_value == 1.0 and not same["i2t_R1"].significant()
    better_i = base_i.copy()
    better_i[np.flatnonzero(base_i > 1)[:150]] = 1          # A also gets 150 more image queries right
    cmp = paired_retrieval_test({"i2t": better_i, "t2i": base_t}, {"i2t": base_i, "t2i": base_t}, n_resamples=500)
    assert cmp["i2t_R1"].difference == pytest.approx(15.0) and cmp["i2t_R1"].p_value < 1e-40
    assert cmp["rsum"].difference == pytest.approx(45.0) and cmp["rsum"].significant()
    assert cmp["rsum"].interval is not None and cmp["rsum"].interval.low > 0
    assert not cmp["t2i_R1"].significant()                  # T→I is the same on both
    with pytest.raises(ValueError, match="same queries"):
        paired_retrieval_test({"i2t": base_i[:10], "t2i": base_t}, {"i2t": base_i, "t2i": base_t})


def test_seed_summary() -> None:
    s = seed_summary([240.41, 239.56, 242.39])
    assert s.mean == pytest.approx(240.7866667) and s.std == pytest.approx(1.4517, abs=1e-3) and s.n == 3
    assert str(seed_summary([1.0])) == "1.00" and seed_summary([1.0]).std is None
