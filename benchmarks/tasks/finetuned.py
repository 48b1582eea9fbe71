"""Fine-tuned image-text retrieval: the pretrained model fine-tuned with its method's recipe (finetune_step), then
evaluated like zero-shot; its own model folder jobs/<job>/finetune/, reused while its plan is unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import Field

from vlpbench.benchmarks.data import BuiltinDataset, open_dataset
from vlpbench.benchmarks.registry import BenchmarkSpec, register_benchmark
from vlpbench.benchmarks.runtime import resolve_device, resolve_precision
from vlpbench.benchmarks.suite import Budget, default_budget
from vlpbench.benchmarks.tasks.image_text import (EvalDataset, at_resolution, image_text_headline, image_text_record,
                                         image_text_sections, retrieval_split, zeroshot_protocols)
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.benchmarks.training.loop import Trainer
from vlpbench.methods import VLPModel, finetune_recipe, load_pretrained, save_pretrained
from vlpbench.methods.config import StrictModel, sha256_json
from vlpbench.reports.store import PretrainRecord, atomic_write_json

if TYPE_CHECKING:
    from vlpbench.benchmarks.job import Job


DEFAULT_FINETUNE: dict[str, dict[str, int]] = {
    "tiny": {"steps": 100, "batch_size": 128, "log_every": 10},
    "cpu": {"steps": 40, "batch_size": 128, "log_every": 10},
    "base": {"steps": 5000, "batch_size": 256, "log_every": 50, "checkpoint_every": 1000},
}


class FinetuneSpec(StrictModel):
    """Retrieval fine-tuning: each pretrained model is fine-tuned on a training split with its method's recipe
    (methods' FINETUNE_RECIPES) and evaluated on the test split; the lineage says so in every record."""

    train_split: str = Field("train", description="Split fine-tuned on (built-in: 5,000 images, one row per caption).")
    split: str = Field("test", description="Split evaluated after fine-tuning.")
    dataset: EvalDataset | None = Field(None, description="A real Karpathy set (Flickr30K / COCO from local files) to "
                                                          "fine-tune on (train_split) and evaluate (split) instead "
                                                          "of the built-in one; its `split` field is not used.")
    budget: dict[str, Budget] = Field(default_factory=dict, description="Steps / batch per size (defaults per size).")
    recipe_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                        description="Per method: merged over its fine-tuning recipe.")

    def budget_for(self, size: str) -> Budget:
        return self.budget[size] if size in self.budget else \
            Budget(**default_budget(DEFAULT_FINETUNE, size, "finetune.budget"))


def _finetune(job: Job, job_dir: Path, dataset: BuiltinDataset, pre: PretrainRecord, device: torch.device
              ) -> tuple[VLPModel, list[dict[str, Any]]]:
    """The job's model fine-tuned for retrieval (reused when finetune/finetune.json matches), and its lineage."""
    suite, spec = job.suite, job.suite.finetune
    budget = spec.budget_for(job.size)
    recipe = finetune_recipe(job.method, job.size, spec.recipe_overrides.get(job.label))
    corpus = _finetune_source(job, dataset, pre)[0].pretrain_corpus(spec.train_split) if spec.dataset \
        else dataset.finetune_corpus(spec.train_split)
    plan = {"from_pretrain": pre.job_fingerprint, "dataset": corpus.ref.to_json(), "seed": job.seed,
            "budget": budget.model_dump(mode="json"), "recipe": recipe.model_dump(mode="json"),
            "objective": "the method's finetune_step",
            "precision": suite.precision, "device": suite.device, **({"compile": True} if suite.compile else {})}
    fp = sha256_json(plan)
    ft_dir = job_dir / "finetune"
    record_path = ft_dir / "finetune.json"
    if record_path.is_file() and json.loads(record_path.read_text()).get("fingerprint") == fp:
        model, meta = load_pretrained(ft_dir / "model")
        return model.to(device), meta["lineage"]
    shutil.rmtree(ft_dir, ignore_errors=True)
    model, meta = load_pretrained(job_dir / "model")        # a fresh copy: the zero-shot model stays as it was
    model.start_finetuning()   # e.g. TCL's id queue starts at -100, as the official model_retrieval.py
    lineage = meta["lineage"]
    data = PretrainBatches(corpus, model, budget.batch_size, job.seed, fields=model.finetune_fields)
    tcfg = suite.train_config(budget, job.seed, recipe)
    with torch.enable_grad():
        summary = Trainer(model, data, tcfg, ft_dir, progress=False, job_fingerprint=fp, stage="finetune").fit()
    lineage = [*lineage, {"stage": "finetune", "dataset": corpus.ref.to_json(), "steps": summary.steps,
                          "batch_size": budget.batch_size, "seed": job.seed, "from": "pretrain",
                          "recipe_source": recipe.source, "fingerprint": fp}]
    save_pretrained(model, ft_dir / "model", job.method, job.size, lineage)
    atomic_write_json(record_path, {"fingerprint": fp, "plan": plan, "summary": summary.to_json()})
    return model.to(device), lineage


