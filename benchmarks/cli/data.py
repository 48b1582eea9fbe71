"""`vlpbench data build` and `vlpbench data verify`: the built-in dataset, and local copies of real ones."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from vlpbench.benchmarks.cli import common
from vlpbench.benchmarks.data import BuiltinConfig, open_dataset
from vlpbench.methods.config import validate


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    data = subparsers.add_parser("data", help="datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    build = dsub.add_parser("build", help="generate the built-in dataset into the cache")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="generator option")
    build.add_argument("--cache", help="cache root (default: $VLPBENCH_CACHE or ~/.cache/vlpbench)")
    build.set_defaults(fn=cmd_build)
    ver = dsub.add_parser("verify", help="check a local copy of a real dataset (layout, file counts, sha256 of the "
                                         "annotations) against the manifest shipped with vlpbench")
    ver.add_argument("name", help="flickr30k, coco or msrvtt")
    ver.add_argument("--root", required=True, help="the dataset folder")
    ver.add_argument("--decode", action="store_true", help="also decode every referenced image/video (slow)")
    ver.add_argument("--json", help="also write the report as JSON to this file")
    ver.add_argument("--manifest", help="a manifest YAML to use instead of the shipped one")
    ver.set_defaults(fn=cmd_verify)


def cmd_build(args: argparse.Namespace) -> int:
    cfg = validate(BuiltinConfig, common.parse_sets(args.set), where="--set")
    t0 = time.perf_counter()
    ds = open_dataset("builtin", None, cfg.model_dump(), Path(args.cache) if args.cache else None)
    print(f"built-in dataset at {ds.root} ({time.perf_counter() - t0:.1f} s), fingerprint {ds.fingerprint}")
    for split, info in ds.manifest["splits"].items():
        print(f"  {split:12s} {info['n_items']:6d} items  {info['n_captions']:6d} captions  "
              f"{info['n_twins']:5d} twins  {info['n_noisy']:5d} noisy")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Compare a local copy of a real dataset with the shipped manifest; non-zero exit when anything is off."""
    from vlpbench.benchmarks.data.verify import load_manifest, verify, write_report_json

    manifest = load_manifest(args.name, Path(args.manifest) if args.manifest else None)
    report = verify(args.name, Path(args.root), decode=args.decode, manifest=manifest)
    print(report.render())
    if args.json:
        write_report_json(report, Path(args.json))
    return 0 if report.ok else 1
