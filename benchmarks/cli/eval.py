"""`vlpbench eval`: given weights on one benchmark, without pretraining (benchmarks/evaluate.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlpbench.benchmarks import evaluate
from vlpbench.benchmarks.cli import common
from vlpbench.benchmarks.runtime import code_version, folder_lock


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    ev = subparsers.add_parser("eval", parents=parents.checkpoint,
                               help="evaluate given weights (a vlpbench model folder or a released checkpoint) on "
                                    "one benchmark, without pretraining")
    ev.add_argument("--weights", required=True, help="checkpoint file or folder")
    ev.add_argument("--dataset", required=True, choices=("builtin", "flickr30k", "coco", "msrvtt"))
    ev.add_argument("--root", help="the dataset's local folder (builtin: a built folder; default: the cache)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--name", default="eval", help="the folder under --output and the MLflow experiment "
                                                   "(vlpbench-<name>); default: eval")
    ev.set_defaults(fn=cmd)


def cmd(args: argparse.Namespace) -> int:
    code_version()
    evaluate.standalone_tracking_uri(Path(args.output), args.tracking_uri)
    with folder_lock(Path(args.output) / args.name, "vlpbench eval"):
        result = evaluate.evaluate_weights(
            Path(args.weights), fmt=args.format or "auto", arch=args.arch,
            tokenizer=Path(args.tokenizer) if args.tokenizer else None, dataset=args.dataset,
            root=Path(args.root) if args.root else None, split=args.split,
            protocol=evaluate.parse_protocol(args.protocol), device=args.device, output=Path(args.output),
            name=args.name)
    if args.json:
        evaluate.write_summary_json(Path(args.json), result.record)
    run_id = evaluate.log_standalone(result.record_path, Path(args.output), args.name, args.tracking_uri)
    common.print_evaluation(result, run_id, args.json)
    return 0
