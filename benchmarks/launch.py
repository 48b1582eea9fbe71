"""Running a suite: in this process (`run_inline`, one job after another) or as submitted jobs (submitit: debug,
local or SLURM; `submit_suite`): one pretraining job per method × size × seed, then one job per benchmark on each
pretrained model, as job arrays. Both run and log a task with the same code (`run_task`, `log_task`); before
anything runs, `preflight` reads what the suite names (corpus images, evaluation images, fine-tuning splits), so a
wrong root fails in seconds, not after hours of pretraining.

    <suite_dir>/launch.json    every task: its executor job id, state when last seen, log files, attempts
    <suite_dir>/submitit/      submitit's folders: pickled submissions, stdout/stderr, results

On SLURM the evaluation arrays depend on the pretraining array task by task (``aftercorr``), so a job's
benchmarks start when its own pretraining is done and a failed pretraining holds back only its own evaluations.
Each task writes its records atomically into the job folder (as `vlpbench run` inline does) and then logs them
to MLflow itself, under a lock on the suite folder; `vlpbench status` reads launch.json and the scheduler, and
re-submits failed tasks alone (their pickled submission, unchanged).

Everything a task needs travels in its pickled submission: the resolved suite, the job, the output folder and
the tracking URI (both must be on storage the nodes share), and the code version (git commit, dirty flag) of
the submitting checkout — pinned in the task so a commit made while jobs wait in the queue does not relabel
their results. Nothing else of the submitting machine is baked in: the stage cache is the node's
($VLPBENCH_CACHE; a cluster profile's setup lines point it at shared storage).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlpbench.benchmarks.data import open_dataset
from vlpbench.benchmarks.data.files import check_image_header
from vlpbench.benchmarks.job import Job, expand_jobs
from vlpbench.benchmarks.pipeline import JobOutcome, open_corpus, run_job
from vlpbench.benchmarks.registry import distributed_benchmarks
from vlpbench.benchmarks.runtime import code_version, file_lock, pin_code_version
from vlpbench.benchmarks.suite import Suite
from vlpbench.methods import ConfigError
from vlpbench.methods.config import validate
from vlpbench.reports import tracking as mlflow_tracking
from vlpbench.reports.store import PRETRAIN_FILE, RESULTS_FILE, atomic_write_json, atomic_write_text
from vlpbench.reports.tracking import LEDGER
from vlpbench.slurm import get_executor
from vlpbench.slurm.executors import FINAL_OK, ArrayLauncher, first_result, job_state, wait_for

LAUNCH_FILE = "launch.json"
FAILED_STATES = ("FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
                 "DEADLINE", "INTERRUPTED")


@dataclass(frozen=True)
class Tracking:
    uri: str
    experiment: str
    artifact_root: Path | None = None


def suite_tracking(suite: Suite, output: Path, uri: str | None = None) -> Tracking:
    """Where a suite's runs are logged: `uri` (--tracking-uri), else the suite's tracking_uri, else
    $MLFLOW_TRACKING_URI, else an embedded sqlite store in `output` (artifacts in <output>/mlartifacts)."""
    resolved = mlflow_tracking.resolve_tracking_uri(uri or suite.tracking_uri, output)
    root = (output / "mlartifacts").resolve() if mlflow_tracking.is_embedded(resolved) else None
    return Tracking(resolved, experiment_name(suite), root)


def experiment_name(suite: Suite) -> str:
    return f"vlpbench-{suite.name}"


@dataclass(frozen=True)
class TaskSpec:
    """One task: a submitted job's pretraining (benchmarks empty) or one of its benchmarks; run inline, a whole job
    (its pretraining, then every benchmark named)."""

    job: Job
    suite_dir: Path
    benchmarks: tuple[str, ...]
    tracking: Tracking | None
    code: dict[str, Any]
    resume: str | None = None
    progress: bool = False
    require_pretrained: bool | None = None   # None: an evaluation task (benchmarks given) never pretrains

    @property
    def kind(self) -> str:
        return "pretrain" if not self.benchmarks else "+".join(self.benchmarks)

    @property
    def name(self) -> str:
        return f"{self.job.name}/{self.kind}"


class JobTask:
    """The callable submitit pickles and runs on a node."""

    def __call__(self, spec: TaskSpec) -> dict[str, Any]:
        from vlpbench.benchmarks.training import preemption

        pin_code_version(spec.code)
        rank, size = _init_distributed()
        preemption.install(_preemption_signal())
        try:
            outcome = run_task(spec)
        finally:
            preemption.uninstall()
            if size > 1:
                import torch.distributed as dist

                dist.destroy_process_group()
        if rank != 0:   # a distributed pretraining's other processes: rank 0 wrote and logs the records
            return {"job_dir": str(outcome.job_dir), "records": {}, "runs": {}, "reused": outcome.reused, "rank": rank}
        return log_task(spec, outcome)

    def checkpoint(self, spec: TaskSpec) -> Any:
        """Preemption or time-out (submitit's signal): requeue the same task, resuming its training from the
        newest checkpoint in the job folder (an evaluation task simply runs again)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, dataclasses.replace(spec, resume="latest"))


