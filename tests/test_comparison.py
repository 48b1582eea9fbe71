"""Claimed vs reproduced: the status of a claim against hand-made records."""

from __future__ import annotations

from typing import Any

import pytest

from vlpbench.reports.comparison import claim_split, compare, protocol_differences
from vlpbench.reports.stats import Interval
from vlpbench.reports.store import EvaluationRecord

CLAIM: dict[str, Any] = {
    "benchmark": "image_text_retrieval", "dataset": "flickr30k-karpathy-test-1k", "setting": "zero-shot",
    "model": "ViT-B/16 (openai)", "metrics": {"i2t_R1": 82.2, "t2i_R1": 62.16}, "source": "open_clip csv",
    "confidence": "V", "protocol": {"resolution": 224, "prompt": None, "lineage": "pretrained (WIT-400M)"},
}


def _record(benchmark: str = "zeroshot_retrieval@flickr30k", split: tuple[str, str] = ("flickr30k", "karpathy-test"),
            pretrain: str = "laion", metrics: dict[str, float] | None = None, **protocol: Any) -> EvaluationRecord:
    return EvaluationRecord(
        suite="s", job="clip-base-s0", method="clip", size="base", seed=0, config={}, environment={},
        benchmark=benchmark, dataset={"dataset": split[0], "split": split[1], "fingerprint": "f",
                                      "dataset_fingerprint": "d"},
        protocol={"scoring": "itc", "rerank_k": None, "resolution": 224, "prompt": None, **protocol},
        metrics=metrics or {"i2t_R1": 81.0, "t2i_R1": 62.5},
        lineage=[{"stage": "pretrain", "dataset": {"dataset": pretrain, "split": "pretrain"}}], card={})


def _ci(rec: Any) -> dict[str, Interval]:
    return {"i2t_R1": Interval(81.0, 79.6, 82.4), "t2i_R1": Interval(62.5, 61.0, 63.9)}


def test_split_identifiers_of_claims() -> None:
    assert claim_split("flickr30k-karpathy-test-1k") == "flickr30k/karpathy-test"
    assert claim_split("coco-karpathy-test-5k") == "coco/karpathy-test"


def test_inside_the_interval_is_reproduced_outside_is_not() -> None:
    rows = {r.metric: r for r in compare(CLAIM, "clip", [_record()], _ci, tolerance=0.5)}
    assert rows["i2t_R1"].status == "reproduced" and "inside our 95 % interval" in rows["i2t_R1"].reason
    assert rows["i2t_R1"].difference == pytest.approx(-1.2)
    assert rows["t2i_R1"].status == "reproduced"
    far = _record(metrics={"i2t_R1": 75.0, "t2i_R1": 62.5})
    rows = {r.metric: r for r in compare(CLAIM, "clip", [far], lambda r: {"i2t_R1": Interval(75.0, 73.6, 76.4)},
                                         tolerance=0.5)}
    assert rows["i2t_R1"].status == "not reproduced" and "[73.60, 76.40]" in rows["i2t_R1"].reason
    # without ranks (no interval) the tolerance decides
    rows = {r.metric: r for r in compare(CLAIM, "clip", [_record()], lambda r: None, tolerance=1.5)}
    assert rows["i2t_R1"].status == "reproduced" and rows["i2t_R1"].reason == "within ±1.5 points"
    assert compare(CLAIM, "clip", [_record()], lambda r: None, tolerance=1.0)[0].status == "not reproduced"


def test_a_different_protocol_is_not_comparable_and_says_why() -> None:
    builtin = _record(benchmark="zeroshot_retrieval", split=("builtin", "test"), pretrain="builtin", resolution=64)
    rows = compare(CLAIM, "clip", [builtin], _ci)
    assert {r.status for r in rows} == {"not comparable"}
    assert rows[0].reason == ("dataset: builtin/test vs flickr30k/karpathy-test; resolution: 64 vs 224; "
                              "pretraining: builtin/pretrain (the built-in world) vs pretrained (WIT-400M)")
    tiny = builtin.model_copy(update={"size": "tiny"})
    assert "model: clip-tiny (our CPU-size preset) vs ViT-B/16 (openai)" in compare(CLAIM, "clip", [tiny], _ci)[0].reason
    assert rows[0].interval is None and rows[0].ours == 81.0
    # the closest record is chosen: the real Flickr30K one beats the built-in split
    rows = compare(CLAIM, "clip", [builtin, _record(resolution=336)], _ci)
    assert rows[0].reason == "resolution: 336 vs 224" and rows[0].record == "clip-base-s0/zeroshot_retrieval@flickr30k"


def test_scoring_rule_and_k_are_part_of_the_protocol() -> None:
    tcl_claim = {**CLAIM, "protocol": {"scoring": "itm", "rerank_k": 128}}
    itc = _record()
    rerank = _record(benchmark="zeroshot_retrieval_rerank@flickr30k", scoring="itm", rerank_k=16)
    assert protocol_differences(tcl_claim, itc) == ["scoring: itc vs itm"]
    assert protocol_differences(tcl_claim, rerank) == ["k: 16 vs 128"]
    ok = _record(benchmark="zeroshot_retrieval_rerank@flickr30k", scoring="itm", rerank_k=128)
    assert compare(tcl_claim, "clip", [itc, rerank, ok], _ci)[0].status == "reproduced"


