"""Full-state training checkpoints: model, optimizer, scheduler, scaler, RNG, data position.

Files are `step_{N:08d}.pt`, written to a temporary name and renamed, so a crash never leaves
a half-written checkpoint that `latest` would pick. They load with `weights_only=True`.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from vlpbench.reports.store import respect_umask

_NAME = re.compile(r"^step_(\d{8})\.pt$")


class CheckpointError(ValueError):
    pass


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step_{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def save_checkpoint(directory: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory, step)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    respect_umask(tmp)
    try:
        torch.save(state, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for _, old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return target


REQUIRED_KEYS = ("model", "optimizer", "scheduler", "step")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint written by `save_checkpoint`; anything else is a CheckpointError saying what to pass."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or foreign file
        raise CheckpointError(f"{path} is not a readable training checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'}); resume from "
                              "another step_*.pt of the job's checkpoints/ folder, or --resume latest") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a vlpbench training checkpoint (no {', '.join(missing)}); pass a "
                              "step_*.pt file of a job's checkpoints/ folder, or --resume latest")
    return state


def checkpoint_fingerprint(path: Path) -> str | None:
    """The job fingerprint a checkpoint was written under."""
    return load_checkpoint(path).get("job_fingerprint")


def resolve_resume(resume: str | None, directory: Path, log: Any = print) -> Path | None:
    """None -> fresh start; 'latest' -> the newest checkpoint in directory that reads back (a damaged newest one is
    skipped, with a message, for the one before it), or a fresh start when there is none (said too); else a path."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(directory)
        for _, path in reversed(found):
            try:
                load_checkpoint(path)
                return path
            except CheckpointError as err:
                log(f"resume: skipping a damaged checkpoint: {err}")
        log(f"resume: no {'intact ' if found else ''}checkpoint in {directory}: starting from step 0")
        return None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume {resume}: no such checkpoint file (use 'latest' or a step_*.pt path)")
    return path
