"""A benchmark in one file, as docs/architecture.md's "add a benchmark" walkthrough writes it: the modality gap.

The modality gap (Liang et al., NeurIPS 2022, "Mind the Gap") is the distance between the centroids of a
contrastive model's image and text embeddings. It has a closed form on L2-normalised embeddings:
``gap = || mean(image_emb) - mean(text_emb) ||``, reported with the mean cosine of matched pairs.

Importing this module registers it; `unregister_benchmark("modality_gap")` removes it (tests clean up).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.registry import BenchmarkSpec, register_benchmark
from vlpbench.benchmarks.tasks.common import eval_context, write_evaluation
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel
from vlpbench.reports.sections import ReportSection
from vlpbench.reports.store import PretrainRecord


class GapSettings(StrictModel):
    split: str = Field("test", description="The built-in split whose first n_pairs image-caption pairs are embedded.")
    n_pairs: int = Field(64, ge=2, description="Pairs embedded (the first caption of each image).")


def modality_gap(image_emb: torch.Tensor, text_emb: torch.Tensor) -> dict[str, float]:
    """Pure: centroid distance and matched-pair cosine of row-aligned, L2-normalised embeddings."""
    gap = (image_emb.mean(0) - text_emb.mean(0)).norm().item()
    return {"gap": gap, "matched_cosine": (image_emb * text_emb).sum(-1).mean().item()}


def evaluate_gap(job: Any, job_dir: Path, model: VLPModel, dataset: BuiltinDataset, config: dict[str, Any],
                 pre: PretrainRecord) -> dict[str, Path]:
    settings: GapSettings = job.suite.section("gap")   # type: ignore[assignment]
    device, precision, lineage = eval_context(job, job_dir, model)
    split = dataset.retrieval_split(settings.split)
    n = min(settings.n_pairs, split.n_images)
    images = model.preprocess.eval(split.images.get(np.arange(n))).to(device)
    first = [int(np.flatnonzero(split.txt2img == i)[0]) for i in range(n)]
    texts = model.tokenize([split.texts[t] for t in first]).to(device)
    metrics = modality_gap(model.encode_image(images).float(), model.encode_text(texts).float())
    protocol = {"task": "modality gap", "split": f"{split.ref.dataset}/{split.ref.split}", "n_pairs": n,
                "pairs": "each image with its first caption", "precision": precision}
    return {"modality_gap": write_evaluation(job, job_dir / "eval" / "modality_gap", config, device, split.ref,
                                             protocol, metrics, lineage, {})}


def gap_headline(metrics: Mapping[str, float]) -> str:
    return f"gap {metrics['gap']:.3f}  matched cosine {metrics['matched_cosine']:.3f}"


SPEC = register_benchmark(BenchmarkSpec(
    name="modality_gap", section="gap", settings=GapSettings, run=evaluate_gap,
    records=lambda job, model: ["modality_gap"], headline=gap_headline,
    describe_split=lambda suite: suite.section("gap").split, description="distance between the modalities' centroids",
    report=(ReportSection("modality_gap", "Modality gap (centroid distance)", "metrics", 60),)))
