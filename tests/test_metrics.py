"""Retrieval metrics on hand-made score matrices, against hand-computed ranks and a reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.evaluation.metrics import (TIE_POLICIES, direction_metrics, image_text_metrics, query_ranks,
                                           retrieval_ranks)


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
