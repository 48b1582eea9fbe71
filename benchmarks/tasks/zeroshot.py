"""Zero-shot image-text retrieval: ITC for every model, top-k re-ranking for fusion models, on the suite's split
and on real Karpathy sets (records `zeroshot_retrieval@<label>`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.data.types import RetrievalSplit
from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol
from vlpbench.benchmarks.registry import BenchmarkSpec, register_benchmark
from vlpbench.benchmarks.tasks.common import eval_context
from vlpbench.benchmarks.tasks.image_text import (EvalDataset, at_resolution, image_text_headline, image_text_record,
                                         image_text_sections, retrieval_split, zeroshot_protocols)
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel
from vlpbench.reports.store import PretrainRecord

if TYPE_CHECKING:
    from vlpbench.benchmarks.job import Job


class RetrievalSpec(StrictModel):
    split: str = "test"
    datasets: list[EvalDataset] = Field(default_factory=list,
                                        description="Real retrieval sets (Karpathy Flickr30K/COCO) also evaluated "
                                                    "zero-shot; records 'zeroshot_retrieval@<label>'.")

    @field_validator("datasets")
    @classmethod
    def _unique_labels(cls, v: list[EvalDataset]) -> list[EvalDataset]:
        keys = [d.key for d in v]
        if len(set(keys)) != len(keys):
            raise ValueError(f"retrieval.datasets: labels {keys} repeat; give each entry its own 'label'")
        return v
    protocol: RetrievalProtocol = Field(default_factory=RetrievalProtocol,
                                        description="The ITC evaluation every method gets.")
    rerank: bool = Field(True, description="Also evaluate models with a re-ranking head with top-k re-ranking.")
    rerank_scoring: Literal["itm", "itm+itc"] | None = Field(
        None, description="None = the method's own protocol (TCL/ALBEF: itm; LAVIS/BLIP: itm+itc).")
    # ≥ 10: ranks beyond k are censored at k + 1, so R@K is only observed for K ≤ k (R@10 is reported)
    rerank_k: int = Field(16, ge=10, description="k on the built-in 1K test split (Flickr30K: 128, COCO: 256); "
                                               "kept small so the CPU default suite stays minutes long.")


def evaluate_zeroshot(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                       config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    device, precision, lineage = eval_context(job, job_dir, model)
    written = {}
    splits: dict[str, tuple[RetrievalSplit, dict[str, Any]]] = {}
    models: dict[str, VLPModel] = {}
    for name, (real, proto) in zeroshot_protocols(job, model).items():
        key = "" if real is None else real.key
        if key not in splits:
            models[key] = at_resolution(model, real)
            splits[key] = retrieval_split(job, real, dataset, models[key])
        split, read_as = splits[key]
        written[name] = image_text_record(job, job_dir / "eval" / name, models[key], split, proto, "zero-shot",
                                           lineage, " (no fine-tuning)", read_as, config, device, precision)
    return written


register_benchmark(BenchmarkSpec(
    name="zeroshot_retrieval", section="retrieval", settings=RetrievalSpec, run=evaluate_zeroshot,
    records=lambda job, model: list(zeroshot_protocols(job, model)), headline=image_text_headline,
    describe_split=lambda suite: suite.retrieval.split, distributed=True, in_default_suite=True,
    always_in_config=True, description="image-text retrieval of the pretrained model (no fine-tuning)",
    report=image_text_sections("zeroshot_retrieval", "Zero-shot", 10)))
