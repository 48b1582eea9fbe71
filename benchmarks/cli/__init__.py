"""`vlpbench`: the command line, one module per command; each parses its flags and calls the library.

    vlpbench run [--suite FILE] [--set KEY=VALUE ...] [--output DIR] [--tracking-uri URI] [--resume latest]
                 [--executor inline|debug|local|slurm] [--cluster NAME] [--dry-run] [--no-wait]
    vlpbench status [--suite FILE] [--set KEY=VALUE ...] [--output DIR] [--resubmit-failed]
    vlpbench report [--suite FILE] [--set KEY=VALUE ...] [--output DIR] [--tracking-uri URI] [--source mlflow|files]
                    [--screenshot] [--run-id ID ... | --filter MLFLOW_FILTER [--experiment NAME]] [--report-dir DIR]
    vlpbench finetune [--suite FILE] [--set KEY=VALUE ...] [--output DIR] [--methods clip,tcl] [--dataset coco --root DIR]
    vlpbench eval --weights PATH [--format auto|vlpbench|open_clip|openai|hf_clip|tcl|albef|ernie_vil2] [--arch NAME]
                  --dataset builtin|flickr30k|coco|msrvtt [--root DIR] [--split test] [--protocol KEY=VALUE ...]
                  [--device cpu|cuda] [--output DIR] [--json FILE]
    vlpbench reproduce --list | CLAIM --weights PATH --root DIR [--device ...] [--output DIR] [--json FILE]
    vlpbench list
    vlpbench card METHOD
    vlpbench data build [--set key=value ...]
    vlpbench data verify NAME --root DIR [--decode] [--json FILE] [--manifest FILE]
    vlpbench latency [--suite FILE] [--set KEY=VALUE ...] [--methods clip,tcl] [--size tiny] [--twice] [--output FILE]
    vlpbench perf [--only metrics] [--output FILE]
    vlpbench dvae train [--suite FILE] [--set KEY=VALUE ...] [--method cots] [--size tiny]

The suite commands (run, status, report, finetune) share their --suite, --set, --output and --tracking-uri flags
(common.py's parent parsers), so a suite run with `--set name=x` is found again with the same flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Quiet third-party chatter that is not ours to act on; real errors still surface.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
logging.getLogger("alembic").setLevel(logging.WARNING)

from vlpbench.benchmarks.cli import common, data, dvae, finetune, latency, methods, perf, report, reproduce, run, status  # noqa: E402
from vlpbench.benchmarks.cli import eval as eval_cmd  # noqa: E402
from vlpbench.benchmarks.data import DatasetError  # noqa: E402
from vlpbench.benchmarks.pipeline import MissingPretraining  # noqa: E402
from vlpbench.benchmarks.runtime import FolderBusy  # noqa: E402
from vlpbench.benchmarks.training.checkpoint import CheckpointError  # noqa: E402
from vlpbench.methods import ConfigError  # noqa: E402
from vlpbench.methods.tokenizer import TokenizerError  # noqa: E402
from vlpbench.methods.towers import WeightsError  # noqa: E402
from vlpbench.reports import sources, tracking  # noqa: E402
from vlpbench.reports.screenshot import ScreenshotError  # noqa: E402
from vlpbench.reports.store import RecordNotSaved  # noqa: E402
from vlpbench.slurm.profiles import ProfileError  # noqa: E402

USER_ERRORS = (ConfigError, DatasetError, CheckpointError, TokenizerError, WeightsError, FileNotFoundError,
               ProfileError, sources.SelectionError, ScreenshotError, MissingPretraining, FolderBusy,
               tracking.TrackingError, RecordNotSaved)
# In the order `vlpbench --help` lists them.
COMMANDS = (run, status, report, finetune, eval_cmd, reproduce, methods, data, latency, perf, dvae)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlpbench", description="Vision-language pretraining benchmark harness.")
    sub = p.add_subparsers(dest="command", required=True)
    parents = common.make_parents()
    for command in COMMANDS:
        command.add_parser(sub, parents)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except USER_ERRORS as err:
        print(f"vlpbench: error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:   # a read-only --output or job folder
        print(f"vlpbench: error: cannot write {err.filename or 'a file'}: permission denied; give a writable "
              "--output, or fix the folder's permissions", file=sys.stderr)
        return 2


__all__ = ["USER_ERRORS", "build_parser", "main"]
