"""Methods from outside the repository: a package declaring the entry-point group `vlpbench.methods` is loaded by
`import vlpbench.methods` (vlpbench.methods.registry.load_plugins).

tests/plugins holds such a package as pip would install it (vlpbench_toy/ and its .dist-info), so putting that folder
on PYTHONPATH is installing it. Every check runs in a subprocess: this process' registry keeps the built-ins only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from vlpbench.methods import default_suite_methods, list_methods, load_plugins

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "tests" / "plugins"
BIN = Path(sys.executable).parent


def _run(args: list[str], cwd: Path, *paths: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(ROOT)])
    env.setdefault("HF_HUB_OFFLINE", "1")
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _vlpbench(*args: str) -> list[str]:
    """The installed console script, as a user runs it (`python -m benchmarks.cli` where there is none)."""
    script = BIN / "vlpbench"
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "vlpbench.benchmarks.cli", *args]


def _write_plugin(root: Path, dist: str, entry_points: str, modules: dict[str, str]) -> Path:
    """An installed distribution under `root`: its modules and a .dist-info with METADATA and entry_points.txt."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[vlpbench.methods]\n{entry_points}\n")
    for name, code in modules.items():
        (root / f"{name}.py").write_text(code)
    return root


def test_this_process_has_only_the_builtins() -> None:
    assert "toy" not in list_methods() and load_plugins() == [] and load_plugins() == []


def test_the_example_plugin_is_found_as_an_installed_package(tmp_path: Path) -> None:
    code = ("import json, importlib.metadata as md, methods\n"
            "from vlpbench.methods import default_suite_methods, get_spec, list_methods, list_presets, load_plugins\n"
            "d = md.distribution('vlpbench-toy')\n"
            "print(json.dumps({'eps': [f'{e.group}: {e.name} = {e.value}' for e in d.entry_points],\n"
            "  'methods': list_methods(), 'plugins': load_plugins(), 'default': default_suite_methods(),\n"
            "  'presets': list_presets('toy'), 'towers': dict(get_spec('toy').unimodal_towers)}))\n")
    out = _run([sys.executable, "-c", code], tmp_path, PLUGINS)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["eps"] == ["vlpbench.methods: toy = vlpbench_toy"]
    assert got["methods"] == sorted([*list_methods(), "toy"]) and got["plugins"] == ["toy"]
    assert got["default"] == default_suite_methods()          # opt-in: a plugin is not in the default suite
    assert got["presets"] == ["micro"] and got["towers"] == {"vision": "vision", "text": "text"}


def test_vlpbench_list_shows_the_plugin_method(tmp_path: Path) -> None:
    out = _run(_vlpbench("list"), tmp_path, PLUGINS)
    assert out.returncode == 0, out.stderr
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert names == sorted([*list_methods(), "toy"])


def test_a_suite_runs_the_plugin_method(tmp_path: Path, cache_root: Path) -> None:
    data = "{n_pretrain: 50, n_train: 10, n_val: 10, n_test: 10, n_video_train: 5, n_video_test: 5}"
    sets = ["methods=[toy]", "sizes=[micro]", "benchmarks=[zeroshot_retrieval]", "train.micro.steps=3",
            "train.micro.batch_size=8", f"dataset.options={data}"]
    args = _vlpbench("run", "--output", str(tmp_path / "o"), "--no-progress", *[x for s in sets for x in ("--set", s)])
    out = _run(args, tmp_path, PLUGINS)
    assert out.returncode == 0, out.stdout + out.stderr
    results = tmp_path / "o" / "default" / "jobs" / "toy-micro-s0" / "eval" / "zeroshot_retrieval" / "results.json"
    record = json.loads(results.read_text())
    assert record["method"] == "toy" and record["size"] == "micro"
    recalls = {k: v for k, v in record["metrics"].items() if "_R" in k}
    assert {"i2t_R1", "i2t_R5", "i2t_R10", "t2i_R1", "t2i_R5", "t2i_R10"} <= set(recalls)
    assert all(0.0 <= v <= 100.0 for v in recalls.values()) and record["metrics"]["rsum"] > 0


def test_a_broken_plugin_names_its_entry_point_distribution_and_fix(tmp_path: Path) -> None:
    site = _write_plugin(tmp_path / "site", "vlpbench-broken", "broken = vlpbench_broken",
                         {"vlpbench_broken": "import vlpbench_not_installed  # a dependency that is missing\n"})
    out = _run([sys.executable, "-c", "import vlpbench.methods"], tmp_path, site)
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()[-1]
    assert err.startswith("vlpbench.methods.registry.PluginError: ")
    assert "'broken = vlpbench_broken'" in err and "distribution vlpbench-broken 0.1" in err
    assert "No module named 'vlpbench_not_installed'" in err
    assert "pip uninstall vlpbench-broken" in err and "import vlpbench_broken" in err


def test_a_plugin_taking_a_registered_name_is_refused(tmp_path: Path) -> None:
    spec = ("from dataclasses import replace\nfrom vlpbench.methods import get_spec\n"
            "SPEC = replace(get_spec('clip'), in_default_suite=False)   # another method called 'clip'\n")
    site = _write_plugin(tmp_path / "site", "vlpbench-dup", "clip = vlpbench_dup:SPEC", {"vlpbench_dup": spec})
    out = _run([sys.executable, "-c", "import vlpbench.methods"], tmp_path, site)
    assert out.returncode != 0
    err = out.stderr.strip().splitlines()[-1]
    assert "'clip = vlpbench_dup:SPEC'" in err and "distribution vlpbench-dup 0.1" in err
    assert "registers method 'clip', which vlpbench.methods.clip (CLIP) registered already" in err
    assert "MethodSpec.name" in err and "pip uninstall vlpbench-dup" in err
