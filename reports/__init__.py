"""Reports: result records, MLflow tracking and rendering.

This package reads serialized results (run folders, MLflow) and imports nothing from
`methods`, `benchmarks` or `slurm`.
"""
