"""A suite as submitted tasks (submitit's local executor; the real SLURM test is test_slurm_cluster.py): one
pretraining task per job, one task per benchmark after it, records and MLflow runs from the tasks themselves,
`vlpbench status`, a failed task re-submitted alone, and dry-run sbatch scripts with cluster profiles."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from vlpbench.benchmarks import cli
from vlpbench.benchmarks.launch import read_launch
from vlpbench.reports.store import read_evaluation, read_pretrain
from vlpbench.slurm.executors import ArrayLauncher
from vlpbench.slurm.profiles import ClusterProfile, list_profiles, load_profile
from tests.conftest import MICRO_CLIP, SMALL_WORLD
from tests.real_fixtures import make_flickr_albef

SUITE: dict[str, Any] = {
    "name": "launched",
    "methods": ["clip"],
    "sizes": ["tiny"],
    "dataset": {"options": SMALL_WORLD},
    "benchmarks": ["zeroshot_retrieval"],
    "train": {"tiny": {"steps": 4, "batch_size": 32, "log_every": 2}},
    "method_overrides": {"clip": MICRO_CLIP},
}


def _write(tmp: Path, suite: dict[str, Any]) -> Path:
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


@pytest.mark.integration   # multi-process: make test-integration (CI)
def test_local_executor_runs_tasks_logs_them_and_resubmits_a_failed_one_alone(
        tmp_path: Path, cache_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLPBENCH_CACHE", str(cache_root))   # the subprocesses find the generated world there
    flickr = make_flickr_albef(tmp_path / "flickr")
    good = (flickr / "flickr30k-images" / "101.jpg").read_bytes()
    (flickr / "flickr30k-images" / "101.jpg").write_bytes(b"\xff\xd8 not really a jpeg")   # found only on decode
    # `vlpbench run` checks every evaluation image's header before submitting (tests/test_safety.py); switched off
    # here so that the evaluation task itself fails, which is what this test re-submits
    monkeypatch.setattr("vlpbench.benchmarks.launch.check_image_header", lambda path: (1, 1))
    suite = copy.deepcopy(SUITE)
    suite["retrieval"] = {"datasets": [{"name": "flickr30k", "root": str(flickr)}]}
    path = _write(tmp_path, suite)
    out = tmp_path / "out"
    args = ["--suite", str(path), "--output", str(out)]

    assert cli.main(["run", *args, "--executor", "local", "--no-progress"]) == 1
    printed = capsys.readouterr().out
    assert "submitted 1 pretraining task(s)" in printed and "1 task(s) failed" in printed
    suite_dir = out / "launched"
    job = suite_dir / "jobs" / "clip-tiny-s0"
    assert read_pretrain(job / "pretrain.json").summary["steps"] == 4     # the pretraining task finished
    assert not (job / "eval" / "zeroshot_retrieval@flickr30k").exists()

    assert cli.main(["status", *args]) == 0
    status = capsys.readouterr().out
    assert "clip-tiny-s0/pretrain" in status and "COMPLETED" in status and "FAILED" in status
    launch = read_launch(suite_dir)
    failed = next(t for t in launch["tasks"] if t["kind"] == "zeroshot_retrieval")
    assert "101.jpg: cannot decode the image" in Path(failed["attempts"][-1]["stderr"]).read_text()

    (flickr / "flickr30k-images" / "101.jpg").write_bytes(good)            # the user fixes the file
    assert cli.main(["status", *args, "--resubmit-failed"]) == 0
    status = capsys.readouterr().out
    assert "re-submitted clip-tiny-s0/zeroshot_retrieval" in status and "pretrain (was" not in status
    assert "FAILED" not in status.split("\n", 2)[-1]
    ev = read_evaluation(job / "eval" / "zeroshot_retrieval@flickr30k" / "results.json")
    assert ev.dataset["dataset"] == "flickr30k" and len(read_launch(suite_dir)["tasks"][1]["attempts"]) == 2

    # every task logged its own records, once
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("vlpbench-launched")
    runs = client.search_runs([exp.experiment_id])
    names = sorted(r.info.run_name for r in runs)
    assert names == ["clip-tiny-s0", "clip-tiny-s0/zeroshot_retrieval", "clip-tiny-s0/zeroshot_retrieval@flickr30k"]
    pre = next(r for r in runs if r.info.run_name == "clip-tiny-s0")
    assert pre.data.tags["git_commit"] == json.loads((job / "pretrain.json").read_text())["environment"]["git_commit"]


def test_an_evaluation_task_never_pretrains(tmp_path: Path, cache_root: Path) -> None:
    from vlpbench.benchmarks.launch import JobTask, specs_for
    from vlpbench.benchmarks.suite import load_suite

    suite = load_suite(None, SUITE)
    _, evals = specs_for(suite, tmp_path, None)
    from vlpbench.benchmarks.pipeline import MissingPretraining

    with pytest.raises(MissingPretraining, match=r"pretraining record .*pretrain\.json is missing: its pretraining "
                                                 r"did not finish .*re-submit that task"):
        JobTask()(evals["zeroshot_retrieval"][0])
    assert not (tmp_path / "jobs" / "clip-tiny-s0" / "model").exists()


def test_shipped_cluster_profiles_load_and_bad_fields_are_named(tmp_path: Path) -> None:
    assert {"localhost", "example-a100"} <= set(list_profiles())
    for name in list_profiles():
        assert isinstance(load_profile(name), ClusterProfile)
    bad = tmp_path / "mine.yaml"
    bad.write_text("partition: gpu\ngpus: 8\n")
    with pytest.raises(Exception, match=r"mine\.yaml.*gpus"):
        load_profile(str(bad))
    with pytest.raises(Exception, match=r"no cluster profile 'nowhere'.*localhost"):
        load_profile("nowhere")


def test_dry_run_prints_the_sbatch_arrays_with_profile_and_dependency(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "gpu.yaml"
    profile.write_text(yaml.safe_dump({"partition": "gpu", "account": "lab", "qos": "high", "constraint": "a100",
                                       "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "time_min": 120,
                                       "setup": ["export VLPBENCH_CACHE=/shared/cache"],
                                       "sbatch": {"exclude": "node7"}}))
    suite = copy.deepcopy(SUITE) | {"seeds": [0, 1], "benchmarks": ["zeroshot_retrieval", "latency"]}
    path = _write(tmp_path, suite)
    assert cli.main(["run", "--suite", str(path), "--output", str(tmp_path / "o"), "--executor", "slurm",
                     "--cluster", str(profile), "--dry-run"]) == 0
    text = capsys.readouterr().out
    scripts = text.split("#!/bin/bash")
    assert len(scripts) == 4                                      # pretraining + two benchmark arrays
    pre, zs, lat = scripts[1:]
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=lab", "#SBATCH --qos=high",
                 "#SBATCH --constraint=a100", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32768M", "#SBATCH --time=120", "#SBATCH --array=0-1%", "#SBATCH --exclude=node7",
                 "export VLPBENCH_CACHE=/shared/cache"):
        assert line in pre, line
    assert "#SBATCH --job-name=launched-pretrain" in pre and "--dependency" not in pre
    assert "#SBATCH --dependency='aftercorr:<pretraining array id>'" in zs
    assert "#SBATCH --job-name=launched-latency" in lat
    assert "clip-tiny-s0/pretrain, clip-tiny-s1/pretrain" in text
    assert not (tmp_path / "o").exists()   # nothing submitted, nothing written


def test_dependencies_correlate_arrays_task_by_task() -> None:
    class J:
        def __init__(self, job_id: str) -> None:
            self.job_id = job_id

    assert ArrayLauncher.dependency_on([J("41_0"), J("41_1")], 2) == "aftercorr:41"
    assert ArrayLauncher.dependency_on([J("41")], 1) == "afterok:41"
    assert ArrayLauncher.dependency_on([J("41_0"), J("41_1")], 1) == "afterok:41_0:41_1"
    assert ArrayLauncher.dependency_on([], 3) is None


def test_slurm_without_a_profile_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, SUITE)
    assert cli.main(["run", "--suite", str(path), "--output", str(tmp_path / "o"), "--executor", "slurm"]) == 2
    assert "--executor slurm needs --cluster NAME" in capsys.readouterr().err


def test_concurrent_jobs_build_a_cached_stage_once(tmp_path: Path) -> None:
    """Array tasks needing the same stage (TCL, COTS, ERNIE-ViL 2.0 share the unimodal one): one builds, the
    others wait for the lock and reuse its output."""
    import threading
    import time

    from vlpbench.benchmarks.training.stage_cache import cached_stage

    builds: list[int] = []

    def build(tmp: Path) -> dict[str, Any]:
        builds.append(1)
        time.sleep(0.3)   # long enough for the other thread to arrive while this one builds
        (tmp / "weights.bin").write_bytes(b"w")
        return {"what": "stage"}

    results: list[tuple[Path, dict[str, Any], bool]] = []
    threads = [threading.Thread(target=lambda: results.append(cached_stage(tmp_path, "unimodal", "f" * 64,
                                                                           "record.json", build)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and sorted(r[2] for r in results) == [False, True, True]
    assert {r[0] for r in results} == {tmp_path / "unimodal" / ("f" * 16)}
    assert [p.name for p in (tmp_path / "unimodal").iterdir()] == ["f" * 16]   # locks live in .locks/


def _weights(job_dir: Path) -> dict[str, Any]:
    from vlpbench.methods import load_pretrained

    model, _ = load_pretrained(job_dir / "model")
    return model.state_dict()


@pytest.mark.integration   # multi-process: make test-integration (CI)
def test_a_pretraining_task_with_two_processes_trains_as_one(tmp_path: Path, cache_root: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A profile with tasks_per_node 2: submitit starts two processes, JobTask joins them in a gloo group."""
    import torch

    monkeypatch.setenv("VLPBENCH_CACHE", str(cache_root))
    profile = tmp_path / "two.yaml"
    profile.write_text("tasks_per_node: 2\neval_tasks_per_node: 2\ncpus_per_task: 1\n")
    path = _write(tmp_path, SUITE)
    assert cli.main(["run", "--suite", str(path), "--output", str(tmp_path / "ddp"), "--executor", "local",
                     "--cluster", str(profile), "--no-progress"]) == 0
    assert cli.main(["run", "--suite", str(path), "--output", str(tmp_path / "one"), "--no-progress"]) == 0
    ddp, one = (tmp_path / d / "launched" / "jobs" / "clip-tiny-s0" for d in ("ddp", "one"))
    h_ddp = [json.loads(x)["loss/total"] for x in (ddp / "history.jsonl").read_text().splitlines()]
    h_one = [json.loads(x)["loss/total"] for x in (one / "history.jsonl").read_text().splitlines()]
    assert len(h_ddp) == 2 and h_ddp == pytest.approx(h_one, rel=1e-5)
    for (name, a), b in zip(_weights(one).items(), _weights(ddp).values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    launch = read_launch(tmp_path / "ddp" / "launched")
    for task in launch["tasks"]:   # pretraining and the zero-shot evaluation each ran in two processes
        stdout = Path(task["attempts"][-1]["stdout"])
        assert stdout.parent.joinpath(stdout.name.replace("_0_log", "_1_log")).is_file()
    # the two-process evaluation gives the one-process numbers of the same model
    from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
    from vlpbench.benchmarks.data import open_dataset
    from vlpbench.methods import load_pretrained

    ev = read_evaluation(ddp / "eval" / "zeroshot_retrieval" / "results.json")
    assert ev.protocol["eval_processes"] == 2
    model, _ = load_pretrained(ddp / "model")
    split = open_dataset("builtin", options=SMALL_WORLD, cache_root=cache_root).retrieval_split("test")
    single = evaluate_image_text(model, split, RetrievalProtocol(), torch.device("cpu"), "fp32")
    assert ev.metrics == single.metrics


@pytest.mark.integration   # multi-process: make test-integration (CI)
def test_a_preempted_task_checkpoints_requeues_and_ends_as_an_uninterrupted_run(
        tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's preemption signal mid-training: the task checkpoints at the step boundary, is requeued with
    resume='latest', and its final weights equal an uninterrupted run's bit for bit (CPU)."""
    import os
    import signal
    import time

    import torch

    from vlpbench.benchmarks.launch import JobTask, specs_for
    from vlpbench.benchmarks.job import expand_jobs
    from vlpbench.benchmarks.pipeline import run_job
    from vlpbench.benchmarks.suite import load_suite

    monkeypatch.setenv("VLPBENCH_CACHE", str(cache_root))
    spec = copy.deepcopy(SUITE)
    spec["train"] = {"tiny": {"steps": 120, "batch_size": 32, "log_every": 1}}
    suite = load_suite(None, spec)
    launched = tmp_path / "launched"
    pre, _ = specs_for(suite, launched, None)
    job = ArrayLauncher("local", launched / "submitit")._executor(job_name="preempt", training=True).submit(
        JobTask(), pre[0])
    job_dir = launched / "jobs" / "clip-tiny-s0"
    deadline = time.time() + 120
    while time.time() < deadline and (not (job_dir / "history.jsonl").is_file()
                                      or len((job_dir / "history.jsonl").read_text().splitlines()) < 10):
        time.sleep(0.05)
    # What SLURM sends the job's processes ahead of preemption or time-out (submitit's LocalJob._interrupt would
    # signal its controller process, which does not forward USR2)
    controller = job._process.pid
    task_pid = int(Path(f"/proc/{controller}/task/{controller}/children").read_text().split()[0])
    os.kill(task_pid, signal.SIGUSR2)
    job.results()
    record = read_pretrain(job_dir / "pretrain.json")
    assert record.summary["steps"] == 120 and 10 <= record.summary["resumed_from_step"] < 120
    logs = Path(job.paths.stderr).read_text() + Path(job.paths.stdout).read_text()
    assert "this job is preempted" in logs and "Requeued" in logs

    straight = tmp_path / "straight"
    run_job(expand_jobs(suite)[0], straight, progress=False, benchmarks=(), log=lambda _: None)
    for (name, a), b in zip(_weights(straight / "jobs" / "clip-tiny-s0").items(), _weights(job_dir).values()):
        assert torch.equal(a, b), name


class _Payload:
    """A result object whose unpickling would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_the_result_file_outcome_is_read_without_unpickling(tmp_path: Path) -> None:
    from submitit.core.utils import cloudpickle_dump

    from vlpbench.benchmarks.launch import pickled_outcome

    marker = tmp_path / "ran"
    cloudpickle_dump(("success", _Payload(marker)), tmp_path / "ok.pkl")      # as submitit writes a task's result
    cloudpickle_dump(("error", "Traceback ...\nValueError: x"), tmp_path / "err.pkl")
    assert pickled_outcome(tmp_path / "ok.pkl") == "success" and not marker.exists()
    assert pickled_outcome(tmp_path / "err.pkl") == "error"
    import pickle

    (tmp_path / "p0.pkl").write_bytes(pickle.dumps(("success", 1), protocol=0))  # text protocol: UNICODE opcode
    assert pickled_outcome(tmp_path / "p0.pkl") == "success"
