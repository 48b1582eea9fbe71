"""M5Product's same-category mAP@K / Prec@K on hand-made rankings, including the evaluator's cut-off rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlpbench.benchmarks.evaluation.product_retrieval import (ProductRetrievalProtocol, leave_one_out,
                                                     product_retrieval_metrics, query_metrics, ranked_lists)

# A worked example whose values come from running SCALE_code's evaluate_unit_v2.py unchanged on it
# (docs/research/m5product.md §1.6):
# labels q,a1,a2,a3 -> A; b1,b2,b3 -> B; r,c1 -> C; three queries with six results each (query removed).
LABEL = {"q": "A", "a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "b3": "B", "r": "C", "c1": "C"}
RESULTS = {"q": ["a1", "b1", "a2", "b2", "b3", "a3"], "r": ["b1", "c1", "a1", "a2", "b2", "b3"],
           "b1": ["a1", "a2", "b2", "q", "b3", "a3"]}
POSITIVES = {"A": 4, "B": 3, "C": 2}          # the ground-truth file's items per label, the query included


def test_per_query_values_follow_the_cut_off_rule() -> None:
    rel_q = [LABEL[x] == "A" for x in RESULTS["q"]]
    assert query_metrics(rel_q, 4, 1) == (1.0, 1.0)
    # K = 5: k = min(5, |G| = 4, 6) = 4 -> hits at ranks 1 and 3: AP (1 + 2/3) / 2, P 2/4 (a textbook P@5 is 2/5).
    ap, p = query_metrics(rel_q, 4, 5)
    assert ap == pytest.approx((1 + 2 / 3) / 2) and p == pytest.approx(0.5)
    assert query_metrics(rel_q, 4, 10) == query_metrics(rel_q, 4, 5)
    rel_r = [LABEL[x] == "C" for x in RESULTS["r"]]
    assert query_metrics(rel_r, 2, 1) == (0.0, 0.0)
    assert query_metrics(rel_r, 2, 5) == pytest.approx((0.5, 0.5))     # k = 2: [b1, c1✓]
    # Textbook reading for contrast: P@5 over 5, AP over min(K, relevant others) = 3.
    ap_t, p_t = query_metrics(rel_q, 3, 5, cutoff="textbook")
    assert p_t == pytest.approx(0.4) and ap_t == pytest.approx((1 + 2 / 3) / 3)


def test_means_equal_the_official_evaluator_on_the_worked_example() -> None:
    gallery = sorted(LABEL)
    index = {x: i for i, x in enumerate(gallery)}
    lists = [np.array([index[x] for x in RESULTS[q]]) for q in ("q", "r", "b1")]
    out = product_retrieval_metrics(lists, [LABEL[q] for q in ("q", "r", "b1")], [LABEL[x] for x in gallery],
                                    POSITIVES, ProductRetrievalProtocol(ks=(1, 5, 10)))
    assert out["mAP@1"] == pytest.approx(100 / 3) and out["Prec@1"] == pytest.approx(100 / 3)
    assert out["mAP@5"] == pytest.approx(55.5556, abs=1e-3) and out["Prec@5"] == pytest.approx(44.4444, abs=1e-3)
    assert out["mAP@10"] == out["mAP@5"] and out["Prec@10"] == out["Prec@5"]


def test_ranking_keeps_top_k_first_and_then_drops_the_query() -> None:
    # 12 gallery items; query 0 is item 0 and scores itself highest; query 1 is not in the gallery.
    scores = torch.tensor([[9.0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 0.5, 0.1],
                           [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 0.5, 0.1]])
    lists = ranked_lists(scores, [0, -1], ProductRetrievalProtocol())
    assert len(lists[0]) == 9 and 0 not in lists[0]                     # top 10, then itself removed
    assert len(lists[1]) == 10
    assert list(lists[1][:3]) == [8, 9, 7]                               # ties: the lower index first
    full = ranked_lists(scores, [0, -1], ProductRetrievalProtocol(max_topk=None))
    assert len(full[0]) == 11 and len(full[1]) == 12


def test_leave_one_out_on_a_hand_made_score_matrix() -> None:
    # Four items, labels A A B B; each item's best other item shares its label except item 3.
    labels = ["A", "A", "B", "B"]
    scores = torch.tensor([[1.0, 0.9, 0.1, 0.0],
                           [0.9, 1.0, 0.2, 0.1],
                           [0.1, 0.2, 1.0, 0.8],
                           [0.0, 0.7, 0.6, 1.0]])
    out = leave_one_out(scores, labels, ProductRetrievalProtocol(ks=(1, 5)))
    # @1: hits for items 0, 1, 2, not 3 -> 75. @5: k = min(5, |G| = 2, 3) = 2: items 0-2 hit at rank 1
    # (AP 1, P 1/2); item 3 ranks [1 (A), 2 (B)]: hit at rank 2 (AP 1/2, P 1/2).
    assert out["mAP@1"] == pytest.approx(75.0) and out["Prec@1"] == pytest.approx(75.0)
    assert out["mAP@5"] == pytest.approx(100 * (3 * 1 + 0.5) / 4) and out["Prec@5"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="square"):
        leave_one_out(scores[:3], labels, ProductRetrievalProtocol())
