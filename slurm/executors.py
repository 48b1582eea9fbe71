"""Executors: the one seam between "what to run" and "where it runs".

- ``inline``: in this process, one job after another (the default; `make run`).
- ``debug``: submitit's DebugExecutor — in this process, through the same pickled-submission path as SLURM (use
  it with pdb).
- ``local``: submitit's LocalExecutor — each task in its own subprocess, one at a time, logs in the submitit
  folder.
- ``slurm``: submitit's SlurmExecutor — job arrays with a cluster profile (slurm/clusters/), dependencies between
  arrays, requeue on preemption or time-out.

Only this module talks to submitit; it knows nothing of methods or benchmarks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from vlpbench.slurm.profiles import ClusterProfile

R = TypeVar("R")
Kind = Literal["inline", "debug", "local", "slurm"]
EXECUTOR_KINDS: tuple[str, ...] = ("inline", "debug", "local", "slurm")
FINAL_OK = ("COMPLETED", "DONE", "FINISHED")


class Job(Protocol[R]):  # the part of submitit's Job API the harness uses
    def result(self) -> R: ...


class Executor(Protocol):
    name: str

    def submit(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Job[R]: ...


class _Done:
    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


class InlineExecutor:
    """Runs each callable immediately in this process (exceptions propagate at submit)."""

    name = "inline"

    def submit(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> Job[R]:
        return _Done(fn(*args, **kwargs))


EXECUTORS: dict[str, Callable[[], Executor]] = {"inline": InlineExecutor}


def get_executor(name: str = "inline") -> Executor:
    try:
        return EXECUTORS[name]()
    except KeyError:
        raise ValueError(f"unknown executor {name!r}; the inline executor is {list(EXECUTORS)}, the submitit ones "
                         f"(ArrayLauncher) {[k for k in EXECUTOR_KINDS if k != 'inline']}") from None


class ArrayLauncher:
    """Submits lists of calls as job arrays through submitit, optionally after another array.

    On SLURM an array that runs `after` another of the same length waits task by task (``aftercorr``: task i
    starts when task i of the other array completed); after a single job it waits for it (``afterok``). The
    local and debug executors have no scheduler: the launcher waits for `after` itself before submitting.
    """

    def __init__(self, kind: Kind, folder: Path, profile: ClusterProfile | None = None) -> None:
        if kind not in ("debug", "local", "slurm"):
            raise ValueError(f"ArrayLauncher runs submitit executors (debug, local, slurm), not {kind!r}")
        if kind == "slurm" and profile is None:
            raise ValueError("the slurm executor needs a cluster profile (--cluster NAME; slurm/clusters/)")
        self.kind = kind
        self.folder = Path(folder)
        self.profile = profile

    # ---- submitit executors ----------------------------------------------------------------------------------
    def _executor(self, *, job_name: str, training: bool, sharded: bool = False,
                  dependency: str | None = None) -> Any:
        import submitit

        folder = self.folder / "%j"
        if self.kind == "debug":
            return submitit.DebugExecutor(folder=folder)
        if self.kind == "local":
            ex = submitit.LocalExecutor(folder=folder, max_num_timeout=self.profile.max_requeues if self.profile
                                        else 3)
            nodes, per_node = self.profile.tasks(training=training, sharded=sharded) if self.profile else (1, 1)
            tasks = nodes * per_node
            ex.update_parameters(timeout_min=self.profile.time_min if self.profile else 24 * 60,
                                 tasks_per_node=tasks)
            return ex
        assert self.profile is not None
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.profile.max_requeues)
        params = self.profile.slurm_parameters(job_name=job_name, training=training, sharded=sharded)
        if dependency:
            params["dependency"] = dependency
        ex.update_parameters(**params)
        return ex

    @staticmethod
    def dependency_on(after: Sequence[Any], n: int) -> str | None:
        """The sbatch --dependency for an array of n tasks that runs after the jobs `after` (one array)."""
        if not after:
            return None
        ids = [str(j.job_id) for j in after]
        array_ids = {i.split("_")[0] for i in ids}
        if len(after) == n and n > 1 and len(array_ids) == 1 and all("_" in i for i in ids):
            return f"aftercorr:{array_ids.pop()}"
        return "afterok:" + ":".join(ids)

    def submit_array(self, fn: Callable[..., Any], args: Sequence[Any], *, job_name: str, training: bool,
                     sharded: bool = False, after: Sequence[Any] = ()) -> list[Any]:
        """Submit fn(a) for each a in args; returns submitit Jobs in the order of args. training: the profile's
        nodes x tasks; sharded: an evaluation that may run in eval_tasks_per_node processes."""
        if not args:
            return []
        if self.kind != "slurm":
            for job in after:   # no scheduler: wait here (a failed dependency raises)
                first_result(job)
            if self.kind == "local":   # one subprocess at a time: a 2-core machine cannot run them side by side
                jobs = []
                for a in args:
                    job = self._executor(job_name=job_name, training=training, sharded=sharded).submit(fn, a)
                    wait_for([job])
                    jobs.append(job)
                return jobs
            ex = self._executor(job_name=job_name, training=training)
            jobs = [ex.submit(fn, a) for a in args]
            for job in jobs:   # debug: run now, in this process (an exception opens pdb: it is for debugging)
                first_result(job)
            return jobs
        ex = self._executor(job_name=job_name, training=training, sharded=sharded,
                            dependency=self.dependency_on(after, len(args)))
        with ex.batch():
            jobs = [ex.submit(fn, a) for a in args]
        return jobs

    def sbatch_script(self, n: int, *, job_name: str, training: bool, sharded: bool = False,
                      dependency: str | None = None) -> str:
        """The sbatch script an array of n tasks would be submitted with (nothing is submitted)."""
        import submitit

        class PreviewExecutor(submitit.SlurmExecutor):   # type: ignore[misc]
            """Writes the sbatch script only: a preview submits nothing, so it needs no `srun` on this machine
            (submitit's SlurmExecutor refuses to start without one)."""

            @classmethod
            def affinity(cls) -> int:
                return 1

        assert self.profile is not None, "dry runs show SLURM scripts: give a cluster profile"
        ex = PreviewExecutor(folder=self.folder / "%j", max_num_timeout=self.profile.max_requeues)
        params = self.profile.slurm_parameters(job_name=job_name, training=training, sharded=sharded)
        if dependency:
            params["dependency"] = dependency
        ex.update_parameters(**params)
        if n > 1:
            ex.parameters["map_count"] = n
        return str(ex._make_submission_file_text(ex._submitit_command_str, "dry-run"))


def first_result(job: Any) -> Any:
    """The result of a job's first task (rank 0 of a multi-process job: the one that writes records)."""
    return job.results()[0]


def job_state(job: Any) -> str:
    """A submitit job's state, upper-case (SLURM's names: PENDING, RUNNING, COMPLETED, FAILED, ...)."""
    try:
        return str(job.state).upper()
    except Exception as err:  # noqa: BLE001 — a scheduler query that fails must not stop a status listing
        return f"UNKNOWN ({type(err).__name__})"


def wait_for(jobs: Sequence[Any], poll_s: float = 2.0,
             on_done: Callable[[Any], None] | None = None) -> None:
    """Block until every job is done; on_done(job) as each finishes (in completion order)."""
    pending = list(jobs)
    while pending:
        still = []
        for job in pending:
            if job.done():
                if on_done is not None:
                    on_done(job)
            else:
                still.append(job)
        pending = still
        if pending:
            time.sleep(poll_s)
