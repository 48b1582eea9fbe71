"""Against a real SLURM scheduler (the one-node cluster slurm/start_cluster.sh starts; CI's .ci/run starts it):
a two-seed micro suite submitted as job arrays, evaluations after their own pretraining task, MLflow runs from
the jobs, `vlpbench status` from the scheduler's accounting."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks import cli
from benchmarks.launch import read_launch
from reports.store import read_evaluation, read_pretrain
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


pytestmark = pytest.mark.skipif(_cluster_up() is not None, reason=str(_cluster_up()))


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

    # the scheduler's accounting: every task completed, each evaluation started after its pretraining ended
    sacct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,Start,End", "-j",
                            ",".join(sorted({i.split("_")[0] for i in ids.values()}))],
                           capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[0]: line.split("|")[1:] for line in sacct.splitlines() if line}
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
