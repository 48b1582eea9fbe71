"""`vlpbench status`: the submitted tasks of a suite (benchmarks/launch.py); --resubmit-failed."""

from __future__ import annotations

import argparse
from typing import Any

from vlpbench.benchmarks import launch
from vlpbench.benchmarks.cli import common


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    st = subparsers.add_parser("status", parents=parents.suite,
                               help="the submitted tasks of a suite: state, records, MLflow runs, logs. It reads "
                                    "submitit's pickled task files in the output folder, as submitit does: anyone "
                                    "who can write that folder can run code as you through them, so keep it "
                                    "writable by you alone")
    st.add_argument("--cluster", help="profile for re-submission (default: the one the suite was submitted with)")
    st.add_argument("--resubmit-failed", action="store_true", help="re-submit failed tasks alone (a failed "
                                                                   "pretraining takes its evaluations along)")
    st.add_argument("--no-query", action="store_true", help="do not ask the scheduler; states as last recorded")
    st.set_defaults(fn=cmd)


def cmd(args: argparse.Namespace) -> int:
    """The submitted tasks of a suite: state, attempts, records, MLflow runs and logs; --resubmit-failed."""
    folder = common.suite_dir(args, common.suite_of(args)).resolve()
    launched = launch.read_launch(folder)
    if args.resubmit_failed:
        launcher = launch.make_launcher(launched["executor"], folder, args.cluster or launched["cluster"])
        launch.resubmit_failed(folder, launcher)
    print(f"suite {launched['suite']!r} via {launched['executor']}"
          f"{' (cluster ' + launched['cluster'] + ')' if launched['cluster'] else ''}; submitit folder "
          f"{launched['folder']}")
    print(launch.format_status(launch.status_rows(folder, query=not args.no_query)))
    return 0
