"""The data path stays one-way: methods <- benchmarks -> reports; slurm knows nothing of methods."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("methods", "benchmarks", "reports", "slurm")
# package -> packages of ours it must never import
FORBIDDEN = {
    "methods": {"benchmarks", "reports", "slurm"},
    "reports": {"methods", "benchmarks", "slurm"},
    "slurm": {"methods", "benchmarks", "reports"},
    "benchmarks": set(),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_respect_the_data_path(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_the_cli_and_the_launcher_compose_slurm() -> None:
    users = {str(f.relative_to(ROOT)) for f in (ROOT / "benchmarks").rglob("*.py") if "slurm" in _imports(f)}
    assert users <= {"benchmarks/cli.py", "benchmarks/launch.py"}
