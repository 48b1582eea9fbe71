"""The wheel installs one namespace, `vlpbench.*`, beside whatever else a lab has installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP = {"methods": "vlpbench.methods", "benchmarks": "vlpbench.benchmarks", "reports": "vlpbench.reports",
       "slurm": "vlpbench.slurm"}


def test_every_package_folder_is_listed_in_pyproject() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"vlpbench"} | {
        ".".join([TOP[f.parent.relative_to(ROOT).parts[0]], *f.parent.relative_to(ROOT).parts[1:]])
        for top in TOP for f in (ROOT / top).rglob("__init__.py")}
    assert set(setuptools["packages"]) == folders
    assert setuptools["package-dir"] == {"vlpbench": "vlpbench", **{v: k for k, v in TOP.items()}}


def test_our_code_imports_itself_only_through_the_namespace() -> None:
    """A top-level `import methods` would load a second copy of a module (two registries) in a checkout, and
    fail in an installed wheel."""
    import ast

    bad = []
    for f in [*ROOT.joinpath("tests").rglob("*.py"), *(p for top in TOP for p in ROOT.joinpath(top).rglob("*.py"))]:
        for node in ast.walk(ast.parse(f.read_text(), filename=str(f))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            bad += [f"{f.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in TOP]
    assert bad == []


@pytest.mark.slow
def test_the_wheel_installs_beside_a_top_level_reports_package(tmp_path: Path) -> None:
    """Build the wheel (offline: no build isolation), install it into a fresh venv whose site-packages already
    holds an unrelated top-level `reports` package, and run `vlpbench list` there. The dependencies come from
    this environment's site-packages, added to the fresh venv by a .pth line (which does not run the .pth files
    of the editable install there)."""
    wheels = tmp_path / "wheels"
    had_build = (ROOT / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--disable-pip-version-check", "--wheel-dir", str(wheels), str(ROOT)], check=True, cwd=tmp_path)
    finally:
        if not had_build:   # setuptools builds in the source tree; leave the checkout as it was
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    wheel = next(wheels.glob("vlpbench-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "reports").mkdir()
    (site / "reports" / "__init__.py").write_text("LAB = 'a lab package that happens to be called reports'\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
                    "--no-index", "--disable-pip-version-check", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    out = subprocess.run([str(venv / "bin" / "vlpbench"), "list"], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env=env).stdout
    assert {"clip", "tcl", "cots", "ernie_vil2", "scale"} <= set(out.split())
    probe = subprocess.run([str(py), "-c", "import reports, vlpbench.reports.store as s, vlpbench.benchmarks as b; "
                            "print(reports.LAB); print(s.__file__); print(b.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=env).stdout.splitlines()
    assert probe[0].startswith("a lab package") and all(str(site) in line for line in probe[1:])
    installed = {p.name for p in (site / "vlpbench").iterdir()}
    assert {"methods", "benchmarks", "reports", "slurm", "__init__.py"} <= installed
    assert (site / "vlpbench" / "benchmarks" / "suites" / "tiny.yaml").is_file()
    assert (site / "vlpbench" / "slurm" / "clusters" / "localhost.yaml").is_file()
