"""Mixed precision on the evaluation and fusion paths: additive masks in the queries' dtype under autocast, and every
score used for ranking in float32 whatever the autocast (CPU bf16 autocast stands in for the GPU's)."""

from __future__ import annotations

import pytest
import torch

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.evaluation import retrieval
from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from vlpbench.methods import TextTokenizer, create_method
from vlpbench.methods import fusion
from tests.test_tcl import MICRO_TCL


def test_fusion_masks_take_the_queries_dtype_under_autocast(tokenizer: TextTokenizer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL).eval()
    seen: list[torch.dtype] = []
    real = fusion.additive_mask

    def spy(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        out = real(mask, dtype)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(fusion, "additive_mask", spy)
    images = torch.randn(2, 3, 64, 64)
    text = model.tokenize(["a red star", "two blue squares on grass"])
    with torch.no_grad():
        feats, txt = model.rerank_image_features(images), model.rerank_text_features(text)
        model.rerank_score(feats, txt)
        assert seen == [torch.float32]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.rerank_score(model.rerank_image_features(images), model.rerank_text_features(text))
    assert seen[1:] == [torch.bfloat16]
    assert fusion.compute_dtype(torch.zeros(1)) == torch.float32


def test_ranking_scores_are_float32_under_bf16_autocast(tokenizer: TextTokenizer, small_world: BuiltinDataset,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL).eval()
    split = small_world.retrieval_split("test")
    dtypes: dict[str, set[torch.dtype]] = {"itc": set(), "rerank": set()}
    sim = model.similarity

    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        out = sim(a, b)
        dtypes["itc"].add(out.dtype)
        return out

    real_rows = retrieval._Reranker.rerank_rows

    def rerank_rows(self, itc_rows, row_ids, rows_are_images):  # type: ignore[no-untyped-def]
        out = real_rows(self, itc_rows, row_ids, rows_are_images)
        dtypes["rerank"].add(out.dtype)
        return out

    monkeypatch.setattr(model, "similarity", similarity)
    monkeypatch.setattr(retrieval._Reranker, "rerank_rows", rerank_rows)
    cpu = torch.device("cpu")
    evaluate_image_text(model, split, RetrievalProtocol(scoring="itm", rerank_k=4), cpu, "bf16")
    assert dtypes == {"itc": {torch.float32}, "rerank": {torch.float32}}
    # (the ITM head itself scores in float32 under autocast: tests/test_tcl.py)


def test_image_workers_give_the_same_evaluation(micro_clip, small_world: BuiltinDataset) -> None:  # type: ignore[no-untyped-def]
    split = small_world.retrieval_split("test")
    cpu = torch.device("cpu")
    inline = evaluate_image_text(micro_clip, split, RetrievalProtocol(batch_size=64), cpu, "fp32")
    ahead = evaluate_image_text(micro_clip, split, RetrievalProtocol(batch_size=64, workers=2), cpu, "fp32")
    assert inline.metrics == ahead.metrics
    assert (inline.i2t_ranks == ahead.i2t_ranks).all() and (inline.t2i_ranks == ahead.t2i_ranks).all()
