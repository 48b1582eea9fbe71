"""Inference latency per stage (warm-up, synchronised timing, p50/p95/p99) and the per-query cost of each
retrieval design at gallery sizes N."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.evaluation.latency import LatencyProtocol, latency_metrics, measure_latency
from vlpbench.benchmarks.registry import BenchmarkSpec, register_benchmark
from vlpbench.benchmarks.runtime import seed_everything
from vlpbench.benchmarks.tasks.common import eval_context, write_evaluation
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel
from vlpbench.reports.sections import ReportSection
from vlpbench.reports.store import PretrainRecord

if TYPE_CHECKING:
    from vlpbench.benchmarks.job import Job


class LatencySpec(StrictModel):
    protocol: LatencyProtocol = Field(default_factory=LatencyProtocol)
    text_split: str = Field("test", description="Captions timed for text encoding (their lengths matter).")


def evaluate_latency(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                      config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    suite = job.suite
    device, precision, lineage = eval_context(job, job_dir, model)
    proto = suite.latency.protocol
    texts = list(dataset.retrieval_split(suite.latency.text_split).texts)
    seed_everything(job.seed)
    result = measure_latency(model, texts, proto, device, precision, seed=job.seed)
    protocol = {
        "task": "inference latency", "batch_size": proto.batch_size, "gallery_sizes": proto.gallery_sizes,
        "top_k": proto.top_k, "rerank_k (re-ranking models)": proto.rerank_k,
        "cross_batch (re-ranking models)": proto.cross_batch, "warmup": proto.warmup, "warmup_s": proto.warmup_s,
        "repeats": proto.repeats, "min_time_s": proto.min_time_s,
        "timed": "model forward only; tokenisation timed apart; preprocessing and data loading excluded; device "
                 "synchronised around every call",
        "gallery": "random unit vectors of the embedding size (scoring cost does not depend on content)",
        "exhaustive": "extrapolated: text encoding + N x (cross-encoder time per pair at cross_batch)",
        "texts": f"the first {proto.batch_size} captions of {dataset.name}/{suite.latency.text_split}",
        "precision": precision, "device": str(device), "torch_threads": proto.threads or torch.get_num_threads(),
        "model inputs": "each model at its own resolution and text length (metrics model/*); weights do not "
                        "change timings, so lineage is not part of this protocol"}
    metrics = {**latency_metrics(result), "model/resolution": float(model.preprocess.config.resolution),
               "model/text_max_length": float(model.text_max_length)}
    return {"latency": write_evaluation(job, job_dir / "eval" / "latency", config, device, dataset.ref(suite.latency.text_split),
                              protocol, metrics, lineage, {})}


def latency_headline(metrics: Mapping[str, float]) -> str:
    big = max(int(k.split("@")[1].split("/")[0]) for k in metrics if k.startswith("search@"))
    line = (f"image batch p50 {metrics['encode_image/p50_ms']:.1f} ms ({metrics['encode_image/throughput_per_s']:.0f}"
            f"/s)  text batch p50 {metrics['encode_text/p50_ms']:.1f} ms  search@{big} p50 "
            f"{metrics[f'search@{big}/p50_ms']:.3f} ms")
    if f"ratios/exhaustive_over_dual@{big}" in metrics:
        line += f"  exhaustive/dual@{big} {metrics[f'ratios/exhaustive_over_dual@{big}']:.0f}x"
    return line


register_benchmark(BenchmarkSpec(
    name="latency", section="latency", settings=LatencySpec, run=evaluate_latency,
    records=lambda job, model: ["latency"], headline=latency_headline,
    describe_split=lambda suite: suite.latency.text_split, in_default_suite=True, always_in_config=True,
    description="per-stage inference latency and the per-query cost of each retrieval design",
    report=(ReportSection("latency", "Inference latency (per stage, p50 of repeated calls after warm-up)", "latency",
                          50),)))