def test_no_run_of_that_setting_is_claimed_only() -> None:
    rows = compare({**CLAIM, "setting": "fine-tuned"}, "clip", [_record()], _ci)
    assert {r.status for r in rows} == {"claimed only"} and rows[0].ours is None
    assert rows[0].reason == "no fine-tuned run of clip"
    assert compare(CLAIM, "tcl", [_record()], _ci)[0].status == "claimed only"


def test_the_report_shows_intervals_and_the_status_of_every_claim() -> None:
    from vlpbench.reports.markdown import render

    card = {"claimed": [CLAIM, {**CLAIM, "setting": "fine-tuned"}]}
    rec = _record().model_copy(update={"card": card})
    text = render([], [rec], suite="s", source="test", intervals=_ci)
    assert "| RSUM 95 % CI | I→T R@1 CI | T→I R@1 CI |" in text and "[79.60, 82.40]" in text
    section = text.split("## Claimed vs reproduced")[1]
    rows = [line for line in section.splitlines() if line.startswith("| clip")]
    assert len(rows) == 2
    assert "82.20 / 62.16" in rows[0] and "81.00 [79.60, 82.40] / 62.50 [61.00, 63.90]" in rows[0]
    assert "**reproduced**" in rows[0] and "clip-base-s0/zeroshot_retrieval@flickr30k" in rows[0]
    assert "**claimed only**" in rows[1] and "no fine-tuned run of clip" in rows[1]


def test_the_report_says_which_differences_between_models_are_real() -> None:
    import numpy as np

    from vlpbench.reports.markdown import render

    rng = np.random.default_rng(0)
    base = {"i2t": rng.integers(1, 40, 1000), "t2i": rng.integers(1, 40, 5000)}
    better = {"i2t": np.maximum(base["i2t"] - 10, 1), "t2i": np.maximum(base["t2i"] - 10, 1)}
    same = {k: v.copy() for k, v in base.items()}
    recs = []
    for job, ranks in (("a-base-s0", better), ("b-base-s0", base), ("c-base-s0", same)):
        rsum = sum(100 * np.mean(ranks[d] <= k) for d in ("i2t", "t2i") for k in (1, 5, 10))
        recs.append(_record(benchmark="zeroshot_retrieval", metrics={"rsum": rsum}).model_copy(
            update={"job": job, "method": job[0], "card": {}}))
    table = {r.job: ranks for r, ranks in zip(recs, (better, base, same))}
    text = render([], recs, suite="s", source="t", ranks=lambda r: table[r.job])
    rows = [line for line in text.split("Paired tests")[1].splitlines() if line.startswith("| a-base-s0")]
    assert len(rows) == 2 and all(line.endswith("| yes |") for line in rows)
    # identical ranks of two other models are no real difference
    text = render([], recs[1:], suite="s", source="t", ranks=lambda r: table[r.job])
    row = next(line for line in text.split("Paired tests")[1].splitlines() if line.startswith("| b-base-s0"))
    assert "| +0.00 |" in row and row.endswith("| no |")


def test_product_claims_get_a_status_against_our_product_records() -> None:
    from vlpbench.reports.markdown import _product_claims

    claim = {"benchmark": "product_retrieval", "dataset": "m5product-subset", "setting": "pretrain features",
             "model": "SCALE, 5 modalities", "metrics": {"mAP@1": 78.2, "Prec@1": 78.2}, "source": "paper Tab. 4",
             "confidence": "V", "protocol": {}}
    card = {"claimed": [claim]}

    def product(split: tuple[str, str]) -> EvaluationRecord:
        return EvaluationRecord(
            suite="s", job="scale-tiny-s0", method="scale", size="base", seed=0, config={}, environment={},
            benchmark="product_retrieval", dataset={"dataset": split[0], "split": split[1], "fingerprint": "f",
                                                    "dataset_fingerprint": "d"},
            protocol={"cutoff": "toolkit"}, metrics={"joint/mAP@1": 10.0}, card=card,
            lineage=[{"stage": "pretrain", "dataset": {"dataset": "m5product", "split": "pretrain"}}])

    only = product(("m5product", "subset")).model_copy(update={"benchmark": "zeroshot_retrieval"})
    assert "| **claimed only** | no product-retrieval run of this method |" in "\n".join(_product_claims([only]))
    builtin = "\n".join(_product_claims([product(("builtin", "test"))]))
    assert "| **not comparable** | dataset: builtin/test vs m5product/subset |" in builtin
    same = "\n".join(_product_claims([product(("m5product", "subset"))]))
    assert "| **compare by hand** | same split: pick the feature type matching the claim |" in same
