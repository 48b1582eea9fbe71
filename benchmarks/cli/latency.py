"""`vlpbench latency`: every inference stage of each method timed on untrained models (benchmarks/evaluate.py
`untrained_latency`; the suite's `latency` benchmark times trained ones)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vlpbench.benchmarks.cli import common


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    lat = subparsers.add_parser("latency", parents=parents.selection,
                                help="time each inference stage of every method (untrained weights: timings do not "
                                     "depend on them); the suite's `latency` benchmark does the same for trained "
                                     "models")
    lat.add_argument("--methods", help="comma-separated methods/variants (default: the suite's)")
    lat.add_argument("--size", default="tiny", help="a preset of the methods (default: tiny)")
    lat.add_argument("--repeats", type=int, help="timed calls per operation (default: the suite's, 20)")
    lat.add_argument("--twice", action="store_true", help="run everything twice back to back: repeatability")
    lat.add_argument("--output", help="write the results (with the machine fingerprint) to this JSON file")
    lat.set_defaults(fn=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Time every stage and write a JSON with the machine's fingerprint; --twice runs everything twice back to back
    and reports how far the p50s moved."""
    from vlpbench.benchmarks.evaluate import untrained_latency
    from vlpbench.reports.store import atomic_write_text

    def show(name: str, entry: dict[str, Any]) -> None:
        print(f"{name}-{args.size}: {common.headline('latency', entry['metrics'])}")
        if args.twice:
            moved = entry["p50_relative_change"]
            worst = max(moved, key=lambda k: moved[k])
            print(f"  second run: p50s moved by at most {100 * moved[worst]:.1f} % ({worst}); "
                  f"{sum(v <= 0.10 for v in moved.values())}/{len(moved)} within 10 %")

    out = untrained_latency(common.suite_of(args), args.methods.split(",") if args.methods else None, args.size,
                            repeats=args.repeats, twice=args.twice, on_model=show)
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(out, indent=2))
        print(f"written: {args.output}")
    return 0
