"""Where and how computation runs: device, precision, seeding, and the environment fingerprint."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
    return torch.device(device)


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """'auto' is bf16 autocast on CUDA and fp32 on CPU (bf16 matmuls are unusably slow on CPUs
    without AVX512-BF16/AMX, such as this project's 2-core development machine)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 autocast needs CUDA; use fp32 (or bf16) on CPU")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_deterministic() -> None:
    """Deterministic kernels where they exist (CPU results then repeat bit for bit)."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy(), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def code_version(repo: Path | None = None) -> dict[str, Any]:
    """Git commit of the code that runs, and whether the tree had uncommitted changes.

    Read once per process and repository, at the first call (`vlpbench run` makes it at start-up): the
    code a process runs is what it loaded then, so a commit made while a long run is going must not
    relabel that run's results."""
    if _PINNED_CODE_VERSION and repo is None:
        return dict(_PINNED_CODE_VERSION)
    return dict(_code_version_once((repo or Path(__file__).resolve().parent.parent).resolve()))


_PINNED_CODE_VERSION: dict[str, Any] = {}


def pin_code_version(version: dict[str, Any]) -> None:
    """Use `version` as this process's code version: a job launched on a cluster records the commit its suite was
    submitted from (read there once, before submission), not whatever the shared checkout holds when the job
    starts hours later."""
    _PINNED_CODE_VERSION.clear()
    _PINNED_CODE_VERSION.update(version)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on `path`, for processes that share a folder: SLURM tasks building the
    same cached stage, or logging to the same MLflow store. Blocks until the lock is free."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class FolderBusy(RuntimeError):
    """Another live process works in the folder; the message names it."""


LOCK_FILE = ".vlpbench.lock"


@contextlib.contextmanager
def folder_lock(folder: Path, what: str = "vlpbench run") -> Iterator[str | None]:
    """Hold `folder` for this process (flock on folder/.vlpbench.lock, which names the holder). A live holder is
    refused at once (FolderBusy naming its pid, host and start); a holder that died without releasing is taken over,
    and the yielded message says so (else None). Two runs of one suite into one folder would mix their records."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with path.open("a+") as f:
        f.seek(0)
        previous = f.read().strip()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(f"{folder} is in use by {previous or 'another process'}; wait for it to finish, or give "
                             "another --output") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{what} (process {os.getpid()} on {socket.gethostname()}, since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S')})\n")
            f.flush()
            yield (f"{folder}: took over the lock of {previous}, which is no longer running" if previous else None)
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


@functools.lru_cache(maxsize=None)
def _code_version_once(repo: Path) -> tuple[tuple[str, Any], ...]:
    commit = _git(["rev-parse", "HEAD"], repo)
    if commit is None:
        return (("git_commit", "unknown"), ("git_dirty", None))
    status = _git(["status", "--porcelain", "--untracked-files=no"], repo)
    return (("git_commit", commit), ("git_dirty", bool(status)))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fingerprint(device: torch.device | None = None) -> dict[str, Any]:
    """Hardware and software facts every result carries."""
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "absent"

    device = device or resolve_device("auto")
    fp: dict[str, Any] = {
        **code_version(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **{pkg: version(pkg) for pkg in ("transformers", "timm", "tokenizers", "mlflow", "numpy")},
    }
    return fp


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
