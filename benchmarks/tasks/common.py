"""What every benchmark's records share: the evaluation context of a job, the lineage line, the record write."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vlpbench.benchmarks.runtime import fingerprint, resolve_device, resolve_precision
from vlpbench.methods import VLPModel, get_spec
from vlpbench.methods.registry import read_model_meta
from vlpbench.reports.store import RESULTS_FILE, EvaluationRecord, write_record

if TYPE_CHECKING:
    from vlpbench.benchmarks.job import Job


def describe_lineage(lineage: list[dict[str, Any]]) -> str:
    """One line for reports: 'init (...) -> pretrained on builtin/pretrain (250 x 256)'."""
    parts = []
    for e in lineage:
        if e["stage"] == "unimodal-init":
            bits = []
            if "vision" in e:
                bits.append(f"ViT main-object classification {e['vision']['steps']} steps")
            if "text" in e:
                bits.append(f"BERT masked-LM {e['text']['steps']} steps")
            parts.append("unimodal init (" + ", ".join(bits) + ")")
        elif e["stage"] == "visual-tokenizer":
            parts.append(f"dVAE tokenizer ({e['vocab_size']} codes, {e['steps']} steps)")
        elif e["stage"] == "init":
            parts.append("init from " + ", ".join(f"{k}={v}" for k, v in e["supplied"].items()))
        elif e["stage"] == "released":
            parts.append(f"released weights {e['checkpoint']} ({e['format']}, sha256 {e['sha256'][:12]})")
        elif e["stage"] == "pretrain":
            parts.append(f"pretrained on {e['dataset']['dataset']}/{e['dataset']['split']} "
                         f"({e['steps']} x {e['batch_size']})")
        elif e["stage"] == "finetune":
            parts.append(f"fine-tuned on {e['dataset']['dataset']}/{e['dataset']['split']} "
                         f"({e['steps']} x {e['batch_size']})")
    return " -> ".join(parts) or "untrained"


def eval_context(job: Job, job_dir: Path, model: VLPModel) -> tuple[torch.device, str, list[dict[str, Any]]]:
    """(device, precision, the saved model's lineage) every evaluation of a job starts from; moves the model."""
    device = resolve_device(job.suite.device)
    model.to(device)
    lineage = read_model_meta(job_dir / "model")["lineage"]
    return device, resolve_precision(job.suite.precision, device), lineage


def write_evaluation(job: Job, out_dir: Path, config: dict[str, Any], device: torch.device, ref: Any, protocol: dict[str, Any],
           metrics: dict[str, float], lineage: list[dict[str, Any]], timings: dict[str, float]) -> Path:
    """One evaluation record (benchmark = the folder's name), written atomically under out_dir."""
    record = EvaluationRecord(
        suite=job.suite.name, job=job.name, method=job.method, variant=job.variant, size=job.size, seed=job.seed,
        config=config, environment=fingerprint(device), benchmark=out_dir.name, dataset=ref.to_json(),
        protocol=protocol, metrics=metrics, lineage=lineage, timings=timings, card=get_spec(job.method).card.to_json())
    return write_record(out_dir / RESULTS_FILE, record)
