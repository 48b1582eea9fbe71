"""What we do with models: data, training, evaluation and the run machinery (suites, jobs, launchers, CLI).

Importing the package registers the built-in benchmarks (benchmarks/tasks/)."""

from vlpbench.benchmarks import tasks  # noqa: F401
