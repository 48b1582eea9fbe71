"""`vlpbench finetune`: a suite's pretrained models fine-tuned for retrieval (each method's recipe) and evaluated —
the suite's `finetuned_retrieval` benchmark alone, run as `vlpbench run` runs it (benchmarks/launch.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from vlpbench.benchmarks import launch
from vlpbench.benchmarks.cli import common
from vlpbench.benchmarks.job import expand_jobs
from vlpbench.benchmarks.runtime import code_version, folder_lock
from vlpbench.reports import tracking


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    ft = subparsers.add_parser("finetune", parents=parents.suite,
                               help="fine-tune a suite's pretrained models for retrieval (each method's recipe) and "
                                    "evaluate them; the lineage names both stages")
    ft.add_argument("--methods", help="comma-separated methods/variants of the suite (default: all of them)")
    ft.add_argument("--dataset", choices=("flickr30k", "coco"),
                    help="fine-tune on this Karpathy set (train) and evaluate on its test split, from --root")
    ft.add_argument("--root", help="the local copy of --dataset (nothing is downloaded)")
    ft.add_argument("--steps", type=int, help="fine-tuning steps (default: the suite's finetune budget)")
    ft.add_argument("--batch-size", type=int, help="fine-tuning batch size (default: the suite's)")
    ft.add_argument("--pretrain", action="store_true", help="pretrain a job first when its pretraining is "
                                                            "missing (default: fail and say so)")
    ft.add_argument("--no-progress", action="store_true", help="no progress bars")
    ft.set_defaults(fn=cmd)


def cmd(args: argparse.Namespace) -> int:
    """Fine-tune and evaluate on pretraining that `vlpbench run` finished (the suite of --suite and --set)."""
    code_version()
    suite = launch.finetune_suite(common.suite_of(args), args.methods.split(",") if args.methods else None,
                                  args.dataset, args.root, args.steps, args.batch_size)
    folder = common.suite_dir(args, suite)
    trk = launch.suite_tracking(suite, Path(args.output), args.tracking_uri)
    launch.check_finetune_dataset(suite)
    where = suite.finetune.dataset
    print(f"suite {suite.name!r}: fine-tuning {len(expand_jobs(suite))} pretrained model(s) in {folder} on "
          f"{f'{where.name} ({where.root})' if where else 'the built-in dataset'}; tracking {trk.uri}", flush=True)
    t0 = time.perf_counter()
    tracking.check_tracking_uri(trk.uri)
    with folder_lock(folder, "vlpbench finetune") as took_over:
        if took_over:
            print(took_over, flush=True)
        for result in launch.run_inline(suite, folder, trk, progress=not args.no_progress,
                                        benchmarks=["finetuned_retrieval"], require_pretrained=not args.pretrain):
            common.print_task(result)
        report = common.render_report(suite, folder, trk.uri)
    common.print_done(t0, report)
    return 0
