"""`vlpbench perf`: performance sections side by side (benchmarks/perf/), one JSON with the machine's fingerprint."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlpbench.benchmarks.cli import common
from vlpbench.benchmarks.suite import Suite, load_suite
from vlpbench.methods import ConfigError
from vlpbench.reports.store import atomic_write_text


def add_parser(subparsers: Any, parents: common.Parents) -> None:
    perf = subparsers.add_parser("perf", help="performance benchmarks side by side: matmul peak, training step "
                                              "time and MFU, COCO-scale metrics, batched re-ranking, evaluation "
                                              "overhead")
    perf.add_argument("--only", help="comma-separated sections (default: all): machine (matmul FLOP/s), train "
                                     "(step time, MFU), profile (where a training step's time goes, torch.profiler), "
                                     "compile (training with torch.compile'd towers vs eager), "
                                     "open_clip (CLIP vs open_clip), metrics (COCO-scale ranks), "
                                     "rerank (batched re-ranking), "
                                     "overhead (evaluation vs forward)")
    perf.add_argument("--methods", help="train/profile/overhead: comma-separated methods (default: train and profile "
                                        "every method of the default suite, overhead clip)")
    perf.add_argument("--size", default="tiny", help="model preset of the train, profile, compile, "
                                                                    "open_clip, rerank and overhead sections (base: "
                                                                    "measured on a GPU only)")
    perf.add_argument("--batch-size", type=int, help="train and open_clip: the batch (default: the budget's; "
                                                     "open_clip 256)")
    perf.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                      help="autocast of the train, profile, open_clip, rerank and overhead sections (default: the "
                           "suite's, bf16 on CUDA)")
    perf.add_argument("--steps", type=int, default=6, help="train: timed steps per method (after 2 warm-up)")
    perf.add_argument("--n-images", type=int, default=5000, help="metrics: images (5 captions each); COCO 5K test")
    perf.add_argument("--repeats", type=int, default=3, help="alternated repetitions per side")
    perf.add_argument("--output", default="outputs/perf.json", help="the JSON written (default: %(default)s)")
    perf.set_defaults(fn=cmd)


def cmd(args: argparse.Namespace) -> int:
    from vlpbench.benchmarks.runtime import fingerprint

    out: dict[str, Any] = {"environment": fingerprint(), "sections": {}}
    sections = _sections(args, load_suite(None, {"precision": args.precision} if args.precision else None), out)
    # compile is opt-in (--only ...,compile): it compiles every method's towers, ~10 min on a 2-core CPU
    chosen = args.only.split(",") if args.only else [s for s in sections if s != "compile"]
    unknown = sorted(set(chosen) - set(sections))
    if unknown:
        raise ConfigError(f"--only: unknown section(s) {unknown}; choose from {sorted(sections)}")
    for name in sorted(chosen, key=list(sections).index):
        t0 = time.perf_counter()
        result = sections[name]()
        out["sections"][name] = {**result, "section_wall_s": time.perf_counter() - t0}
        print(f"{name}: {json.dumps(_perf_headline(name, result))}", flush=True)
    atomic_write_text(Path(args.output), json.dumps(out, indent=2, default=str) + "\n")
    print(f"written: {args.output}")
    return 0


def _sections(args: argparse.Namespace, suite: Suite, out: dict[str, Any]) -> dict[str, Callable[[], dict[str, Any]]]:
    """Each section's measurement, in the order they run; `out` holds the sections done so far (the train section's
    MFU uses the machine section's peak, compile compares with the train section's eager steps)."""
    from vlpbench.benchmarks.perf import machine, metrics_scale, open_clip_compare, overhead, profile, rerank, train_step

    methods = args.methods.split(",") if args.methods else None
    size = args.size
    return {
        "machine": lambda: machine.run(),
        "train": lambda: train_step.run(methods, size=size, steps=args.steps, peak_flops=_peak(suite, out),
                                        suite=suite, batch_size=args.batch_size),
        "profile": lambda: profile.run(methods, size=size, suite=suite),
        "compile": lambda: train_step.run_compile(methods, size=size, steps=args.steps, suite=suite,
                                                  eager=out["sections"].get("train", {}).get("methods")),
        "open_clip": lambda: open_clip_compare.run(repeats=args.repeats, size=size, suite=suite,
                                                   batch_size=args.batch_size or 256),
        "metrics": lambda: metrics_scale.run(n_images=args.n_images, repeats=args.repeats),
        "rerank": lambda: rerank.run(size=size, repeats=args.repeats, suite=suite),
        "overhead": lambda: overhead.run(methods, size=size, repeats=args.repeats, suite=suite),
    }


def _peak(suite: Suite, out: dict[str, Any]) -> float | None:
    """The train section's MFU is against the machine section's peak in the precision training runs in (the
    device's own bf16 peak under bf16 autocast, fp32 otherwise)."""
    from vlpbench.benchmarks.runtime import resolve_device, resolve_precision

    precision = resolve_precision(suite.precision, resolve_device(suite.device))
    key = "bf16" if precision == "bf16" else "fp32"
    return out["sections"].get("machine", {}).get(key, {}).get("peak_flops_per_s")


def _perf_headline(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The numbers a perf section prints (the JSON has everything)."""
    if name == "machine":
        return {k: round(result[k]["peak_gflops"], 1) for k in ("fp32", "bf16") if result[k].get("supported")}
    if name == "train":
        return {m: {"step_s": round(r["step_s_median"], 3), "samples_per_s": round(r["samples_per_s"], 1),
                    **({"mfu": round(r["mfu"], 3)} if "mfu" in r else {})}
                for m, r in result.get("methods", {}).items()} or result
    if name == "compile":
        return {m: {"speedup": round(r["speedup"], 3), "compile_extra_s": round(r["compile_extra_s"], 1)}
                for m, r in result.get("methods", {}).items()} or result
    if name == "profile":
        return {m: {g: round(v, 3) for g, v in r["share_of_aten_self"].items()}
                for m, r in result.get("methods", {}).items()} or result
    if "skipped" in result:
        return {"skipped": result["skipped"]}
    if name == "open_clip":
        return {k: round(result[k]["ratio_open_clip_over_ours"], 3) for k in ("train_step", "encode_image",
                                                                              "encode_text")}
    if name == "overhead":
        return {"ratios": {m: round(r["overhead_ratio"], 3) for m, r in result["methods"].items()},
                "targets": result["targets"]}
    return {k: v for k, v in result.items() if k in ("speedup", "targets")}
