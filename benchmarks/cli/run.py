"""`vlpbench run`: pretrain and evaluate a suite, in this process or submitted as job arrays (benchmarks/launch.py)."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

from vlpbench.benchmarks import launch
from vlpbench.benchmarks.cli import common
from vlpbench.benchmarks.job import expand_jobs
from vlpbench.benchmarks.runtime import code_version, folder_lock
from vlpbench.benchmarks.suite import Suite
from vlpbench.reports import tracking


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    run = subparsers.add_parser("run", parents=parents.suite,
                                help="pretrain and evaluate a suite (default: every method, tiny, built-in data)")
    run.add_argument("--resume", help="'latest' resumes each job from its newest checkpoint, or a step_*.pt path")
    run.add_argument("--executor", default="inline", choices=("inline", "debug", "local", "slurm"),
                     help="where jobs run: inline (this process, default), debug (submitit, in-process, pdb on "
                          "error), local (a subprocess per task), slurm (job arrays; needs --cluster)")
    run.add_argument("--cluster", help="cluster profile: a name in slurm/clusters/ or a YAML file")
    run.add_argument("--dry-run", action="store_true", help="print the sbatch scripts the suite would be "
                                                            "submitted with, submit nothing")
    run.add_argument("--no-wait", action="store_true", help="submit and return (follow with vlpbench status)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(fn=cmd)


def cmd(args: argparse.Namespace) -> int:
    code_version()  # the commit of the code this process loaded, before any long job (see runtime.code_version)
    suite = common.suite_of(args)
    folder = common.suite_dir(args, suite)
    trk = launch.suite_tracking(suite, Path(args.output), args.tracking_uri)
    launch.preflight(suite)
    if args.dry_run:   # writes nothing
        launcher = launch.make_launcher(args.executor, folder.resolve(), args.cluster, dry_run=True)
        print(launch.dry_run(suite, folder.resolve(), launcher))
        return 0
    tracking.check_tracking_uri(trk.uri)   # before any training: a wrong store fails in seconds, not after the jobs
    with folder_lock(folder) as took_over:
        if took_over:
            print(took_over, flush=True)
        launch.write_resolved_suite(suite, folder)
        if args.executor != "inline":
            return _submitted(args, suite, folder, trk)
        print(f"suite {suite.name!r}: {len(expand_jobs(suite))} job(s) → {folder}; tracking {trk.uri}", flush=True)
        t0 = time.perf_counter()
        for result in launch.run_inline(suite, folder, trk, resume=args.resume, progress=not args.no_progress):
            common.print_task(result)
        report = common.render_report(suite, folder, trk.uri)
    common.print_done(t0, report)
    return 0


def _submitted(args: argparse.Namespace, suite: Suite, folder: Path, trk: launch.Tracking) -> int:
    """--executor debug|local|slurm: the suite as job arrays through submitit."""
    launcher = launch.make_launcher(args.executor, folder.resolve(), args.cluster)
    t0 = time.perf_counter()
    print(f"suite {suite.name!r}: submitting through {launcher.kind}"
          f"{f' (cluster {launcher.profile.name})' if launcher.profile else ''} → {folder}; tracking {trk.uri}",
          flush=True)
    submitted = launch.submit_suite(suite, folder.resolve(), launcher, trk, resume=args.resume)
    status_cmd = _status_command(args)
    if args.no_wait:
        print(f"submitted; follow with: {status_cmd}")
        return 0
    failed = launch.wait_and_report(submitted)
    if failed:
        print(f"{len(failed)} task(s) failed: {', '.join(failed)}; see `{status_cmd}`, re-submit them with "
              f"`{status_cmd} --resubmit-failed`")
        return 1
    common.print_done(t0, common.render_report(suite, folder, trk.uri))
    return 0


def _status_command(args: argparse.Namespace) -> str:
    """The `vlpbench status` line that finds this suite again (same --output, --suite and --set)."""
    return (f"vlpbench status --output {args.output}" + (f" --suite {args.suite}" if args.suite else "")
            + "".join(f" --set {shlex.quote(item)}" for item in args.set))
