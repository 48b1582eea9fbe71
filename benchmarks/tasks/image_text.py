"""Image-text retrieval shared by the zero-shot and fine-tuned benchmarks: real Karpathy sets, the protocols a
model is evaluated under (ITC, and top-k re-ranking for fusion models), the record and its headline."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from vlpbench.benchmarks.data import BuiltinDataset, open_dataset
from vlpbench.benchmarks.data.types import RetrievalSplit
from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from vlpbench.benchmarks.suite import NAME_PATTERN
from vlpbench.benchmarks.tasks.common import describe_lineage, write_evaluation
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel
from vlpbench.methods.distributed import world
from vlpbench.reports.sections import ReportSection
from vlpbench.reports.store import RANKS_FILE, RESULTS_FILE, save_ranks

if TYPE_CHECKING:
    from vlpbench.benchmarks.job import Job


class EvalDataset(StrictModel):
    """A real image-text retrieval set read from local files (nothing is downloaded), evaluated zero-shot beside
    the suite's own split."""

    name: Literal["flickr30k", "coco"]
    root: str = Field(description="The dataset folder (annotations + images; `vlpbench data verify` checks it).")
    split: Literal["train", "val", "test"] = "test"
    options: dict[str, Any] = Field(default_factory=dict, description="Layout fields (KarpathyLayout); "
                                                                      "image_size defaults to the model's resolution.")
    rerank_k: int | None = Field(None, ge=10, description="k for re-ranking on this set; None = the method card's "
                                                         "k for it (TCL: k_test 128 Flickr30K, 256 COCO), else "
                                                         "retrieval.rerank_k.")
    label: str | None = Field(None, pattern=NAME_PATTERN, description="Record name suffix; default: the name.")
    resolution: int | None = Field(None, ge=16, description="Evaluate this set at another input size than the "
                                                            "model's (a copy of it, ViT position embeddings resampled "
                                                            "bicubically as ALBEF/TCL's interpolate_pos_embed): TCL's "
                                                            "released protocol is 384 for a 256 px model.")
    omit_when_default = frozenset({"resolution"})

    @property
    def key(self) -> str:
        return self.label or self.name


def zeroshot_protocols(job: Job, model: VLPModel, prefix: str = "zeroshot_retrieval"
                        ) -> dict[str, tuple[EvalDataset | None, RetrievalProtocol]]:
    """{record name: (real dataset or None = the suite's split, protocol)}: ITC for every model, plus top-k
    re-ranking for fusion models, on the suite's split and on every real set of retrieval.datasets."""
    spec = job.suite.retrieval
    rerank = spec.rerank and model.supports_rerank
    scoring = spec.rerank_scoring or model.card.default_protocol.get("scoring", "itm")
    out: dict[str, tuple[EvalDataset | None, RetrievalProtocol]] = {}
    for real in [None, *spec.datasets]:
        suffix = "" if real is None else f"@{real.key}"
        out[prefix + suffix] = (real, spec.protocol)
        if rerank:
            k = spec.rerank_k if real is None else real.rerank_k or card_k(model, real.name) or spec.rerank_k
            out[prefix + "_rerank" + suffix] = (real, spec.protocol.model_copy(
                update={"scoring": scoring, "rerank_k": k}))
    return out


def card_k(model: VLPModel, dataset: str) -> int | None:
    """The re-ranking k a method's card gives for a real dataset (TCL: k_test 128 Flickr30K, 256 COCO)."""
    k = model.card.default_protocol.get("rerank_k")
    return k.get(dataset) if isinstance(k, dict) else k


def retrieval_split(job: Job, real: EvalDataset | None, dataset: BuiltinDataset, model: VLPModel
                     ) -> tuple[RetrievalSplit, dict[str, Any]]:
    """The split a zero-shot record is computed on, and the protocol fields saying how it was read."""
    if real is None:
        return dataset.retrieval_split(job.suite.retrieval.split), {}
    options = dict(real.options)
    options.setdefault("image_size", int(model.preprocess.config.resolution))  # decode once, at the model's size
    options.setdefault("image_resize", model.preprocess.config.resize_mode)
    source = open_dataset(real.name, real.root, options)
    split = source.retrieval_split(real.split)
    size = options["image_size"]
    decode = (f"Resize(({size}, {size})) bicubic, aspect not kept (ALBEF/TCL retrieval transform)"
              if options["image_resize"] == "squash" else f"Resize({size}) shortest side, bicubic, CenterCrop({size})")
    return split, {"image_decode": decode, "annotation_format": source.format,
                   "captions": "raw from the annotation file"}


def at_resolution(model: VLPModel, real: EvalDataset | None) -> VLPModel:
    """The model a real set is evaluated with: itself, or a copy at the set's `resolution` (position embeddings
    resampled; the copy's `resolution_changes` say from what)."""
    if real is None or real.resolution is None or real.resolution == model.preprocess.config.resolution:
        return model
    resized = copy.deepcopy(model)
    resized.set_eval_resolution(real.resolution)
    return resized


def image_text_record(job: Job, out_dir: Path, model: VLPModel, split: RetrievalSplit, proto: RetrievalProtocol,
                       setting: str, lineage: list[dict[str, Any]], lineage_note: str, read_as: dict[str, Any],
                       config: dict[str, Any], device: torch.device, precision: str) -> Path:
    """Evaluate image-text retrieval on a split and write its record (ranks first, then results.json)."""
    outcome = evaluate_image_text(model, split, proto, device, precision)
    protocol = {
        "task": "image-text retrieval", "setting": setting, "lineage": describe_lineage(lineage) + lineage_note,
        "split": f"{split.ref.dataset}/{split.ref.split}", "n_images": split.n_images, "n_texts": split.n_texts,
        "captions_per_image": split.captions_per_image(),
        "resolution": int(model.preprocess.config.resolution), "text_max_length": model.text_max_length,
        **({"resolution_changes": model.resolution_changes} if getattr(model, "resolution_changes", None) else {}),
        "scoring": proto.scoring, "rerank_k": proto.rerank_k, "tie_policy": proto.tie_policy,
        "prompt": proto.prompt, "precision": precision, "metric_units": "percent", "rank_base": 1,
        "tokenizer": config["tokenizer"]["fingerprint"][:16], **read_as,
    }
    if proto.rerank_k is not None:
        protocol["ranks_beyond_k"] = f"censored at {proto.rerank_k + 1}"
    rank, size = world()
    protocol["eval_processes"] = size
    if rank != 0:   # a process group evaluates together; rank 0 writes what every process computed
        return out_dir / RESULTS_FILE
    save_ranks(out_dir / RANKS_FILE, i2t=outcome.i2t_ranks, t2i=outcome.t2i_ranks)
    return write_evaluation(job, out_dir, config, device, split.ref, protocol, outcome.metrics, lineage, outcome.timings)


def image_text_headline(metrics: Mapping[str, float]) -> str:
    return f"RSUM {metrics['rsum']:.1f}  i2t R@1 {metrics['i2t_R1']:.1f}  t2i R@1 {metrics['t2i_R1']:.1f}"


def image_text_sections(benchmark: str, setting: str, order: int) -> tuple[ReportSection, ReportSection]:
    """The report sections of an image-text benchmark: its ITC records and its re-ranking records."""
    return (ReportSection(benchmark, f"{setting} image-text retrieval (ITC)", "image_text", order),
            ReportSection(f"{benchmark}_rerank", f"{setting} image-text retrieval (top-k re-ranking)", "image_text",
                          order + 1))
