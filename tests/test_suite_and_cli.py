"""Suites and the command line: defaults, and bad input that fails with a message naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlpbench.benchmarks import cli
from vlpbench.benchmarks.suite import Suite, load_suite
from vlpbench.methods import ConfigError, default_suite_methods, list_methods


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return path


def test_default_suite_runs_every_method_at_cpu_on_builtin() -> None:
    suite = load_suite(None)
    assert suite.method_names() == default_suite_methods() and suite.sizes == ["cpu"] and suite.seeds == [0]
    # the five built-in methods are calibrated for the default budget and opt in; any other registered method
    # (a plugin) runs only when a suite names it
    assert suite.method_names() == ["clip", "cots", "ernie_vil2", "scale", "tcl"]
    assert set(suite.method_names()) <= set(list_methods())
    assert suite.dataset.name == "builtin" and suite.benchmarks == ["zeroshot_retrieval", "finetuned_retrieval", "video_retrieval",
                                                       "product_retrieval", "latency"]
    assert suite.budget("cpu").steps > 0 and suite.retrieval.split == "test"


def test_full_suite_file_is_read(tmp_path: Path) -> None:
    path = _write(tmp_path, """
name: lab-run
methods: [clip]
sizes: [tiny]
seeds: [0, 1]
dataset: {name: builtin, options: {n_pretrain: 1000}}
benchmarks: [zeroshot_retrieval]
train: {tiny: {steps: 5, batch_size: 8}}
retrieval: {split: val, protocol: {tie_policy: optimistic}}
tracking_uri: http://127.0.0.1:5000
""")
    suite = load_suite(path)
    assert isinstance(suite, Suite) and suite.seeds == [0, 1] and suite.budget("tiny").steps == 5
    assert suite.retrieval.protocol.tie_policy == "optimistic" and suite.tracking_uri == "http://127.0.0.1:5000"


@pytest.mark.parametrize(("text", "pattern"), [
    ("methods: [clip, tcl9]\n", r"suite.yaml: methods: .*unknown method\(s\) \['tcl9'\]; registered: \['clip', 'cots', 'ernie_vil2', 'scale', 'tcl'\]"),
    ("method: [clip]\n", r"suite.yaml: method: unknown option. Did you mean 'methods'\?"),
    ("sizes: [large]\n", r"suite.yaml: sizes: .*unknown size\(s\) \['large'\]"),
    ("train: {tiny: {steps: -3, batch_size: 8}}\n", r"suite.yaml: train.tiny.steps: Input should be greater than 0"),
    ("seeds: zero\n", r"suite.yaml: seeds: Input should be a valid list"),
    ("retrieval: {protocol: {scoring: itm}}\n", r"suite.yaml: retrieval.protocol: .*needs rerank_k"),
    ("benchmarks: [vqa]\n", r"suite.yaml: benchmarks: .*unknown benchmark\(s\) \['vqa'\]"),
    ("methods: [clip\nsizes: [tiny]\n", r"suite.yaml: not valid YAML \(line \d+, column \d+\)"),
    ("- clip\n- tcl\n", r"suite.yaml: the suite must be a mapping of fields"),
])
def test_malformed_suites_name_the_field(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_suite(_write(tmp_path, text))


def test_cli_reports_bad_input_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "methods: [nonexistent]\n")
    assert cli.main(["run", "--suite", str(path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlpbench: error:") and "unknown method(s) ['nonexistent']" in err
    assert cli.main(["run", "--suite", str(tmp_path / "absent.yaml")]) == 2
    assert "suite file" in capsys.readouterr().err


def test_missing_dataset_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, f"methods: [clip]\ndataset: {{name: builtin, root: {tmp_path / 'no-such-data'}}}\n")
    assert cli.main(["run", "--suite", str(path), "--output", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"dataset folder {tmp_path / 'no-such-data'} does not exist" in err


def test_list_and_card(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    assert "clip" in capsys.readouterr().out
    assert cli.main(["card", "clip"]) == 0
    out = capsys.readouterr().out
    assert '"claimed"' in out and '"deviations"' in out and '"presets"' in out
    assert cli.main(["card", "nope"]) == 2


def test_data_build_and_report_from_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["data", "build", "--cache", str(tmp_path / "cache")]
    small = ["n_pretrain=50", "n_train=10", "n_val=10", "n_test=10", "n_video_train=5", "n_video_test=5"]
    assert cli.main(args + [x for s in small for x in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert "fingerprint" in out and "pretrain" in out and "    50 items" in out
    assert cli.main(args + ["--set", "n_tset=3"]) == 2
    assert "Did you mean 'n_test'" in capsys.readouterr().err
    assert cli.main(["report", "--output", str(tmp_path / "o"), "--source", "files"]) == 2
    assert f"no suite folder {tmp_path / 'o' / 'default'}" in capsys.readouterr().err
    (tmp_path / "o" / "default").mkdir(parents=True)   # a suite folder without results yet
    assert cli.main(["report", "--output", str(tmp_path / "o"), "--source", "files"]) == 0
    assert "No evaluation results" in (tmp_path / "o" / "default" / "report.md").read_text()


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlpbench.reports.tracking import resolve_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://lab:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://lab:5000"
    assert resolve_tracking_uri("http://flag:1", tmp_path) == "http://flag:1"


def test_the_shipped_suite_files_load() -> None:
    from vlpbench.benchmarks.job import expand_jobs

    files = sorted((Path(__file__).parents[1] / "benchmarks" / "suites").glob("*.yaml"))
    assert files
    for path in files:
        jobs = expand_jobs(load_suite(path))
        assert jobs, path
    views = load_suite(Path(__file__).parents[1] / "benchmarks" / "suites" / "ernie-vil2-views.yaml")
    assert [j.name for j in expand_jobs(views)][-1] == "ernie_vil2-no-tags-tiny-s0"
    assert views.overrides_for("ernie_vil2-no-tags", "method")["pairs"]["image_tags"] == {"enabled": False}


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "benchmarks" / "suites").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_suites_load_and_every_job_config_validates(path: Path) -> None:
    from vlpbench.benchmarks.job import expand_jobs
    from vlpbench.methods import method_config, train_recipe

    suite = load_suite(path)
    jobs = expand_jobs(suite)
    assert jobs and len({j.name for j in jobs}) == len(jobs)
    for job in jobs:
        method_config(job.method, job.size, job.method_overrides)      # raises ConfigError on a bad override
        train_recipe(job.method, job.size, job.recipe_overrides)


def test_rerank_k_below_the_largest_recall_k_is_refused() -> None:
    # ranks beyond k are censored at k + 1, so R@10 would count unobserved ranks as hits (k = 4 gave RSUM 400)
    from vlpbench.benchmarks.suite import load_suite

    with pytest.raises(ConfigError, match=r"retrieval.rerank_k.*greater than or equal to 10"):
        load_suite(None, {"retrieval": {"rerank_k": 4}})


SHIPPED_SUITES = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_SUITES, ids=[p.stem for p in SHIPPED_SUITES])
def test_shipped_suite_files_load_under_their_file_name(path: Path) -> None:
    assert load_suite(path).name == path.stem


def test_report_takes_the_set_options_the_run_was_made_with(tmp_path: Path, cache_root: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Every suite command takes the same --suite/--set/--output/--tracking-uri flags: a run renamed with
    `--set name=x` is reported with the same `--set name=x`, without writing a suite file for it."""
    import yaml

    from tests.conftest import MICRO_CLIP, SMALL_WORLD

    path = _write(tmp_path, yaml.safe_dump({
        "name": "micro", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
        "benchmarks": ["zeroshot_retrieval"], "train": {"tiny": {"steps": 2, "batch_size": 16, "log_every": 1}},
        "method_overrides": {"clip": MICRO_CLIP}}))
    out = tmp_path / "o"
    args = ["--suite", str(path), "--output", str(out)]
    assert cli.main(["run", *args, "--set", "name=x", "--no-progress"]) == 0
    assert (out / "x" / "jobs" / "clip-tiny-s0" / "eval" / "zeroshot_retrieval" / "results.json").is_file()
    capsys.readouterr()
    assert cli.main(["report", *args]) == 2                   # the suite file's own name: no such run
    assert f"no suite folder {out / 'micro'}" in capsys.readouterr().err
    (out / "x" / "report.md").unlink()
    assert cli.main(["report", *args, "--set", "name=x"]) == 0
    assert f"report: {out / 'x' / 'report.html'}" in capsys.readouterr().out
    assert "## Zero-shot image-text retrieval (ITC)" in (out / "x" / "report.md").read_text()
