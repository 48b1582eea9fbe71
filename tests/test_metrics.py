"""Retrieval metrics on hand-made score matrices, against hand-computed ranks and a reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlpbench.benchmarks.evaluation.metrics import (TIE_POLICIES, PairedRanks, direction_metrics, image_text_metrics,
                                           paired_ranks, query_ranks, retrieval_ranks)


def test_hand_made_matrix_ranks_and_metrics() -> None:
    # 2 images, 4 captions: captions 0,1 belong to image 0; captions 2,3 to image 1.
    sim = torch.tensor([[0.1, 0.5, 0.9, 0.2],
                        [0.3, 0.8, 0.4, 0.6]])
    txt2img = [0, 0, 1, 1]
    i2t, t2i = retrieval_ranks(sim, txt2img)
    # image 0: best positive 0.5; caption 2 (0.9) is above it -> rank 2.
    # image 1: best positive 0.6; caption 1 (0.8) is above it -> rank 2.
    assert i2t.tolist() == [2, 2]
    # caption 0: img0 0.1 < img1 0.3 -> 2; caption 1: 0.5 < 0.8 -> 2; caption 2: 0.4 < 0.9 -> 2;
    # caption 3: img1 0.6 > img0 0.2 -> 1
    assert t2i.tolist() == [2, 2, 2, 1]
    m = image_text_metrics(i2t, t2i)
    assert m["i2t_R1"] == 0.0 and m["i2t_R5"] == 100.0 and m["i2t_R10"] == 100.0
    assert m["t2i_R1"] == 25.0 and m["t2i_R5"] == 100.0
    assert m["rsum"] == pytest.approx(0 + 100 + 100 + 25 + 100 + 100)
    assert m["r_mean"] == pytest.approx(425 / 6)
    assert m["i2t_medr"] == 2.0 and m["t2i_medr"] == 2.0 and m["t2i_meanr"] == pytest.approx(1.75)
    assert m["i2t_mR"] == pytest.approx(200 / 3) and m["t2i_mR"] == pytest.approx(225 / 3)


def test_metric_names_are_mlflow_safe_and_complete() -> None:
    m = image_text_metrics(np.array([1, 3]), np.array([1, 2, 11]))
    expected = {f"{d}_{k}" for d in ("i2t", "t2i") for k in ("R1", "R5", "R10", "mR", "medr", "meanr")}
    assert set(m) == expected | {"rsum", "r_mean"}
    assert all("@" not in k for k in m)


@pytest.mark.parametrize(("policy", "expected"), [("pessimistic", 3), ("optimistic", 1), ("index", 2)])
def test_tie_policies_on_a_three_way_tie(policy: str, expected: int) -> None:
    scores = torch.tensor([[0.5, 0.5, 0.5]])
    positives = torch.tensor([[False, True, False]])
    assert query_ranks(scores, positives, policy).tolist() == [expected]  # type: ignore[arg-type]


def test_index_policy_positive_first_wins_ties() -> None:
    scores = torch.tensor([[0.7, 0.7, 0.1]])
    assert query_ranks(scores, torch.tensor([[True, False, False]]), "index").tolist() == [1]
    assert query_ranks(scores, torch.tensor([[True, False, False]]), "pessimistic").tolist() == [2]


def test_ties_between_positives_do_not_count_against_the_query() -> None:
    scores = torch.tensor([[0.7, 0.7, 0.7, 0.2]])
    positives = torch.tensor([[False, True, True, False]])
    assert query_ranks(scores, positives, "pessimistic").tolist() == [2]   # one tied negative (col 0)
    assert query_ranks(scores, positives, "optimistic").tolist() == [1]
    assert query_ranks(scores, positives, "index").tolist() == [2]         # col 0 precedes col 1


def test_constant_scorer_gets_no_credit_under_the_default_policy() -> None:
    sim = torch.zeros(4, 20)
    i2t, t2i = retrieval_ranks(sim, np.repeat(np.arange(4), 5))
    m = image_text_metrics(i2t, t2i)
    assert m["i2t_R1"] == 0.0 and m["t2i_R1"] == 0.0
    assert i2t.tolist() == [16] * 4    # all 15 tied negatives ranked above the best positive
    assert t2i.tolist() == [4] * 20


def test_any_positive_in_top_k_with_more_than_five_captions() -> None:
    # Image 0 has 7 captions (0..6), image 1 has 5 (7..11). Only caption 6 (the seventh) scores high.
    txt2img = [0] * 7 + [1] * 5
    sim = torch.full((2, 12), 0.0)
    sim[0, 6] = 1.0            # image 0's best caption is its seventh
    sim[0, 7:] = 0.5           # image 1's captions sit between
    sim[1, 7:] = 1.0
    i2t, t2i = retrieval_ranks(sim, txt2img)
    assert i2t.tolist() == [1, 1]
    # captions 0..5 of image 0 score 0 for image 0 and 0 for image 1: a tie -> pessimistic rank 2
    assert t2i[:6].tolist() == [2] * 6 and t2i[6] == 1 and t2i[7:].tolist() == [1] * 5


def _reference_itm_eval_ranks(sim: np.ndarray, txt2img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TCL/ALBEF `itm_eval` logic (argsort, best GT position), for tie-free scores; 1-based."""
    n_img = sim.shape[0]
    img2txt = [np.flatnonzero(txt2img == i) for i in range(n_img)]
    i2t = np.array([min(np.where(np.argsort(row)[::-1] == t)[0][0] for t in img2txt[i])
                    for i, row in enumerate(sim)]) + 1
    t2i = np.array([np.where(np.argsort(sim[:, t])[::-1] == txt2img[t])[0][0] for t in range(sim.shape[1])]) + 1
    return i2t, t2i


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_chunked_equals_unchunked_and_reference(chunk: int) -> None:
    rng = np.random.default_rng(0)
    n_img, n_txt = 37, 181
    txt2img = np.concatenate([np.arange(n_img), rng.integers(0, n_img, n_txt - n_img)])
    rng.shuffle(txt2img)
    sim = rng.normal(size=(n_img, n_txt)).astype(np.float32)
    i2t, t2i = retrieval_ranks(torch.from_numpy(sim), txt2img, chunk=chunk)
    full_i2t, full_t2i = retrieval_ranks(torch.from_numpy(sim), txt2img, chunk=10_000)
    ref_i2t, ref_t2i = _reference_itm_eval_ranks(sim, txt2img)
    np.testing.assert_array_equal(i2t, full_i2t)
    np.testing.assert_array_equal(t2i, full_t2i)
    np.testing.assert_array_equal(i2t, ref_i2t)
    np.testing.assert_array_equal(t2i, ref_t2i)