class InlineTask:
    """A task in this process (`vlpbench run`, `vlpbench finetune`): JobTask's work without what only a launched
    task needs — the code version is this process's own, and there is no process group to join and no scheduler
    signal to hand over to (an interrupted run resumes with --resume latest)."""

    def __call__(self, spec: TaskSpec) -> dict[str, Any]:
        return log_task(spec, run_task(spec))


def run_task(spec: TaskSpec) -> JobOutcome:
    """The job of `spec`: its pretraining (found or done) and its benchmarks, records written atomically."""
    require = bool(spec.benchmarks) if spec.require_pretrained is None else spec.require_pretrained
    return run_job(spec.job, spec.suite_dir, resume=spec.resume, progress=spec.progress,
                   benchmarks=spec.benchmarks, require_pretrained=require)


def log_task(spec: TaskSpec, outcome: JobOutcome) -> dict[str, Any]:
    """Log a finished task's records to MLflow (under the suite folder's tracking lock: tasks log concurrently);
    returns what every executor's task returns: job folder, records, MLflow runs (by record), reused stages."""
    runs: dict[str, str] = {}
    if spec.tracking is not None:   # records are on disk (atomically) before MLflow is touched
        with file_lock(spec.suite_dir / ".tracking.lock"):
            runs = mlflow_tracking.log_job(outcome.job_dir, spec.suite_dir, spec.tracking.uri,
                                           spec.tracking.experiment, spec.tracking.artifact_root)
    return {"job_dir": str(outcome.job_dir), "records": {k: str(v) for k, v in outcome.results.items()},
            "runs": runs, "reused": outcome.reused}


def run_inline(suite: Suite, suite_dir: Path, tracking: Tracking, *, resume: str | None = None,
               progress: bool = True, benchmarks: Sequence[str] | None = None,
               require_pretrained: bool = False) -> Iterator[dict[str, Any]]:
    """Run the suite's jobs in this process, one after another, each as one task (its pretraining, then
    `benchmarks`, default the suite's) through the inline executor; yields each task's result (`log_task`)."""
    executor = get_executor("inline")
    code = code_version()
    chosen = tuple(suite.benchmarks if benchmarks is None else benchmarks)
    for job in expand_jobs(suite):
        spec = TaskSpec(job, suite_dir, chosen, tracking, code, resume, progress=progress,
                        require_pretrained=require_pretrained)
        yield executor.submit(InlineTask(), spec).result()


def _preemption_signal() -> int:
    from submitit.core.job_environment import JobEnvironment

    return int(JobEnvironment._usr_sig())


