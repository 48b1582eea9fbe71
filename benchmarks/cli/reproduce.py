"""`vlpbench reproduce`: a card's claim evaluated from its released weights under the claim's protocol
(benchmarks/reproduce.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlpbench.benchmarks import evaluate
from vlpbench.benchmarks import reproduce as rp
from vlpbench.benchmarks.cli import common
from vlpbench.benchmarks.runtime import code_version, folder_lock
from vlpbench.methods import ConfigError


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    rep = subparsers.add_parser("reproduce", parents=parents.checkpoint,
                                help="evaluate a card's claim from its released weights under the claim's "
                                     "protocol: reproduced / not reproduced")
    rep.add_argument("claim", nargs="?", help="claim id (vlpbench reproduce --list)")
    rep.add_argument("--list", action="store_true", help="every claim of every card, with what it needs")
    rep.add_argument("--weights", help="the claim's checkpoint")
    rep.add_argument("--root", help="the claim's dataset folder")
    rep.add_argument("--name", default="reproduce", help="folder under --output and MLflow experiment suffix")
    rep.set_defaults(fn=cmd)


def cmd(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(rp.list_lines()))
        return 0
    if not args.claim or not args.weights:
        raise ConfigError("vlpbench reproduce CLAIM --weights PATH --root DIR (or --list to see the claims)")
    code_version()
    method, claim = rp.get_claim(args.claim)
    evaluate.standalone_tracking_uri(Path(args.output), args.tracking_uri)
    with folder_lock(Path(args.output) / args.name, "vlpbench reproduce"):
        result = rp.reproduce(claim, Path(args.weights), Path(args.root) if args.root else None, fmt=args.format,
                              arch=args.arch, tokenizer=Path(args.tokenizer) if args.tokenizer else None,
                              device=args.device, output=Path(args.output), name=args.name, method=method,
                              protocol_overrides=evaluate.parse_protocol(args.protocol))
    verdict = result.record.reproduction or {}
    if args.json:
        evaluate.write_summary_json(Path(args.json), result.record, {"reproduction": verdict})
    run_id = evaluate.log_standalone(result.record_path, Path(args.output), args.name, args.tracking_uri)
    common.print_evaluation(result, run_id, args.json)
    missed = verdict.get("not_reproduced")
    print(f"  {claim.id}: {verdict.get('status')}" + (f" ({', '.join(missed)} outside the 95 % interval and "
                                                      f"±{claim.tolerance:g} points)" if missed else ""))
    return 0
