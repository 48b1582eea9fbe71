"""Executors: the one seam between "what to run" and "where it runs"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

R = TypeVar("R")


class Job(Protocol[R]):  # the part of submitit's Job API the harness uses
    def result(self) -> R: ...


class Executor(Protocol):
    name: str

    def submit(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Job[R]: ...


class _Done:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


class InlineExecutor:
    """Runs each callable immediately in this process (exceptions propagate at submit)."""

    name = "inline"

    def submit(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Job[R]:
        return _Done(fn(*args, **kwargs))


EXECUTORS: dict[str, Callable[[], Executor]] = {"inline": InlineExecutor}


def get_executor(name: str = "inline") -> Executor:
    try:
        return EXECUTORS[name]()
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; available: {', '.join(EXECUTORS)}") from None