def _init_distributed() -> tuple[int, int]:
    """(rank, world size) of this task; with several tasks (the profile's nodes x tasks_per_node) the default
    process group is initialised from submitit's environment: NCCL on GPUs (each process on its local GPU),
    gloo on CPUs."""
    import submitit
    import torch
    import torch.distributed as dist

    try:
        env = submitit.JobEnvironment()
    except RuntimeError:   # not inside a submitit job (JobTask called directly)
        return 0, 1
    if env.num_tasks == 1:
        return 0, 1
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, init_method="env://")
    return dist.get_rank(), dist.get_world_size()


@dataclass
class TaskEntry:
    """A task as launch.json records it; `attempts` holds every submission of it, newest last."""

    name: str
    job: str
    kind: str
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _attempt(job: Any, executor: str, depends_on: str | None) -> dict[str, Any]:
    paths = job.paths
    return {"job_id": str(job.job_id), "executor": executor, "submitted_utc": _now(), "depends_on": depends_on,
            "folder": str(paths.folder), "stdout": str(paths.stdout), "stderr": str(paths.stderr),
            "state": "SUBMITTED"}


def read_launch(suite_dir: Path) -> dict[str, Any]:
    path = suite_dir / LAUNCH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: this suite was not submitted through an executor (vlpbench run "
                                "--executor local|slurm writes it)")
    return json.loads(path.read_text())


# ---- before anything runs ----------------------------------------------------------------------------------------
def preflight(suite: Suite) -> None:
    """Read what the suite names before any training: a real corpus (every image path, image headers of CSV/JSONL
    corpora), every image of its real retrieval sets, its real fine-tuning set's splits."""
    if suite.dataset.corpus is not None:
        images = open_corpus(suite.dataset.corpus).images
        for path in dict.fromkeys(getattr(images, "paths", [])):
            check_image_header(path)
    for real in suite.retrieval.datasets:
        source = open_dataset(real.name, real.root, real.options)
        for item in source.items(real.split):
            check_image_header(source.image_root / item.image)
    if "finetuned_retrieval" in suite.benchmarks:
        check_finetune_dataset(suite)


def check_finetune_dataset(suite: Suite) -> None:
    """A real fine-tuning set with a wrong root or a missing split fails now, not after hours of pretraining."""
    real = suite.finetune.dataset
    if real is not None:
        for split in (suite.finetune.train_split, suite.finetune.split):
            open_dataset(real.name, real.root, real.options).items(split)


def write_resolved_suite(suite: Suite, suite_dir: Path) -> Path:
    """suite.resolved.yaml: the suite as run (defaults filled in, --set applied)."""
    return atomic_write_text(suite_dir / "suite.resolved.yaml",
                             yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False))


def finetune_suite(suite: Suite, methods: list[str] | None, dataset: str | None, root: str | None,
                   steps: int | None, batch_size: int | None) -> Suite:
    """The suite reduced to its fine-tuned retrieval benchmark (`vlpbench finetune`), with the given methods,
    Karpathy set and budget merged over the suite's `finetune` section."""
    if (dataset is None) != (root is None):
        raise ConfigError("--dataset and --root go together: --dataset coco --root /data/coco (a Karpathy-split "
                          "copy; `vlpbench data verify coco --root /data/coco` checks it)")
    data = suite.model_dump(mode="json")
    data["benchmarks"] = ["finetuned_retrieval"]
    if methods:
        data["methods"] = methods
    ft = data["finetune"]
    if dataset is not None:
        ft["dataset"] = {**(ft.get("dataset") or {}), "name": dataset, "root": root}
    if steps is not None or batch_size is not None:
        for size in suite.sizes:
            budget = suite.finetune.budget_for(size).model_dump(mode="json")
            budget.update({k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None})
            ft["budget"][size] = budget
    return validate(Suite, data, where="vlpbench finetune")


