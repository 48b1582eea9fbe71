"""`vlpbench perf`: performance benchmarks that compare side by side in one run.

Each section is a module with a `run(...) -> dict` that measures, checks its own correctness first (the compared
implementations must compute the same thing) and states its targets; `vlpbench perf` writes their results with the
hardware/software fingerprint to one JSON file. Timings are never asserted in unit tests.
"""
