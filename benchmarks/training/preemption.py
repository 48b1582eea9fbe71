"""Preemption and time-out on a cluster: checkpoint at a step boundary, then let submitit requeue the job.

SLURM warns a job with a signal before it preempts it or its time runs out (submitit asks for USR2, 90 s ahead)
and submitit's handler then calls the task's `checkpoint()` and requeues it. A signal arrives in the middle of a
step, when model, optimizer and data position do not agree; so a launched task installs `install()`'s handler
instead, which only records the request. The training loop asks `requested()` after every step — every process
of a distributed run agrees on the answer — writes a full checkpoint there and calls `hand_over()`, which runs
submitit's own handler: the job is requeued with `resume='latest'` and continues from exactly that step.
Outside a launched task nothing is installed and `requested()` is always false.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

_state: dict[str, Any] = {"requested": False, "signum": None, "original": None}


class Preempted(RuntimeError):
    """Raised where no scheduler takes over (the state is checkpointed; resume with --resume latest)."""


def install(signum: int) -> None:
    """Record `signum` (instead of acting on it at once); the previous handler runs at the next step boundary."""
    _state.update(requested=False, signum=signum, original=signal.getsignal(signum))

    def _record(sig: int, frame: FrameType | None) -> None:
        _state["requested"] = True

    signal.signal(signum, _record)


def uninstall() -> None:
    if _state["signum"] is not None and callable(_state["original"]):
        signal.signal(_state["signum"], _state["original"])
    _state.update(requested=False, signum=None, original=None)


def request() -> None:
    """Ask for a checkpoint-and-requeue at the next step boundary (what the signal does; for tests)."""
    _state["requested"] = True


def requested() -> bool:
    return bool(_state["requested"])


def hand_over(step: int, exit_fn: Callable[[int], Any] = sys.exit) -> None:
    """After the checkpoint of `step`: run the handler the signal was meant for (submitit: checkpoint() +
    requeue + exit on the main process; it returns on the others, which then exit too)."""
    original = _state["original"]
    _state["requested"] = False
    if callable(original):
        original(_state["signum"], None)
        exit_fn(-1)
    raise Preempted(f"preemption requested: checkpointed at step {step}; resume with --resume latest")
