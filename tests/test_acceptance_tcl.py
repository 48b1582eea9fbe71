"""The issue's bar for TCL on the real default configuration (heavy: ~18 min on 2 cores).

Runs what `make run` runs for TCL — the unimodal-init stage (cold cache), 250 × 256 pretraining
steps, ITC and ITM-re-ranked zero-shot retrieval on the built-in 1K test split — then evaluates
TCL's own untrained copy (the same config and unimodal init, no vision-language pretraining)
under the same protocol. Not part of `make test` (15-minute budget); `.ci/run` runs it after.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import cli
from benchmarks.data import open_dataset
from benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from benchmarks.pipeline import Job, build_tokenizer, prepare_init
from benchmarks.suite import Suite
from methods import create_method
from reports.store import read_evaluation


@pytest.mark.heavy
@pytest.mark.timeout(3600)
def test_default_tcl_tiny_beats_its_untrained_copy_by_a_wide_margin(tmp_path: Path, cache_root: Path) -> None:
    assert cli.main(["run", "--set", "methods=[tcl]", "--output", str(tmp_path), "--no-progress"]) == 0
    job = tmp_path / "default" / "jobs" / "tcl-tiny-s0"
    itc = read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json")
    rerank = read_evaluation(job / "eval" / "zeroshot_retrieval_rerank" / "results.json")
    assert itc.protocol["n_images"] == 1000 and rerank.protocol["scoring"] == "itm"
    lineage = json.loads((job / "model" / "model_config.json").read_text())["lineage"]
    assert [e["stage"] for e in lineage] == ["unimodal-init", "pretrain"]

    suite = Suite(methods=["tcl"])
    dataset = open_dataset("builtin", cache_root=cache_root)
    tokenizer = build_tokenizer(suite, dataset)
    overrides, _ = prepare_init(Job(suite, "tcl", "tiny", 0), dataset, tokenizer, cache_root, log=lambda _: None)
    torch.manual_seed(0)
    untrained = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=overrides)
    base = evaluate_image_text(untrained, dataset.retrieval_split("test"), RetrievalProtocol(),
                               torch.device("cpu"), "fp32").metrics
    trained, reranked = itc.metrics, rerank.metrics
    # Measured at the default config (2-core CPU, seed 0): untrained about chance, trained ITC RSUM 74.6,
    # ITM re-ranked 75.3 (CLIP-tiny 240.4 in the same run; docs/calibration.md says why TCL-tiny is slower).
    assert base["rsum"] < 15.0, base                           # unimodal towers + random projections: chance
    assert trained["rsum"] >= base["rsum"] + 40.0, (trained, base)
    assert reranked["rsum"] >= base["rsum"] + 40.0, (reranked, base)
    assert rerank.timings["rerank_pairs"] > 0                 # the fusion encoder did score top-k candidates
    assert max(trained["i2t_R1"], trained["t2i_R1"]) <= 95.0, trained
