"""`vlpbench dvae train`: the visual tokenizer (dVAE) a method's masked vision modelling needs (COTS's CMVM),
trained on the suite dataset's pretraining images or found in the cache — the stage `vlpbench run` reuses."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vlpbench.benchmarks.cli import common


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    dvae = subparsers.add_parser("dvae", help="visual tokenizers for masked vision modelling (COTS's CMVM)")
    vsub = dvae.add_subparsers(dest="dvae_command", required=True)
    train = vsub.add_parser("train", parents=parents.selection,
                            help="train a dVAE on the suite dataset's pretraining images (cached, fingerprinted, "
                                 "reused by `vlpbench run`)")
    train.add_argument("--method", default="cots")
    train.add_argument("--size", default="tiny", help="a preset of the method (default: tiny)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--cache", help="cache root (default: $VLPBENCH_CACHE or ~/.cache/vlpbench)")
    train.set_defaults(fn=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or find in the cache) the visual tokenizer of --method at --size and say how to use it."""
    weights = _ensure(common.suite_of(args), args.method, args.size, args.seed,
                      Path(args.cache) if args.cache else None)
    r = weights.record
    print(f"visual tokenizer: {weights.encoder}")
    print(f"  {r['vocab_size']} codes, {r['grid']}x{r['grid']} tokens at {r['input_resolution']} px; held-out MSE "
          f"{r['heldout_mse']:.4f}, {r['heldout_codes_used']} codes used (perplexity {r['heldout_perplexity']:.1f})")
    print(f"  use it with: method_overrides: {{{args.method}: {{visual_tokenizer: {{weights: {weights.encoder}}}}}}}")
    return 0


def _ensure(suite: Any, method: str, size: str, seed: int, cache: Path | None) -> Any:
    """The job's dVAE stage exactly as `vlpbench run` builds it (same request, data and cache entry)."""
    from vlpbench.benchmarks.data import open_dataset
    from vlpbench.benchmarks.job import Job
    from vlpbench.benchmarks.pipeline import ensure_job_dvae
    from vlpbench.methods import ConfigError

    dataset = open_dataset(suite.dataset.name, suite.dataset.root, suite.dataset.options, cache)
    weights = ensure_job_dvae(Job(suite, method, size, seed), dataset, cache)
    if weights is None:
        raise ConfigError(f"{method}/{size} needs no trained visual tokenizer (it has none, its masked vision "
                          "objective is off, or visual_tokenizer.weights already names a file)")
    return weights