def make_launcher(executor: str, suite_dir: Path, cluster: str | None = None, *,
                  dry_run: bool = False) -> ArrayLauncher:
    """The submitit launcher of an executor kind, its folder <suite_dir>/submitit; a dry run of the inline executor
    previews SLURM's scripts. `cluster`: a profile in slurm/clusters/ or a YAML file (SLURM needs one)."""
    from vlpbench.slurm.profiles import load_profile

    kind = "slurm" if dry_run and executor == "inline" else executor
    if kind == "slurm" and not cluster:
        raise ConfigError("--executor slurm needs --cluster NAME (a profile in slurm/clusters/, or a YAML path)")
    return ArrayLauncher(kind, suite_dir / "submitit", load_profile(cluster) if cluster else None)


# ---- submitted ----------------------------------------------------------------------------------------------------
def specs_for(suite: Suite, suite_dir: Path, tracking: Tracking | None, resume: str | None = None
              ) -> tuple[list[TaskSpec], dict[str, list[TaskSpec]]]:
    """(pretraining tasks, {benchmark: evaluation tasks}) — every list in the order of the suite's jobs."""
    code = code_version()
    jobs = expand_jobs(suite)
    pre = [TaskSpec(j, suite_dir, (), tracking, code, resume) for j in jobs]
    evals = {b: [TaskSpec(j, suite_dir, (b,), tracking, code) for j in jobs] for b in suite.benchmarks}
    return pre, evals


def dry_run(suite: Suite, suite_dir: Path, launcher: ArrayLauncher) -> str:
    """The sbatch scripts a submission would use, one per array, and the task list; nothing is submitted."""
    pre, evals = specs_for(suite, suite_dir, None)
    out = [f"# suite {suite.name!r}: {len(pre)} pretraining task(s), then {len(evals)} evaluation array(s) of "
           f"{len(pre)} task(s); logs under {launcher.folder}",
           "# pretraining array tasks: " + ", ".join(s.name for s in pre),
           launcher.sbatch_script(len(pre), job_name=f"{suite.name}-pretrain", training=True)]
    dep = "aftercorr:<pretraining array id>" if len(pre) > 1 else "afterok:<pretraining job id>"
    for bench in evals:
        out += [f"# {bench} array (runs after its pretraining task)",
                launcher.sbatch_script(len(pre), job_name=f"{suite.name}-{bench}", training=False,
                                       sharded=bench in distributed_benchmarks(), dependency=dep)]
    return "\n".join(out)


def submit_suite(suite: Suite, suite_dir: Path, launcher: ArrayLauncher, tracking: Tracking | None, *,
                 resume: str | None = None, log: Callable[[str], None] = print) -> dict[str, list[Any]]:
    """Submit the suite's arrays and write launch.json; returns {'pretrain': jobs, '<benchmark>': jobs}."""
    pre, evals = specs_for(suite, suite_dir, tracking, resume)
    task = JobTask()
    submitted: dict[str, list[Any]] = {}
    entries: dict[str, TaskEntry] = {}

    def record(specs: list[TaskSpec], jobs: list[Any], depends: list[Any]) -> None:
        for i, (spec, job) in enumerate(zip(specs, jobs)):
            entry = entries.setdefault(spec.name, TaskEntry(spec.name, spec.job.name, spec.kind))
            entry.attempts.append(_attempt(job, launcher.kind, str(depends[i].job_id) if depends else None))
        _write_launch(suite_dir, suite.name, launcher, entries)

    pre_jobs = launcher.submit_array(task, pre, job_name=f"{suite.name}-pretrain", training=True)
    record(pre, pre_jobs, [])
    submitted["pretrain"] = pre_jobs
    log(f"submitted {len(pre_jobs)} pretraining task(s): " + ", ".join(str(j.job_id) for j in pre_jobs))
    for bench, specs in evals.items():
        jobs = launcher.submit_array(task, specs, job_name=f"{suite.name}-{bench}", training=False,
                                     sharded=bench in distributed_benchmarks(), after=pre_jobs)
        record(specs, jobs, pre_jobs)
        submitted[bench] = jobs
        log(f"submitted {len(jobs)} {bench} task(s) after their pretraining: "
            + ", ".join(str(j.job_id) for j in jobs))
    return submitted


