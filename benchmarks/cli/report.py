"""`vlpbench report`: the comparison report of a suite, or of any selection of MLflow runs."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from vlpbench.benchmarks import launch
from vlpbench.benchmarks.cli import common
from vlpbench.methods import ConfigError
from vlpbench.reports import sources


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    rep = subparsers.add_parser("report", parents=parents.suite,
                                help="the comparison report (HTML, Markdown, CSV/JSON) of a suite or of any "
                                     "selection of MLflow runs")
    rep.add_argument("--source", choices=("mlflow", "files"), default="mlflow",
                     help="read a suite's records from MLflow (default) or straight from its run folder")
    rep.add_argument("--run-id", action="append", help="report these MLflow runs (repeatable) instead of a suite")
    rep.add_argument("--filter", help="report the runs matching this MLflow filter, e.g. "
                                      "\"tags.`vlpbench.method` = 'clip'\" (clauses joined by and)")
    rep.add_argument("--experiment", help="with --filter: search this experiment only (default: all)")
    rep.add_argument("--title", default="selection", help="the report's name for a --run-id / --filter selection")
    rep.add_argument("--screenshot", action="store_true",
                     help="also render report.html to report.png with headless Chromium (Debian's chromium)")
    rep.add_argument("--report-dir", help="write the report here (default: the suite folder; for a selection "
                                          "<output>/reports/<title>)")
    rep.set_defaults(fn=cmd)


def cmd(args: argparse.Namespace) -> int:
    """A suite's report (default: the suite of --suite and --set, as run), or the report of any selection of MLflow
    runs (--run-id / --filter)."""
    files = _selection(args) if args.run_id or args.filter else _suite(args)
    common.print_report(files, args.screenshot)
    return 0


def _suite(args: argparse.Namespace) -> Any:
    suite = common.suite_of(args)
    folder = common.suite_dir(args, suite)
    if not folder.is_dir():
        raise FileNotFoundError(f"no suite folder {folder}: run `vlpbench run` (with the same --suite, --set and "
                                "--output) first, or select runs with --run-id / --filter")
    uri = launch.suite_tracking(suite, Path(args.output), args.tracking_uri).uri
    return common.render_report(suite, folder, uri, args.source, Path(args.report_dir) if args.report_dir else None)


def _selection(args: argparse.Namespace) -> Any:
    from vlpbench.reports.build import build_report
    from vlpbench.reports.tracking import resolve_tracking_uri

    if args.source == "files":
        raise ConfigError("--run-id / --filter select MLflow runs; drop --source files")
    uri = resolve_tracking_uri(args.tracking_uri, Path(args.output))
    with tempfile.TemporaryDirectory(prefix="vlpbench-report-") as tmp:
        inputs = sources.from_mlflow(uri, Path(tmp), experiment=args.experiment, run_ids=args.run_id or (),
                                     filter_string=args.filter)
        if not inputs.evaluations and not inputs.pretrain:
            raise sources.SelectionError(f"the selection matched no vlpbench runs at {uri}")
        out = Path(args.report_dir) if args.report_dir else Path(args.output) / "reports" / args.title
        return build_report(inputs, out, title=args.title)
