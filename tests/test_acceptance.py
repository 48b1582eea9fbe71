"""The issue's bar on the real default configuration: CLIP-tiny, default world, default budget.

Slow (about 4 minutes on 2 cores): it generates the default dataset and pretrains for the
default 250 steps, exactly what `make run` does for CLIP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlpbench.benchmarks import cli
from vlpbench.reports.store import read_evaluation


@pytest.mark.slow
def test_default_clip_tiny_learns_real_retrieval_without_saturating(tmp_path: Path, cache_root: Path) -> None:
    assert cli.main(["run", "--set", "methods=[clip]", "--set", "benchmarks=[zeroshot_retrieval,finetuned_retrieval]",
                     "--output", str(tmp_path), "--no-progress"]) == 0
    evals = tmp_path / "default" / "jobs" / "clip-tiny-s0" / "eval"
    ev = read_evaluation(evals / "zeroshot_retrieval" / "results.json")
    m = ev.metrics
    assert ev.protocol["n_images"] == 1000 and ev.protocol["captions_per_image"]["min"] >= 5
    assert m["rsum"] >= 200.0, m            # chance is about 3
    assert max(m["i2t_R1"], m["t2i_R1"]) <= 95.0, m
    # Fine-tuning on the train split's reference captions (100 x 128) closes part of the alt-text -> caption shift:
    # measured 240.2 -> 296.1 RSUM on this machine (code at the fine-tuning commit).
    ft = read_evaluation(evals / "finetuned_retrieval" / "results.json").metrics
    assert ft["rsum"] >= m["rsum"] + 25.0, (ft["rsum"], m["rsum"])
    assert (tmp_path / "default" / "report.md").is_file()