def _write_launch(suite_dir: Path, suite_name: str, launcher: ArrayLauncher, entries: dict[str, TaskEntry]) -> None:
    path = suite_dir / LAUNCH_FILE
    with file_lock(suite_dir / ".launch.lock"):
        old = json.loads(path.read_text()) if path.is_file() else {}
        tasks = {t["name"]: t for t in old.get("tasks", [])}
        for name, entry in entries.items():
            if name in tasks and tasks[name]["attempts"] and entry.attempts and \
                    tasks[name]["attempts"][-1]["job_id"] != entry.attempts[0]["job_id"]:
                entry = TaskEntry(name, entry.job, entry.kind, [*tasks[name]["attempts"], *entry.attempts])
            tasks[name] = entry.to_json()
        atomic_write_json(path, {"suite": suite_name, "executor": launcher.kind,
                                 "cluster": launcher.profile.name if launcher.profile else None,
                                 "folder": str(launcher.folder), "updated_utc": _now(),
                                 "tasks": list(tasks.values())})


def wait_and_report(submitted: dict[str, list[Any]], log: Callable[[str], None] = print) -> list[str]:
    """Wait for every task; print each as it ends; returns the names of the failed ones (job ids)."""
    failed: list[str] = []

    def done(job: Any) -> None:
        try:
            out = first_result(job)
            names = list(out["records"]) or ["pretrain"]
            runs = [out["runs"][n] for n in names if n in out["runs"]]
            log(f"[{job.job_id}] done: {Path(out['job_dir']).name} " + ", ".join(names) +
                (f" (mlflow run{'s' if len(runs) > 1 else ''} {', '.join(runs)})" if runs else ""))
        except Exception as err:  # noqa: BLE001 — report every failure, keep waiting for the others
            failed.append(str(job.job_id))
            first = str(err).strip().splitlines()
            log(f"[{job.job_id}] FAILED: {first[-1] if first else type(err).__name__} (log: {job.paths.stderr})")

    wait_for([j for jobs in submitted.values() for j in jobs], on_done=done)
    return failed


# ---- status -------------------------------------------------------------------------------------------------------
def _live_job(attempt: dict[str, Any]) -> Any:
    import submitit

    folder = Path(attempt["folder"]).parent / "%j"
    if attempt["executor"] == "slurm":
        return submitit.SlurmJob(folder=folder, job_id=attempt["job_id"])
    return submitit.LocalJob(folder=folder, job_id=attempt["job_id"])


def task_state(attempt: dict[str, Any]) -> str:
    """The scheduler's word for a task now; for local jobs (no scheduler): from submitit's result file."""
    job = _live_job(attempt)
    if attempt["executor"] == "slurm":
        return job_state(job).split(" ")[0]
    result = Path(job.paths.result_pickle)
    if not result.is_file():
        return "UNKNOWN" if attempt.get("state") == "SUBMITTED" else attempt.get("state", "UNKNOWN")
    return "COMPLETED" if pickled_outcome(result) == "success" else "FAILED"


def pickled_outcome(path: Path) -> str | None:
    """The outcome ('success' or 'error') of submitit's result file, `pickle.dump((outcome, result))`, read without
    unpickling: the first string the pickle's opcodes carry (pickletools only decodes opcodes; nothing the file
    names is imported or called, so a tampered result file cannot run code here). None: no string in it."""
    import pickletools

    with path.open("rb") as f:
        for opcode, arg, _ in pickletools.genops(f):
            if isinstance(arg, str) and "UNICODE" in opcode.name:
                return arg
    return None


