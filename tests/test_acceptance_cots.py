"""The issue's bar for COTS at the tiny preset (the `make run-full` suite) (heavy: ~15 min on 2 cores + the shared
unimodal stage when it runs first).

Runs what `make run-full` (the tiny suite) runs for COTS — the unimodal-init stage (shared with TCL-tiny through the
session cache), the dVAE stage, 250 × 256 pretraining steps with AMF on the built-in data (5 %
mismatched pairs), ITC zero-shot retrieval on the 1K test split — then evaluates COTS's untrained
copy (the same config, unimodal init and tokenizer, no vision-language pretraining) under the same
protocol, and checks that AMF found the mismatched pairs far better than chance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance import run_default_job, untrained_metrics


@pytest.mark.heavy
@pytest.mark.timeout(3600)
def test_default_cots_tiny_learns_and_its_filter_finds_the_mismatched_pairs(tmp_path: Path,
                                                                            cache_root: Path) -> None:
    job = run_default_job("cots", tmp_path, size="tiny")
    assert not (job.job_dir / "eval" / "zeroshot_retrieval_rerank").exists()     # two streams: nothing to re-rank
    assert job.lineage_stages == ["unimodal-init", "visual-tokenizer", "pretrain"]

    summary = json.loads((job.job_dir / "pretrain.json").read_text())["summary"]
    amf = summary["filters"]["amf_dropped"]
    assert amf["noise_fraction"] == pytest.approx(0.05, abs=0.01)
    # A random filter has precision = the noise rate. Measured at the tiny default config (2-core CPU, seed 0):
    # precision 0.472, recall 0.435 on 5.0 % mismatched pairs (4.6 % of pairs dropped).
    assert amf["precision"] >= 4 * amf["noise_fraction"], amf
    assert amf["recall"] >= 0.3, amf

    base = untrained_metrics("cots", cache_root, size="tiny")
    trained = job.itc.metrics
    # Measured: untrained 3.55 (chance), trained ITC RSUM 179.0 (CLIP-tiny 240.2, TCL-tiny 74.6).
    assert base["rsum"] < 15.0, base                           # unimodal towers + random projections: chance
    assert trained["rsum"] >= base["rsum"] + 100.0, (trained, base)
    assert max(trained["i2t_R1"], trained["t2i_R1"]) <= 95.0, trained