def test_all_policies_agree_without_ties() -> None:
    rng = np.random.default_rng(1)
    sim = torch.from_numpy(rng.normal(size=(10, 30)))
    t2i = np.repeat(np.arange(10), 3)
    results = [retrieval_ranks(sim, t2i, tie_policy=p) for p in TIE_POLICIES]  # type: ignore[arg-type]
    for i2t, t2i_r in results[1:]:
        np.testing.assert_array_equal(i2t, results[0][0])
        np.testing.assert_array_equal(t2i_r, results[0][1])


def test_median_and_mean_rank() -> None:
    m = direction_metrics("t2i", np.array([1, 2, 3, 10]))
    assert m["t2i_medr"] == 2.5 and m["t2i_meanr"] == 4.0 and m["t2i_R1"] == 25.0 and m["t2i_R10"] == 100.0


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one positive"):
        query_ranks(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN"):
        query_ranks(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="tie policy"):
        query_ranks(torch.zeros(1, 2), torch.tensor([[True, False]]), "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no caption"):
        retrieval_ranks(torch.zeros(3, 2), [0, 0])


def _definition_ranks(scores: torch.Tensor, positives: torch.Tensor, policy: str) -> list[int]:
    """The rank by definition, one query at a time: 1 + negatives scoring above the best positive, + tied
    negatives (pessimistic) / none (optimistic) / those before the first best positive (index)."""
    out = []
    for row, pos in zip(scores.tolist(), positives.tolist()):
        best = max(s for s, p in zip(row, pos) if p)
        first = next(j for j, (s, p) in enumerate(zip(row, pos)) if p and s == best)
        above = sum(1 for s, p in zip(row, pos) if not p and s > best)
        tied = [j for j, (s, p) in enumerate(zip(row, pos)) if not p and s == best]
        extra = {"pessimistic": len(tied), "optimistic": 0, "index": sum(1 for j in tied if j < first)}[policy]
        out.append(above + extra + 1)
    return out


@pytest.mark.parametrize("policy", ["pessimistic", "optimistic", "index"])
def test_query_ranks_equal_the_definition_with_ties_and_minus_infinity(policy: str) -> None:
    """Coarse scores (many ties) and re-ranked rows where everything outside the top-k is -inf — including rows
    whose positives all lie outside it."""
    g = torch.Generator().manual_seed(7)
    scores = torch.randint(0, 4, (40, 30), generator=g).float()
    scores[torch.rand(40, 30, generator=g) < 0.4] = float("-inf")
    positives = torch.rand(40, 30, generator=g) < 0.1
    positives[torch.arange(40), torch.randint(0, 30, (40,), generator=g)] = True
    scores[:5][positives[:5]] = float("-inf")                  # rows 0-4: every positive at -inf
    got = query_ranks(scores, positives, policy).tolist()        # type: ignore[arg-type]
    assert got == _definition_ranks(scores, positives, policy)
    assert all(r > 1 for r in got[:5]) or policy == "optimistic"


@pytest.mark.parametrize("tie_policy", TIE_POLICIES)
def test_one_pass_paired_ranks_equal_both_directions_of_the_reference(tie_policy: str) -> None:
    """PairedRanks (one pass over score tiles for both directions) gives retrieval_ranks' ranks exactly: coarse
    integer scores (many ties), -inf entries, 1-5 captions per image stored grouped or shuffled, tile grids from
    1 x 1 to larger than the matrix."""
    rng = np.random.default_rng(7)
    for trial in range(24):
        n_img = int(rng.integers(1, 30))
        txt2img = np.repeat(np.arange(n_img), rng.integers(1, 6, size=n_img))
        if trial % 2:
            rng.shuffle(txt2img)
        sim = torch.from_numpy(rng.integers(-3, 4, size=(n_img, len(txt2img))).astype(np.float32))
        if trial % 3 == 0:
            sim[torch.from_numpy(rng.random(sim.shape) < 0.2)] = float("-inf")
        ref = retrieval_ranks(sim, txt2img, tie_policy=tie_policy)  # type: ignore[arg-type]
        for chunk, tile in [(1, 1), (3, 5), (7, 2), (100, 1000)]:
            got = paired_ranks(lambda a, b, c, d: sim[a:b, c:d], txt2img, n_img, chunk, tile,
                               tie_policy)  # type: ignore[arg-type]
            np.testing.assert_array_equal(got[0], ref[0])
            np.testing.assert_array_equal(got[1], ref[1])


def test_paired_ranks_hand_made_and_work_split_by_image_chunks() -> None:
    # captions 0, 1 of image 0; 2 of image 1; 3 of image 2. Image 0's best ground truth (caption 1, 0.5) ties
    # with caption 2 after it; image 1 scores caption 0 above its own; image 2's caption ties with caption 1
    # before it. Caption 0 scores image 1 above its own; caption 2's image ties with image 2 after it; caption
    # 3's ties with images 0 and 1 before it.
    sim = torch.tensor([[0.2, 0.5, 0.5, 0.1], [1.0, 0.0, 0.8, 0.1], [0.0, 0.1, 0.8, 0.1]])
    t2i = np.array([0, 0, 1, 2])
    for policy, i2t, t2i_r in [("pessimistic", [2, 2, 3], [2, 1, 2, 3]), ("optimistic", [1, 2, 2], [2, 1, 1, 1]),
                               ("index", [1, 2, 3], [2, 1, 1, 3])]:
        assert [r.tolist() for r in retrieval_ranks(sim, t2i, tie_policy=policy)] == [i2t, t2i_r]  # type: ignore
        ranker = PairedRanks(lambda a, b, c, d: sim[a:b, c:d], t2i, 3, chunk=2, text_tile=3,
                             tie_policy=policy)  # type: ignore[arg-type]
        # two "processes": image chunks [0] and [2]; rows concatenated, caption counts summed
        (r0, c0), (r1, c1) = ranker.accumulate([0]), ranker.accumulate([2])
        got = ranker.finish(torch.cat([r0, r1]), c0 + c1)
        assert got[0].tolist() == i2t and got[1].tolist() == t2i_r, policy


def test_paired_ranks_prepass_scores_only_the_tiles_holding_pairs() -> None:
    # 100 images x 5 grouped captions on a 10 x 50 grid: the 10 image chunks' pairs sit in 10 tiles (the
    # diagonal), so the pre-pass adds 10 tile evaluations to the 100 of the main pass
    txt2img = np.repeat(np.arange(100), 5)
    calls: list[tuple[int, int, int, int]] = []
    sim = torch.randn(100, 500, generator=torch.Generator().manual_seed(0))

    def tile(a: int, b: int, c: int, d: int) -> torch.Tensor:
        calls.append((a, b, c, d))
        return sim[a:b, c:d]

    got = paired_ranks(tile, txt2img, 100, chunk=10, text_tile=50)
    ref = retrieval_ranks(sim, txt2img)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert len(calls) == 110 and calls[:10] == [(10 * k, 10 * k + 10, 50 * k, 50 * k + 50) for k in range(10)]


def test_paired_ranks_refuses_nan_and_a_nondeterministic_score_function() -> None:
    t2i = np.array([0, 1])
    with pytest.raises(ValueError, match="NaN"):
        paired_ranks(lambda a, b, c, d: torch.full((b - a, d - c), float("nan")), t2i, 2)
    noise = torch.Generator().manual_seed(0)
    with pytest.raises(RuntimeError, match="not deterministic"):
        paired_ranks(lambda a, b, c, d: torch.randn(b - a, d - c, generator=noise), t2i, 2)
    with pytest.raises(ValueError, match="returned shape"):
        paired_ranks(lambda a, b, c, d: torch.zeros(1, 1), t2i, 2)
    with pytest.raises(ValueError, match="outside"):
        paired_ranks(lambda a, b, c, d: torch.zeros(b - a, d - c), np.array([0, 2]), 2)
