"""Launching: executors that run callables — in this process, in subprocesses or on SLURM through submitit — and
the cluster profiles and scripts (a one-node SLURM on localhost) that go with them.

This package knows nothing of methods or benchmarks: it launches callables and returns results.
"""

from vlpbench.slurm.executors import ArrayLauncher, Executor, InlineExecutor, get_executor

__all__ = ["ArrayLauncher", "Executor", "InlineExecutor", "get_executor"]
