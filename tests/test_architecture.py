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


def _ours(module: str) -> str:
    """Our modules are imported through the installed namespace: 'vlpbench.methods.x' is the folder methods/x."""
    return module.removeprefix("vlpbench.")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {_ours(a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(_ours(node.module).split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_respect_the_data_path(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_only_the_cli_and_the_launcher_compose_slurm() -> None:
    users = {str(f.relative_to(ROOT)) for f in (ROOT / "benchmarks").rglob("*.py") if "slurm" in _imports(f)}
    assert users <= {"benchmarks/cli.py", "benchmarks/launch.py"} | {str(f.relative_to(ROOT)) for f in (ROOT / "benchmarks" / "cli").rglob("*.py")}


# Layers inside benchmarks/: a layer imports only the layers listed for it (and methods/reports as above).
#   base: runtime.py, prefetch.py   data: data/   training: training/   evaluation: evaluation/
#   run machinery: everything else (registry, suite, job, tasks/, pipeline, launch, cli, evaluate, reproduce, perf/)
LAYERS: dict[str, set[str]] = {
    "base": set(),
    "data": {"base"},
    "training": {"base", "data"},
    "evaluation": {"base", "data"},
    "run": {"base", "data", "training", "evaluation", "run"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2:
        return "run"
    if parts[1] in ("runtime", "prefetch"):
        return "base"
    return parts[1] if parts[1] in ("data", "training", "evaluation") else "run"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _our_modules() -> dict[str, Path]:
    return {_module_name(f): f for p in PACKAGES for f in (ROOT / p).rglob("*.py")}


def _module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that `path` imports, anywhere in it (functions and TYPE_CHECKING blocks too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = _ours(node.module or "")
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {_ours(a.name) for a in node.names}
    return {m for m in found if m in known and m != name}


def test_layers_inside_benchmarks_import_only_the_layers_below() -> None:
    modules = _our_modules()
    known = set(modules)
    bad = {}
    for name, path in modules.items():
        if not name.startswith("benchmarks.") or _layer(name) == "run":
            continue
        wrong = sorted(m for m in _module_imports(name, path, known)
                       if m.startswith("benchmarks") and _layer(m) not in LAYERS[_layer(name)] | {_layer(name)})
        if wrong:
            bad[name] = wrong
    assert bad == {}


def test_there_is_no_import_cycle() -> None:
    """Tarjan's strongly connected components over the imports of our modules: every component is one module."""
    modules = _our_modules()
    graph = {name: _module_imports(name, path, set(modules)) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """The import reader resolves relative and `from package import module` imports (so a cycle cannot hide)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import X\n")
    known = {"pkg", "pkg.a", "pkg.b"}
    assert _module_imports("pkg.a", pkg / "a.py", known) == {"pkg.b"}
    assert _module_imports("pkg.b", pkg / "b.py", known) == {"pkg.a"}
