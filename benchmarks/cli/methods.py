"""`vlpbench list` and `vlpbench card METHOD`: the registered methods and their cards."""

from __future__ import annotations

import argparse
import json
from typing import Any

from vlpbench.benchmarks.cli import common
from vlpbench.methods import get_spec, list_methods, method_config
from vlpbench.methods.registry import list_presets


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    subparsers.add_parser("list", help="list registered methods").set_defaults(fn=cmd_list)
    card = subparsers.add_parser("card", help="print a method's card (claims, deviations, presets) as JSON")
    card.add_argument("method")
    card.set_defaults(fn=cmd_card)


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_methods():
        print(f"{name:10s} {get_spec(name).card.citation}  presets: {', '.join(list_presets(name))}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    card = get_spec(args.method).card.to_json()
    card["presets"] = {s: method_config(args.method, s).model_dump(mode="json") for s in list_presets(args.method)}
    print(json.dumps(card, indent=2))
    return 0