def _finetune_source(job: Job, dataset: BuiltinDataset, pre: PretrainRecord) -> tuple[Any, dict[str, Any]]:
    """The dataset fine-tuned on and evaluated (built-in, or a real Karpathy set decoded at the model's
    resolution), and the protocol fields saying how it was read."""
    real = job.suite.finetune.dataset
    if real is None:
        return dataset, {}
    res = int(pre.config["method"]["preprocess"]["resolution"])
    options = {"image_size": res, **real.options}
    source = open_dataset(real.name, real.root, options)
    return source, {"image_decode": f"Resize(({options['image_size']}, {options['image_size']})) bicubic, aspect "
                                    "not kept (ALBEF/TCL retrieval transform)", "annotation_format": source.format}


def evaluate_finetuned(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                        config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    device = resolve_device(job.suite.device)
    precision = resolve_precision(job.suite.precision, device)
    tuned, lineage = _finetune(job, job_dir, dataset, pre, device)
    source, read_as = _finetune_source(job, dataset, pre)
    tuned_on = lineage[-1]["dataset"]
    recipe = {"finetune_recipe": tuned_recipe_source(lineage)}
    own = (source.retrieval_split(job.suite.finetune.split), {**read_as, **recipe})
    written = {}
    for name, (real, proto) in zeroshot_protocols(job, tuned, "finetuned_retrieval").items():
        # the suite's real sets too: a model fine-tuned on one set evaluated on another is ALBEF/TCL's
        # "zero-shot Flickr30K" (the COCO-fine-tuned model) — labelled as a transfer, never as zero-shot
        evaluated = at_resolution(tuned, real)
        split, how = own if real is None else retrieval_split(job, real, dataset, evaluated)
        same = split.ref.dataset == tuned_on["dataset"]
        setting = "fine-tuned" if same else f"transfer: fine-tuned on {tuned_on['dataset']}/{tuned_on['split']}"
        written[name] = image_text_record(job, job_dir / "eval" / name, evaluated, split, proto, setting, lineage,
                                           "", {**how, **recipe}, config, device, precision)
    return written


def tuned_recipe_source(lineage: list[dict[str, Any]]) -> str:
    return next((e.get("recipe_source", "") for e in reversed(lineage) if e["stage"] == "finetune"), "")


register_benchmark(BenchmarkSpec(
    name="finetuned_retrieval", section="finetune", settings=FinetuneSpec, run=evaluate_finetuned,
    records=lambda job, model: list(zeroshot_protocols(job, model, "finetuned_retrieval")),
    headline=image_text_headline, in_default_suite=True, always_in_config=True,
    describe_split=lambda suite: f"{suite.finetune.train_split} -> {suite.finetune.split}",
    description="image-text retrieval after fine-tuning with the method's recipe",
    report=image_text_sections("finetuned_retrieval", "Fine-tuned", 20)))
