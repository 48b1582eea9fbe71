"""Against a real SLURM scheduler (the one-node cluster slurm/start_cluster.sh starts; CI's .ci/run starts it):
a two-seed micro suite submitted as job arrays, evaluations after their own pretraining task, MLflow runs from
the jobs, `vlpbench status` from the scheduler's accounting."""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from vlpbench.benchmarks import cli
from vlpbench.benchmarks.launch import read_launch
from vlpbench.reports.store import read_evaluation, read_pretrain
from tests.test_launch import SUITE, _write

START = "sudo slurm/start_cluster.sh --install"


def _cluster_up() -> str | None:
    """None when a SLURM node is ready to take jobs, else why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return f"SLURM is not installed here; start a one-node cluster with `{START}` (CI does)"
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10).stdout
    except (subprocess.TimeoutExpired, OSError) as err:
        return f"sinfo failed ({err}); start the cluster with `{START}`"
    if not any(s.strip() in ("idle", "mixed", "allocated") for s in states.splitlines()):
        return f"no SLURM node is up (sinfo: {states.strip() or 'nothing'}); start it with `{START}`"
    if shutil.which("sacct") is None or subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True,
                                                       timeout=10).returncode != 0:
        return f"SLURM accounting (sacct) is not running; `{START}` starts slurmdbd with it"
    return None


# CI runs these in `make test-integration`, against the cluster .ci/run starts
pytestmark = [pytest.mark.skipif(_cluster_up() is not None, reason=str(_cluster_up())), pytest.mark.integration]


def test_a_suite_runs_as_job_arrays_on_a_real_slurm(tmp_path: Path, cache_root: Path,
                                                     capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLPBENCH_CACHE", str(cache_root))   # sbatch exports the environment to the jobs
    suite = copy.deepcopy(SUITE) | {"name": "onslurm", "seeds": [0, 1],
                                    "benchmarks": ["zeroshot_retrieval", "product_retrieval"]}
    path = _write(tmp_path, suite)
    out = tmp_path / "out"
    args = ["--suite", str(path), "--output", str(out)]
    assert cli.main(["run", *args, "--executor", "slurm", "--cluster", "localhost", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "submitting through slurm (cluster localhost)" in printed and "report:" in printed

    suite_dir = out / "onslurm"
    launch = read_launch(suite_dir)
    ids = {t["name"]: t["attempts"][-1]["job_id"] for t in launch["tasks"]}
    pre_array = {ids[f"clip-tiny-s{s}/pretrain"].split("_")[0] for s in (0, 1)}
    assert len(pre_array) == 1 and ids["clip-tiny-s1/pretrain"].endswith("_1")   # one array, task per seed
    for seed in (0, 1):
        task = next(t for t in launch["tasks"] if t["name"] == f"clip-tiny-s{seed}/zeroshot_retrieval")
        assert task["attempts"][-1]["depends_on"] == ids[f"clip-tiny-s{seed}/pretrain"]
        job = suite_dir / "jobs" / f"clip-tiny-s{seed}"
        assert read_pretrain(job / "pretrain.json").seed == seed
        assert read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json").metrics["rsum"] > 0

    # the scheduler's accounting (it lags a few seconds behind the jobs): every task completed, each evaluation
    # started after its own pretraining ended
    deadline = time.time() + 60
    while True:
        sacct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,Start,End", "-j",
                                ",".join(sorted({i.split("_")[0] for i in ids.values()}))],
                               capture_output=True, text=True, check=True).stdout
        rows = {line.split("|")[0]: line.split("|")[1:] for line in sacct.splitlines() if line}
        if all(rows.get(i, ["?"])[0] == "COMPLETED" for i in ids.values()) or time.time() > deadline:
            break
        time.sleep(1)
    assert all(rows[i][0] == "COMPLETED" for i in ids.values()), rows
    for seed in (0, 1):
        pre_end = rows[ids[f"clip-tiny-s{seed}/pretrain"]][2]
        for bench in ("zeroshot_retrieval", "product_retrieval"):
            assert rows[ids[f"clip-tiny-s{seed}/{bench}"]][1] >= pre_end

    assert cli.main(["status", *args]) == 0
    status = capsys.readouterr().out
    assert status.strip().splitlines()[-1] == "6 COMPLETED"
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("vlpbench-onslurm").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(
        f"clip-tiny-s{s}{b}" for s in (0, 1) for b in ("", "/zeroshot_retrieval", "/product_retrieval"))
    for r in runs:
        assert r.info.run_id in status or r.data.tags.get("vlpbench.kind") == "pretrain"


def test_on_slurm_a_two_task_pretraining_is_preempted_requeued_and_ends_as_uninterrupted(
        tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two DDP processes (gloo) through srun; `scancel --signal=USR2` mid-training (what SLURM sends ahead of
    preemption): checkpoint at the step boundary, submitit requeues the job, it resumes from that step and ends
    with the weights of an uninterrupted two-process run."""
    import torch

    from vlpbench.benchmarks.launch import JobTask, specs_for
    from vlpbench.benchmarks.suite import load_suite
    from vlpbench.methods import load_pretrained
    from vlpbench.slurm.executors import ArrayLauncher
    from vlpbench.slurm.profiles import load_profile

    monkeypatch.setenv("VLPBENCH_CACHE", str(cache_root))
    profile = tmp_path / "ddp.yaml"
    profile.write_text("partition: debug\ntasks_per_node: 2\ncpus_per_task: 1\ntime_min: 20\n")
    spec = copy.deepcopy(SUITE)
    spec["train"] = {"tiny": {"steps": 150, "batch_size": 32, "log_every": 1}}
    suite = load_suite(None, spec)

    def submit(where: Path) -> object:
        pre, _ = specs_for(suite, where, None)
        launcher = ArrayLauncher("slurm", where / "submitit", load_profile(str(profile)))
        return launcher.submit_array(JobTask(), pre, job_name="preempt", training=True)[0]

    straight = submit(tmp_path / "straight")
    preempted = submit(tmp_path / "preempted")
    history = tmp_path / "preempted" / "jobs" / "clip-tiny-s0" / "history.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not history.is_file() or len(history.read_text().splitlines()) < 10):
        time.sleep(0.1)
    job_id = str(preempted.job_id)                                                    # type: ignore[attr-defined]
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    # SLURM holds a requeued job for two minutes (its begin time); let it start now, as an admin could
    while time.time() < deadline:
        reason = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True,
                                text=True).stdout.strip()
        if reason.startswith("PENDING") and "BeginTime" in reason:
            subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
            break
        time.sleep(0.2)
    for job in (straight, preempted):
        job.results()                                                                 # type: ignore[attr-defined]
    pre = read_pretrain(tmp_path / "preempted" / "jobs" / "clip-tiny-s0" / "pretrain.json")
    assert pre.summary["steps"] == 150 and 10 <= pre.summary["resumed_from_step"] < 150
    sacct = ""
    while time.time() < deadline and not sacct.strip().endswith("COMPLETED"):   # accounting lags a few seconds
        sacct = subprocess.run(["sacct", "-n", "-P", "-D", "-X", "-o", "JobID,State", "-j", job_id],
                               capture_output=True, text=True, check=True).stdout
        time.sleep(0.5)
    assert sacct.splitlines()[0].endswith("REQUEUED") and sacct.strip().endswith("COMPLETED"), sacct
    a, _ = load_pretrained(tmp_path / "straight" / "jobs" / "clip-tiny-s0" / "model")
    b, _ = load_pretrained(tmp_path / "preempted" / "jobs" / "clip-tiny-s0" / "model")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
