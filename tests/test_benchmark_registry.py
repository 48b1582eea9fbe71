"""Benchmarks are registered objects: a benchmark in one file (tests/extensions/toy_benchmark.py) gets its suite
section, its runner, its headline and its report section, and leaves the job fingerprint alone."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vlpbench.benchmarks.pipeline import job_fingerprint, resolved_config, run_job
from vlpbench.benchmarks.registry import (BenchmarkSpec, default_benchmarks, get_benchmark, list_benchmarks,
                                 register_benchmark, unregister_benchmark)
from vlpbench.benchmarks.suite import load_suite
from vlpbench.methods.config import ConfigError, StrictModel
from vlpbench.reports.store import read_evaluation
from tests.conftest import MICRO_CLIP, SMALL_WORLD

BUILTIN = ["zeroshot_retrieval", "finetuned_retrieval", "video_retrieval", "product_retrieval", "latency"]


@pytest.fixture
def toy() -> Iterator[Any]:
    sys.modules.pop("tests.extensions.toy_benchmark", None)
    module = importlib.import_module("tests.extensions.toy_benchmark")
    try:
        yield module
    finally:
        unregister_benchmark("modality_gap")
        sys.modules.pop("tests.extensions.toy_benchmark", None)


def _suite(**extra: Any) -> dict[str, Any]:
    return {"name": "toy", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
            "train": {"tiny": {"steps": 2, "batch_size": 16, "log_every": 1}},
            "method_overrides": {"clip": MICRO_CLIP}, **extra}


def test_builtin_benchmarks_are_registered_in_run_order_with_their_sections() -> None:
    assert list_benchmarks() == BUILTIN and default_benchmarks() == BUILTIN
    assert {n: get_benchmark(n).section for n in BUILTIN} == {
        "zeroshot_retrieval": "retrieval", "finetuned_retrieval": "finetune", "video_retrieval": "video",
        "product_retrieval": "products", "latency": "latency"}
    assert [n for n in BUILTIN if get_benchmark(n).distributed] == ["zeroshot_retrieval"]
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'; registered: zeroshot_retrieval"):
        get_benchmark("nope")


def test_a_registered_benchmark_gets_a_validated_suite_section_and_leaves_the_default_suite(toy: Any) -> None:
    assert "modality_gap" in list_benchmarks() and "modality_gap" not in default_benchmarks()   # opt-in
    suite = load_suite(None, _suite(benchmarks=["modality_gap"], gap={"n_pairs": 8}))
    assert suite.section("gap").n_pairs == 8 and suite.gap.split == "test"
    assert load_suite(None, {}).gap.n_pairs == 64                       # the default settings, when not named
    with pytest.raises(ConfigError, match=r"gap\.n_pairs: .*greater than or equal to 2"):
        load_suite(None, _suite(gap={"n_pairs": 1}))
    with pytest.raises(ConfigError, match=r"gap\.pairs: unknown option"):
        load_suite(None, _suite(gap={"pairs": 3}))


def test_the_section_is_gone_once_the_benchmark_is_unregistered(toy: Any) -> None:
    unregister_benchmark("modality_gap")
    try:
        with pytest.raises(ConfigError, match="gap: unknown option"):
            load_suite(None, _suite(gap={"n_pairs": 8}))
        with pytest.raises(ConfigError, match="unknown benchmark"):
            load_suite(None, _suite(benchmarks=["modality_gap"]))
    finally:
        register_benchmark(toy.SPEC)


def test_registration_refuses_a_taken_name_or_section_and_unknown_fingerprinted_fields(toy: Any) -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register_benchmark(toy.SPEC)
    other = BenchmarkSpec(name="gap2", section="video", settings=toy.GapSettings, run=toy.evaluate_gap,
                          records=lambda job, model: [], headline=toy.gap_headline, describe_split=str)
    with pytest.raises(ValueError, match="section 'video' belongs to 'video_retrieval'"):
        register_benchmark(other)
    with pytest.raises(ValueError, match=r"fingerprinted settings \['width'\] are not fields of GapSettings"):
        register_benchmark(BenchmarkSpec(name="gap3", section="gap3", settings=toy.GapSettings, run=toy.evaluate_gap,
                                         records=lambda job, model: [], headline=toy.gap_headline,
                                         describe_split=str, fingerprinted=frozenset({"width"})))
    assert "gap2" not in list_benchmarks() and "gap3" not in list_benchmarks()


class _Weighted(StrictModel):
    lr_scale: float = 1.0
    n: int = 4


def test_only_fingerprinted_settings_enter_the_job_fingerprint() -> None:
    config = {"method": {"name": "clip"}, "train": {"steps": 2, "checkpoint_every": 5},
              "retrieval": {"rerank_k": 16}, "wsec": {"lr_scale": 1.0, "n": 4}}
    base = job_fingerprint({k: v for k, v in config.items() if k != "wsec"})
    spec = BenchmarkSpec(name="weighted", section="wsec", settings=_Weighted, run=lambda *a: {},
                         records=lambda job, model: [], headline=str, describe_split=str,
                         fingerprinted=frozenset({"lr_scale"}))
    register_benchmark(spec)
    try:
        fp = job_fingerprint(config)
        assert fp != base                                                       # lr_scale is keyed
        assert job_fingerprint({**config, "wsec": {"lr_scale": 1.0, "n": 9}}) == fp   # n is not
        assert job_fingerprint({**config, "wsec": {"lr_scale": 2.0, "n": 4}}) != fp
        assert job_fingerprint({**config, "retrieval": {"rerank_k": 99}}) == fp       # evaluation settings: never
        assert job_fingerprint({**config, "train": {"steps": 2, "checkpoint_every": 7}}) == fp
    finally:
        unregister_benchmark("weighted")


def test_a_suite_runs_the_registered_benchmark_and_reuses_its_record(toy: Any, tmp_path: Path,
                                                                     cache_root: Path) -> None:
    from vlpbench.benchmarks.data import open_dataset
    from vlpbench.benchmarks.job import expand_jobs
    from vlpbench.benchmarks.pipeline import build_tokenizer, pretrain_corpus

    suite = load_suite(None, _suite(benchmarks=["modality_gap"], gap={"n_pairs": 16}))
    job = expand_jobs(suite)[0]
    logs: list[str] = []
    outcome = run_job(job, tmp_path, progress=False, cache_root=cache_root, log=logs.append)
    record = read_evaluation(outcome.results["modality_gap"])
    assert record.benchmark == "modality_gap" and record.protocol["n_pairs"] == 16
    assert 0.0 <= record.metrics["gap"] <= 2.0 and -1.0 <= record.metrics["matched_cosine"] <= 1.0
    assert any(line.endswith("modality_gap on builtin/test") for line in logs)
    assert get_benchmark("modality_gap").headline(record.metrics).startswith("gap ")
    config = json.loads((tmp_path / "jobs" / job.name / "config.json").read_text())
    assert config["gap"] == {"split": "test", "n_pairs": 16}     # a benchmark the suite runs: its settings recorded

    # The pure metric against its closed form: unit vectors e0 (images) and e1 (texts) are sqrt(2) apart.
    e = torch.eye(2)
    assert toy.modality_gap(e[[0, 0]], e[[1, 1]]) == pytest.approx({"gap": 2 ** 0.5, "matched_cosine": 0.0})

    again = run_job(job, tmp_path, progress=False, cache_root=cache_root, log=logs.append)
    assert again.reused == ["pretrain", "modality_gap"]
    dataset = open_dataset("builtin", options=SMALL_WORLD, cache_root=cache_root)
    other = load_suite(None, _suite(benchmarks=["modality_gap"], gap={"n_pairs": 8}))
    tokenizer = build_tokenizer(other, dataset, pretrain_corpus(other, dataset))
    changed = resolved_config(expand_jobs(other)[0], dataset, tokenizer)
    # the evaluation setting changed, the trained weights did not: the same job fingerprint, no pretraining again
    assert changed["gap"] != record.config["gap"] and job_fingerprint(changed) == job_fingerprint(record.config)
    third = run_job(expand_jobs(other)[0], tmp_path, progress=False, cache_root=cache_root, log=logs.append)
    assert third.reused == ["pretrain"] and read_evaluation(third.results["modality_gap"]).protocol["n_pairs"] == 8


def test_the_report_shows_a_registered_benchmark_under_its_own_title(toy: Any) -> None:
    from vlpbench.reports.markdown import render
    from vlpbench.reports.sections import section_of
    from vlpbench.reports.store import EvaluationRecord
    from tests.report_fixtures import ENV, SPLIT

    rec = EvaluationRecord(suite="toy", job="clip-tiny-s0", method="clip", size="tiny", seed=0, config={},
                           environment=ENV, card={}, benchmark="modality_gap", dataset=SPLIT,
                           protocol={"n_pairs": 16}, metrics={"gap": 0.8125, "matched_cosine": 0.25}, lineage=[])
    text = render([], [rec], suite="toy", source="files")
    assert "## Modality gap (centroid distance) — " in text
    assert "| method | size | seed | gap | matched_cosine |" in text and "| 0.81 | 0.25 |" in text
    unregister_benchmark("modality_gap")
    try:
        assert section_of("modality_gap").title == "modality_gap"      # still shown, under its own name
    finally:
        register_benchmark(toy.SPEC)
