"""vlpbench: a benchmark and reproducibility harness for vision-language pretraining.

Installed, the harness is one namespace: `vlpbench.methods`, `vlpbench.benchmarks`, `vlpbench.reports` and
`vlpbench.slurm` (pyproject.toml maps them from the repository's top-level folders), so nothing of it can
clash with another top-level module of the same common name in a lab's environment. In a source checkout
(this file beside pyproject.toml) the same names resolve to those folders without an install.
"""

from __future__ import annotations

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "methods" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))   # noqa: F821  (a package's own __path__)
