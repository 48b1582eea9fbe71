"""Result records and their storage: the contract between the harness and the reports.

The harness writes a `results.json` per evaluation and a `pretrain.json` per pretraining job,
each atomically (temporary file, fsync, rename) before anything is logged elsewhere; a crash
leaves either the previous file or none, never half a result. Reports read these records back
(from a run folder or from MLflow artifacts) through the same models, so both sides agree on
one schema.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"
PRETRAIN_FILE = "pretrain.json"
RANKS_FILE = "ranks.npz"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def respect_umask(path: Path | str, directory: bool = False) -> None:
    """Give a file made by mkstemp (0600) or a folder made by mkdtemp (0700) the mode an ordinary open() or
    mkdir() would have, so a lab's shared MLflow UI or cache can read what vlpbench writes."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    respect_umask(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_ranks(path: Path, **ranks: np.ndarray) -> Path:
    """Per-query ranks (1-based) for later bootstrap intervals, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp.npz", dir=path.parent)
    os.close(fd)
    respect_umask(tmp)
    try:
        np.savez_compressed(tmp, **{k: np.asarray(v, dtype=np.int64) for k, v in ranks.items()})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: Literal[1] = SCHEMA_VERSION
    suite: str
    job: str                      # e.g. "clip-tiny-s0"
    method: str
    size: str
    seed: int
    variant: str | None = None    # a suite variant of the method (its own overrides), e.g. "ernie_vil2-no-tags"
    config: dict[str, Any]        # resolved job configuration (method, recipe, budget, dataset, tokenizer)
    environment: dict[str, Any]   # hardware/software fingerprint incl. git commit and dirty flag
    created_utc: str = Field(default_factory=utc_now)


    @property
    def label(self) -> str:
        """The name reports show: the variant's when there is one, else the method's."""
        return self.variant or self.method


class PretrainRecord(_Record):
    kind: Literal["pretrain"] = "pretrain"
    job_fingerprint: str
    dataset: dict[str, str]       # DatasetRef of the pretraining split
    summary: dict[str, Any]       # steps, samples, wall time, final losses, precision, device...
    model_dir: str                # where the trained weights were saved (relative to the job folder)
    history_file: str = "history.jsonl"
    card: dict[str, Any]


class EvaluationRecord(_Record):
    kind: Literal["evaluation"] = "evaluation"
    benchmark: str                # e.g. "zeroshot_retrieval"
    dataset: dict[str, str]       # DatasetRef of the evaluated split
    protocol: dict[str, Any]      # everything that makes two numbers comparable
    metrics: dict[str, float]
    lineage: list[dict[str, Any]]  # checkpoint history: which stage trained on what, from which weights
    timings: dict[str, float] = Field(default_factory=dict)
    ranks_file: str | None = RANKS_FILE
    card: dict[str, Any]
    # `vlpbench reproduce`: the claim this record was evaluated for and its verdict (claim id, status, tolerance,
    # per-metric claimed / ours / bootstrap interval); None for every other record.
    reproduction: dict[str, Any] | None = None


class RecordNotSaved(OSError):
    """A record could not be written where it belongs; the message says where it was kept instead."""


def write_record(path: Path, record: _Record) -> Path:
    """Write a record atomically. When its folder cannot be written (read-only, full), the record — an evaluation
    that may have taken hours — is kept in the temporary folder and RecordNotSaved says where and what to do."""
    payload = record.model_dump(mode="json")
    try:
        return atomic_write_json(path, payload)
    except OSError as err:
        import hashlib

        spare = Path(tempfile.gettempdir()) / "vlpbench-unsaved" / hashlib.sha256(str(path).encode()).hexdigest()[:12]
        kept = atomic_write_json(spare / path.name, {"intended_path": str(path), **payload})
        raise RecordNotSaved(f"cannot write {path} ({err.strerror or err}); the record was kept in {kept} "
                             f"(with its intended path): make {path.parent} writable, move it there without the "
                             "'intended_path' field, and run the command again to log it") from None


def read_evaluation(path: Path) -> EvaluationRecord:
    return EvaluationRecord.model_validate_json(path.read_text())


def read_pretrain(path: Path) -> PretrainRecord:
    return PretrainRecord.model_validate_json(path.read_text())
