"""Shared steps of the acceptance tests: run a method's default job at a size, evaluate its untrained copy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlpbench.benchmarks import cli
from vlpbench.benchmarks.data import open_dataset
from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from vlpbench.benchmarks.job import Job
from vlpbench.benchmarks.pipeline import build_tokenizer, prepare_init
from vlpbench.benchmarks.suite import Suite
from vlpbench.methods import create_method
from vlpbench.reports.store import EvaluationRecord, read_evaluation


@dataclass(frozen=True)
class DefaultJob:
    job_dir: Path
    itc: EvaluationRecord                 # the zero-shot ITC record
    lineage_stages: list[str]

    def record(self, benchmark: str) -> EvaluationRecord:
        return read_evaluation(self.job_dir / "eval" / benchmark / "results.json")

    def history(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.job_dir / "history.jsonl").read_text().splitlines()]


def run_default_job(method: str, output: Path, size: str = "cpu",
                    benchmarks: tuple[str, ...] = ("zeroshot_retrieval",)) -> DefaultJob:
    """`vlpbench run --set methods=[method] --set sizes=[size]`: the size's default budget on the default built-in
    data, seed 0 (by default only the benchmark the acceptance checks read: the others have their own tests)."""
    assert cli.main(["run", "--set", f"methods=[{method}]", "--set", f"sizes=[{size}]",
                     "--set", f"benchmarks=[{','.join(benchmarks)}]", "--output", str(output), "--no-progress"]) == 0
    job = output / "default" / "jobs" / f"{method}-{size}-s0"
    itc = read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json")
    assert itc.protocol["n_images"] == 1000 and itc.protocol["scoring"] == "itc"
    lineage = json.loads((job / "model" / "model_config.json").read_text())["lineage"]
    return DefaultJob(job, itc, [e["stage"] for e in lineage])


def untrained_metrics(method: str, cache_root: Path, size: str = "cpu") -> dict[str, float]:
    """ITC metrics of the method's untrained copy: same config, init stages and tokenizer, no VL pretraining."""
    suite = Suite(methods=[method], sizes=[size])
    dataset = open_dataset("builtin", cache_root=cache_root)
    tokenizer = build_tokenizer(suite, dataset)
    overrides, _ = prepare_init(Job(suite, method, size, 0), dataset, tokenizer, cache_root, log=lambda _: None)
    torch.manual_seed(0)
    model = create_method(method, size, tokenizer=tokenizer, overrides=overrides)
    return evaluate_image_text(model, dataset.retrieval_split("test"), RetrievalProtocol(), torch.device("cpu"),
                               "fp32").metrics
