"""Launching: executors that run callables (in-process now; submitit local/SLURM in issue 8).

This package knows nothing of methods or benchmarks: it launches callables and returns results.
"""

from slurm.executors import Executor, InlineExecutor, get_executor

__all__ = ["Executor", "InlineExecutor", "get_executor"]