def status_rows(suite_dir: Path, query: bool = True) -> list[dict[str, Any]]:
    """One row per task: its newest attempt's state (asked of the scheduler when `query`), records and MLflow
    runs from the job folder, log paths."""
    launch = read_launch(suite_dir)
    rows = []
    for task in launch["tasks"]:
        att = task["attempts"][-1]
        state = task_state(att) if query else att.get("state", "UNKNOWN")
        job_dir = suite_dir / "jobs" / task["job"]
        ledger = job_dir / LEDGER
        runs: dict[str, str] = {}
        if ledger.is_file():
            for mine in json.loads(ledger.read_text()).values():
                for key, run in mine.items():
                    runs[key.split("@")[0]] = run
        record = job_dir / (PRETRAIN_FILE if task["kind"] == "pretrain" else f"eval/{task['kind']}/{RESULTS_FILE}")
        rows.append({"task": task["name"], "job_id": att["job_id"], "state": state, "attempts": len(task["attempts"]),
                     "record": record.is_file(), "mlflow_run": runs.get(task["kind"]),
                     "stdout": att["stdout"], "stderr": att["stderr"]})
    return rows


def format_status(rows: Sequence[dict[str, Any]]) -> str:
    header = f"{'task':42s} {'job id':>12s} {'state':12s} {'tries':>5s} {'record':6s} {'mlflow run':32s} log"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['task']:42s} {r['job_id']:>12s} {r['state']:12s} {r['attempts']:>5d} "
                     f"{'yes' if r['record'] else 'no':6s} {r['mlflow_run'] or '-':32s} {r['stderr']}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


def resubmit_failed(suite_dir: Path, launcher: ArrayLauncher, log: Callable[[str], None] = print) -> list[Any]:
    """Re-submit each failed task alone, from its own pickled submission (same arguments, same code version);
    a failed pretraining task takes its evaluation tasks along (they could not run without it)."""
    import submitit

    launch = read_launch(suite_dir)
    rows = {r["task"]: r for r in status_rows(suite_dir)}
    by_job: dict[str, list[dict[str, Any]]] = {}
    for task in launch["tasks"]:
        by_job.setdefault(task["job"], []).append(task)
    chosen: list[dict[str, Any]] = []
    for tasks in by_job.values():
        pre = next(t for t in tasks if t["kind"] == "pretrain")
        pre_row = rows[pre["name"]]
        # failed, or "completed" without writing its record (killed after the scheduler's bookkeeping)
        pre_failed = pre_row["state"] in FAILED_STATES or (pre_row["state"] in FINAL_OK and not pre_row["record"])
        for t in tasks:
            state = rows[t["name"]]["state"]
            if state in FAILED_STATES or (pre_failed and t is not pre and state not in ("RUNNING", "PENDING")):
                chosen.append(t)
        if pre_failed and pre not in chosen:
            chosen.append(pre)
    entries: dict[str, TaskEntry] = {}
    new_jobs: list[Any] = []
    pre_new: dict[str, Any] = {}
    for t in sorted(chosen, key=lambda t: t["kind"] != "pretrain"):   # pretraining first: evaluations wait for it
        att = t["attempts"][-1]
        old = _live_job(att)
        spec: TaskSpec = submitit.helpers.DelayedSubmission.load(old.paths.submitted_pickle).args[0]
        after = [pre_new[t["job"]]] if t["kind"] != "pretrain" and t["job"] in pre_new else []
        job = launcher.submit_array(JobTask(), [spec], job_name=f"{spec.job.suite.name}-{spec.kind}",
                                    training=not spec.benchmarks, sharded=set(spec.benchmarks) <= distributed_benchmarks(),
                                    after=after)[0]
        if t["kind"] == "pretrain":
            pre_new[t["job"]] = job
        entries[t["name"]] = TaskEntry(t["name"], t["job"], t["kind"],
                                       [_attempt(job, launcher.kind, str(after[0].job_id) if after else None)])
        new_jobs.append(job)
        log(f"re-submitted {t['name']} (was {att['job_id']}, {rows[t['name']]['state']}) as {job.job_id}")
    if entries:
        _write_launch(suite_dir, launch["suite"], launcher, entries)
    else:
        log("nothing to re-submit: no task failed")
    return new_jobs
