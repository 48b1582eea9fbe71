"""`vlpbench`: the command line. The composition root: wires methods, benchmarks, reports, slurm.

    vlpbench run [--suite FILE] [--output DIR] [--tracking-uri URI] [--resume latest]
                 [--executor inline|debug|local|slurm] [--cluster NAME] [--dry-run] [--no-wait]
    vlpbench status [--suite FILE] [--output DIR] [--resubmit-failed]
    vlpbench eval --weights PATH [--format auto|vlpbench|open_clip|openai|hf_clip|tcl|albef|ernie_vil2] [--arch NAME]
                  --dataset builtin|flickr30k|coco|msrvtt [--root DIR] [--split test] [--protocol KEY=VALUE ...]
                  [--device cpu|cuda] [--output DIR] [--json FILE]
    vlpbench reproduce --list | CLAIM --weights PATH --root DIR [--device ...] [--output DIR] [--json FILE]
    vlpbench list
    vlpbench card METHOD
    vlpbench data build [--set key=value ...]
    vlpbench data verify NAME --root DIR [--decode] [--json FILE] [--manifest FILE]
    vlpbench latency [--methods clip,tcl] [--size tiny] [--twice] [--output FILE]
    vlpbench perf [--only metrics] [--output FILE]
    vlpbench dvae train [--suite FILE] [--method cots] [--size tiny] [--set key=value ...]
    vlpbench report [--suite FILE] [--output DIR] [--tracking-uri URI] [--source mlflow|files] [--screenshot]
                    [--run-id ID ... | --filter MLFLOW_FILTER [--experiment NAME]] [--report-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

# Quiet third-party chatter that is not ours to act on; real errors still surface.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
logging.getLogger("alembic").setLevel(logging.WARNING)

from benchmarks.data import BuiltinConfig, DatasetError, open_dataset  # noqa: E402
from benchmarks.data.files import check_image_header  # noqa: E402
from benchmarks.pipeline import MissingPretraining, expand_jobs, open_corpus, run_job  # noqa: E402
from benchmarks.suite import Suite, load_suite  # noqa: E402
from benchmarks.training.checkpoint import CheckpointError  # noqa: E402
from benchmarks.runtime import FolderBusy, code_version, folder_lock  # noqa: E402
from methods import ConfigError, create_method, get_spec, list_methods, method_config  # noqa: E402
from methods.config import validate  # noqa: E402
from methods.registry import SIZES  # noqa: E402
from methods.tokenizer import TokenizerError  # noqa: E402
from methods.towers import WeightsError  # noqa: E402
from reports import sources, tracking  # noqa: E402
from reports.screenshot import ScreenshotError  # noqa: E402
from reports.store import RecordNotSaved, atomic_write_text  # noqa: E402
from slurm import get_executor  # noqa: E402
from slurm.profiles import ProfileError  # noqa: E402

USER_ERRORS = (ConfigError, DatasetError, CheckpointError, TokenizerError, WeightsError, FileNotFoundError,
               ProfileError, sources.SelectionError, ScreenshotError, MissingPretraining, FolderBusy,
               tracking.TrackingError, RecordNotSaved)


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE items (YAML values; a dotted key sets a nested field: train.tiny.steps=2)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({getattr(err, 'problem', err)}); "
                              "quote it for the shell, e.g. --set 'methods=[clip, tcl]'") from None
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is set to a value earlier, not a mapping")
            node = child
        node[leaf] = parsed
    return out


def _suite_dir(args: argparse.Namespace, suite: Suite) -> Path:
    return Path(args.output) / suite.name


def _experiment(suite: Suite) -> str:
    return f"vlpbench-{suite.name}"


def _render(suite: Suite, suite_dir: Path, uri: str, source: str = "mlflow", out_dir: Path | None = None) -> Any:
    """The suite's report (report.html/.md, leaderboard.csv/.json, figures/) in out_dir (default: its folder),
    from MLflow or from the run folder; returns the ReportFiles."""
    import tempfile

    from reports.build import build_report

    out_dir = out_dir or suite_dir
    if source == "files":
        return build_report(sources.from_folder(suite_dir), out_dir, title=suite.name)
    with tempfile.TemporaryDirectory(prefix="vlpbench-report-") as tmp:
        inputs = sources.from_mlflow(uri, Path(tmp), experiment=_experiment(suite), suite=suite.name,
                                     suite_dir=suite_dir)
        return build_report(inputs, out_dir, title=suite.name)


def _print_report(files: Any, screenshot: bool = False) -> None:
    print(f"report: {files.html}")
    print(f"        {files.markdown}, {files.csv.name} / {files.json.name} and {len(files.figures)} figure(s) beside it")
    if screenshot:
        from reports.screenshot import screenshot as take

        print(f"        screenshot (headless Chromium): {take(files.html, files.html.with_suffix('.png'))}")


def _headline(metrics: dict[str, float]) -> str:
    """The one line a finished evaluation prints: recalls for image-text retrieval, mAP/Prec@1 per feature type
    for product retrieval."""
    if "encode_image/p50_ms" in metrics:
        big = max(int(k.split("@")[1].split("/")[0]) for k in metrics if k.startswith("search@"))
        line = (f"image batch p50 {metrics['encode_image/p50_ms']:.1f} ms ({metrics['encode_image/throughput_per_s']:.0f}"
                f"/s)  text batch p50 {metrics['encode_text/p50_ms']:.1f} ms  search@{big} p50 "
                f"{metrics[f'search@{big}/p50_ms']:.3f} ms")
        if f"ratios/exhaustive_over_dual@{big}" in metrics:
            line += f"  exhaustive/dual@{big} {metrics[f'ratios/exhaustive_over_dual@{big}']:.0f}x"
        return line
    if "t2v_R1" in metrics:
        return (f"RSUM {metrics['rsum']:.1f}  t2v R@1 {metrics['t2v_R1']:.1f}  MdR {metrics['t2v_medr']:.0f}  "
                f"v2t R@1 {metrics['v2t_R1']:.1f}")
    if "rsum" in metrics:
        return f"RSUM {metrics['rsum']:.1f}  i2t R@1 {metrics['i2t_R1']:.1f}  t2i R@1 {metrics['t2i_R1']:.1f}"
    features = sorted({k.split("/")[0] for k in metrics if k.endswith("/mAP@1")})
    return "mAP@1 " + "  ".join(f"{f} {metrics[f + '/mAP@1']:.1f}" for f in features)


def cmd_run(args: argparse.Namespace) -> int:
    code_version()  # the commit of the code this process loaded, before any long job (see runtime.code_version)
    suite = load_suite(Path(args.suite) if args.suite else None, _parse_sets(args.set))
    output = Path(args.output)
    suite_dir = _suite_dir(args, suite)
    uri = tracking.resolve_tracking_uri(args.tracking_uri or suite.tracking_uri, output)
    artifact_root = output / "mlartifacts" if tracking.is_embedded(uri) else None
    jobs = expand_jobs(suite)
    if suite.dataset.corpus is not None:  # a wrong root or a broken image fails now, not after hours of pretraining
        images = open_corpus(suite.dataset.corpus).images
        for path in dict.fromkeys(getattr(images, "paths", [])):   # image files (CSV/JSONL corpora): headers
            check_image_header(path)
    for real in suite.retrieval.datasets:   # every image present and readable (headers) before any training
        source = open_dataset(real.name, real.root, real.options)
        for item in source.items(real.split):
            check_image_header(source.image_root / item.image)
    if "finetuned_retrieval" in suite.benchmarks:
        _check_finetune_dataset(suite)
    if args.dry_run:   # writes nothing
        from benchmarks.launch import dry_run

        print(dry_run(suite, suite_dir.resolve(), _launcher(args, suite_dir.resolve())))
        return 0
    tracking.check_tracking_uri(uri)   # before any training: a wrong store fails in seconds, not after the jobs
    with folder_lock(suite_dir) as took_over:
        if took_over:
            print(took_over, flush=True)
        atomic_write_text(suite_dir / "suite.resolved.yaml",
                          yaml.safe_dump(suite.model_dump(mode="json"), sort_keys=False))
        if args.executor != "inline":
            return _run_submitted(args, suite, suite_dir, uri, artifact_root)
        print(f"suite {suite.name!r}: {len(jobs)} job(s) → {suite_dir}; tracking {uri}", flush=True)
        t0 = time.perf_counter()
        _run_inline(args.executor, jobs, suite, suite_dir, uri, artifact_root, resume=args.resume,
                    progress=not args.no_progress)
        report = _render(suite, suite_dir, uri)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    _print_report(report)
    return 0


def _run_inline(executor_kind: str, jobs: list[Any], suite: Suite, suite_dir: Path, uri: str,
                artifact_root: Path | None, **run_options: Any) -> None:
    """Run each job in this process (one after the other), log it to MLflow, print one line per record."""
    executor = get_executor(executor_kind)
    for job in jobs:
        outcome = executor.submit(run_job, job, suite_dir, **run_options).result()
        runs = tracking.log_job(outcome.job_dir, suite_dir, uri, _experiment(suite), artifact_root)
        for bench, path in outcome.results.items():
            metrics = json.loads(path.read_text())["metrics"]
            print(f"[{job.name}] {bench}: {_headline(metrics)}  (mlflow run {runs.get(bench, '?')})", flush=True)


def finetune_suite(suite: Suite, methods: list[str] | None, dataset: str | None, root: str | None,
                   steps: int | None, batch_size: int | None) -> Suite:
    """The suite reduced to its fine-tuned retrieval benchmark, with the command line's choices of methods,
    Karpathy set and budget merged over the suite's `finetune` section."""
    if (dataset is None) != (root is None):
        raise ConfigError("--dataset and --root go together: --dataset coco --root /data/coco (a Karpathy-split "
                          "copy; `vlpbench data verify coco --root /data/coco` checks it)")
    data = suite.model_dump(mode="json")
    data["benchmarks"] = ["finetuned_retrieval"]
    if methods:
        data["methods"] = methods
    ft = data["finetune"]
    if dataset is not None:
        ft["dataset"] = {**(ft.get("dataset") or {}), "name": dataset, "root": root}
    if steps is not None or batch_size is not None:
        for size in suite.sizes:
            budget = suite.finetune.budget_for(size).model_dump(mode="json")
            budget.update({k: v for k, v in (("steps", steps), ("batch_size", batch_size)) if v is not None})
            ft["budget"][size] = budget
    return validate(Suite, data, where="vlpbench finetune")


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune the suite's pretrained models for retrieval with each method's recipe and evaluate them: the
    suite's `finetuned_retrieval` benchmark alone, on pretraining that `vlpbench run` finished."""
    code_version()
    base = load_suite(Path(args.suite) if args.suite else None, _parse_sets(args.set))
    suite = finetune_suite(base, args.methods.split(",") if args.methods else None, args.dataset, args.root,
                           args.steps, args.batch_size)
    output = Path(args.output)
    suite_dir = _suite_dir(args, suite)
    uri = tracking.resolve_tracking_uri(args.tracking_uri or suite.tracking_uri, output)
    artifact_root = output / "mlartifacts" if tracking.is_embedded(uri) else None
    jobs = expand_jobs(suite)
    _check_finetune_dataset(suite)
    where = suite.finetune.dataset
    print(f"suite {suite.name!r}: fine-tuning {len(jobs)} pretrained model(s) in {suite_dir} on "
          f"{f'{where.name} ({where.root})' if where else 'the built-in dataset'}; tracking {uri}", flush=True)
    t0 = time.perf_counter()
    tracking.check_tracking_uri(uri)
    with folder_lock(suite_dir, "vlpbench finetune") as took_over:
        if took_over:
            print(took_over, flush=True)
        _run_inline("inline", jobs, suite, suite_dir, uri, artifact_root, progress=not args.no_progress,
                    benchmarks=["finetuned_retrieval"], require_pretrained=not args.pretrain)
        report = _render(suite, suite_dir, uri)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    _print_report(report)
    return 0


def _check_finetune_dataset(suite: Suite) -> None:
    """A real fine-tuning set with a wrong root or a missing split fails now, not after hours of pretraining."""
    real = suite.finetune.dataset
    if real is not None:
        for split in (suite.finetune.train_split, suite.finetune.split):
            open_dataset(real.name, real.root, real.options).items(split)


def _launcher(args: argparse.Namespace, suite_dir: Path) -> Any:
    from slurm.executors import ArrayLauncher
    from slurm.profiles import load_profile

    kind = "slurm" if args.dry_run and args.executor == "inline" else args.executor
    if kind == "slurm" and not args.cluster:
        raise ConfigError("--executor slurm needs --cluster NAME (a profile in slurm/clusters/, or a YAML path)")
    profile = load_profile(args.cluster) if args.cluster else None
    return ArrayLauncher(kind, suite_dir / "submitit", profile)


def _run_submitted(args: argparse.Namespace, suite: Suite, suite_dir: Path, uri: str,
                   artifact_root: Path | None) -> int:
    """--executor debug|local|slurm: the suite as job arrays through submitit (benchmarks/launch.py)."""
    from benchmarks.launch import Tracking, submit_suite, wait_and_report

    launcher = _launcher(args, suite_dir.resolve())
    t0 = time.perf_counter()
    print(f"suite {suite.name!r}: submitting through {launcher.kind}"
          f"{f' (cluster {launcher.profile.name})' if launcher.profile else ''} → {suite_dir}; tracking {uri}",
          flush=True)
    submitted = submit_suite(suite, suite_dir.resolve(), launcher,
                             Tracking(uri, _experiment(suite), artifact_root.resolve() if artifact_root else None),
                             resume=args.resume)
    status_cmd = f"vlpbench status --output {args.output}" + (f" --suite {args.suite}" if args.suite else "")
    if args.no_wait:
        print(f"submitted; follow with: {status_cmd}")
        return 0
    failed = wait_and_report(submitted)
    if failed:
        print(f"{len(failed)} task(s) failed: {', '.join(failed)}; see `{status_cmd}`, re-submit them with "
              f"`{status_cmd} --resubmit-failed`")
        return 1
    report = _render(suite, suite_dir, uri)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    _print_report(report)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """The submitted tasks of a suite: state, attempts, records, MLflow runs and logs; --resubmit-failed."""
    from benchmarks.launch import format_status, read_launch, resubmit_failed, status_rows

    suite = load_suite(Path(args.suite) if args.suite else None, _parse_sets(args.set))
    suite_dir = _suite_dir(args, suite).resolve()
    launch = read_launch(suite_dir)
    if args.resubmit_failed:
        args.executor = launch["executor"]
        args.dry_run = False
        args.cluster = args.cluster or launch["cluster"]
        resubmit_failed(suite_dir, _launcher(args, suite_dir))
    print(f"suite {launch['suite']!r} via {launch['executor']}"
          f"{' (cluster ' + launch['cluster'] + ')' if launch['cluster'] else ''}; submitit folder {launch['folder']}")
    print(format_status(status_rows(suite_dir, query=not args.no_query)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """A suite's report (default), or the report of any selection of MLflow runs (--run-id / --filter)."""
    import tempfile

    from reports.build import build_report

    if not (args.run_id or args.filter):
        suite = load_suite(Path(args.suite) if args.suite else None)
        suite_dir = _suite_dir(args, suite)
        if not suite_dir.is_dir():
            raise FileNotFoundError(f"no suite folder {suite_dir}: run `vlpbench run` (with the same --suite and "
                                    "--output) first, or select runs with --run-id / --filter")
        uri = tracking.resolve_tracking_uri(args.tracking_uri or suite.tracking_uri, Path(args.output))
        out = Path(args.report_dir) if args.report_dir else None
        _print_report(_render(suite, suite_dir, uri, args.source, out), args.screenshot)
        return 0
    if args.source == "files":
        raise ConfigError("--run-id / --filter select MLflow runs; drop --source files")
    uri = tracking.resolve_tracking_uri(args.tracking_uri, Path(args.output))
    with tempfile.TemporaryDirectory(prefix="vlpbench-report-") as tmp:
        inputs = sources.from_mlflow(uri, Path(tmp), experiment=args.experiment, run_ids=args.run_id or (),
                                     filter_string=args.filter)
        if not inputs.evaluations and not inputs.pretrain:
            raise sources.SelectionError(f"the selection matched no vlpbench runs at {uri}")
        out = Path(args.report_dir) if args.report_dir else Path(args.output) / "reports" / args.title
        _print_report(build_report(inputs, out, title=args.title), args.screenshot)
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    """Performance sections side by side (benchmarks/perf/), one JSON with the machine's fingerprint."""
    from benchmarks.perf import machine, metrics_scale, open_clip_compare, overhead, profile, rerank, train_step
    from benchmarks.runtime import fingerprint

    methods = args.methods.split(",") if args.methods else None
    out: dict[str, Any] = {"environment": fingerprint(), "sections": {}}

    def peak() -> float | None:
        """The train section's MFU is against the machine section's peak in the precision training runs in (the
        device's own bf16 peak under bf16 autocast, fp32 otherwise)."""
        from benchmarks.runtime import resolve_device, resolve_precision

        precision = resolve_precision(suite.precision, resolve_device(suite.device))
        key = "bf16" if precision == "bf16" else "fp32"
        return out["sections"].get("machine", {}).get(key, {}).get("peak_flops_per_s")

    size = args.size
    suite = load_suite(None, {"precision": args.precision} if args.precision else None)
    sections = {
        "machine": lambda: machine.run(),
        "train": lambda: train_step.run(methods, size=size, steps=args.steps, peak_flops=peak(), suite=suite,
                                        batch_size=args.batch_size),
        "profile": lambda: profile.run(methods, size=size, suite=suite),
        "compile": lambda: train_step.run_compile(methods, size=size, steps=args.steps, suite=suite,
                                                  eager=out["sections"].get("train", {}).get("methods")),
        "open_clip": lambda: open_clip_compare.run(repeats=args.repeats, size=size, suite=suite,
                                                   batch_size=args.batch_size or 256),
        "metrics": lambda: metrics_scale.run(n_images=args.n_images, repeats=args.repeats),
        "rerank": lambda: rerank.run(size=size, repeats=args.repeats, suite=suite),
        "overhead": lambda: overhead.run(methods, size=size, repeats=args.repeats, suite=suite),
    }
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


def _standalone_uri(args: argparse.Namespace) -> str:
    """The tracking store of `eval`/`reproduce`, checked before anything is evaluated."""
    return tracking.check_tracking_uri(tracking.resolve_tracking_uri(args.tracking_uri, Path(args.output)))


def _log_standalone(args: argparse.Namespace, record_path: Path, name: str) -> str:
    """Log a record of `eval`/`reproduce` (already written) to MLflow; returns the run id."""
    output = Path(args.output)
    uri = tracking.resolve_tracking_uri(args.tracking_uri, output)
    artifact_root = output / "mlartifacts" if tracking.is_embedded(uri) else None
    return tracking.log_evaluation(record_path, output / name, uri, f"vlpbench-{name}", artifact_root)


def _print_eval(result: Any, run_id: str, json_path: str | None) -> None:
    rec = result.record
    print(f"{rec.job}/{rec.benchmark}: {_headline(rec.metrics)}")
    print(f"  record: {result.record_path}  (MLflow run {run_id})")
    print(f"  report: vlpbench report --filter \"tags.`vlpbench.suite` = '{rec.suite}'\" --title {rec.suite}")
    if json_path:
        print(f"  json:   {json_path}")


def cmd_eval(args: argparse.Namespace) -> int:
    from benchmarks.evaluate import evaluate_weights, parse_protocol, write_summary_json

    code_version()
    _standalone_uri(args)
    with folder_lock(Path(args.output) / args.name, "vlpbench eval"):
        result = evaluate_weights(Path(args.weights), fmt=args.format or "auto", arch=args.arch,
                                  tokenizer=Path(args.tokenizer) if args.tokenizer else None, dataset=args.dataset,
                                  root=Path(args.root) if args.root else None, split=args.split,
                                  protocol=parse_protocol(args.protocol), device=args.device,
                                  output=Path(args.output), name=args.name)
    if args.json:
        write_summary_json(Path(args.json), result.record)
    _print_eval(result, _log_standalone(args, result.record_path, args.name), args.json)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from benchmarks import reproduce as rp
    from benchmarks.evaluate import parse_protocol, write_summary_json

    if args.list:
        print("\n".join(rp.list_lines()))
        return 0
    if not args.claim or not args.weights:
        raise ConfigError("vlpbench reproduce CLAIM --weights PATH --root DIR (or --list to see the claims)")
    code_version()
    method, claim = rp.get_claim(args.claim)
    _standalone_uri(args)
    with folder_lock(Path(args.output) / args.name, "vlpbench reproduce"):
        result = rp.reproduce(claim, Path(args.weights), Path(args.root) if args.root else None, fmt=args.format,
                              arch=args.arch, tokenizer=Path(args.tokenizer) if args.tokenizer else None,
                              device=args.device, output=Path(args.output), name=args.name, method=method,
                              protocol_overrides=parse_protocol(args.protocol))
    verdict = result.record.reproduction or {}
    if args.json:
        write_summary_json(Path(args.json), result.record, {"reproduction": verdict})
    _print_eval(result, _log_standalone(args, result.record_path, args.name), args.json)
    print(f"  {claim.id}: {verdict.get('status')}" + (f" ({', '.join(verdict['not_reproduced'])} outside the 95 % "
                                                       f"interval and ±{claim.tolerance:g} points)"
                                                       if verdict.get("not_reproduced") else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    for name in list_methods():
        spec = get_spec(name)
        print(f"{name:10s} {spec.card.citation}  sizes: {', '.join(SIZES)}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    spec = get_spec(args.method)
    card = spec.card.to_json()
    card["presets"] = {s: method_config(args.method, s).model_dump(mode="json") for s in SIZES}
    print(json.dumps(card, indent=2))
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    from methods.config import validate

    cfg = validate(BuiltinConfig, _parse_sets(args.set), where="--set")
    t0 = time.perf_counter()
    ds = open_dataset("builtin", None, cfg.model_dump(), Path(args.cache) if args.cache else None)
    print(f"built-in dataset at {ds.root} ({time.perf_counter() - t0:.1f} s), fingerprint {ds.fingerprint}")
    for split, info in ds.manifest["splits"].items():
        print(f"  {split:12s} {info['n_items']:6d} items  {info['n_captions']:6d} captions  "
              f"{info['n_twins']:5d} twins  {info['n_noisy']:5d} noisy")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    """Compare a local copy of a real dataset with the shipped manifest; non-zero exit when anything is off."""
    from benchmarks.data.verify import load_manifest, verify, write_report_json

    manifest = load_manifest(args.name, Path(args.manifest) if args.manifest else None)
    report = verify(args.name, Path(args.root), decode=args.decode, manifest=manifest)
    print(report.render())
    if args.json:
        write_report_json(report, Path(args.json))
    return 0 if report.ok else 1


def cmd_latency(args: argparse.Namespace) -> int:
    """Time every stage of untrained models (weights do not change timings) and write a JSON with the machine's
    fingerprint; --twice runs everything twice back to back and reports how far the p50s moved."""
    from benchmarks.evaluation.latency import measure_latency
    from benchmarks.pipeline import build_tokenizer
    from benchmarks.runners import latency_metrics
    from benchmarks.runtime import fingerprint, resolve_device, resolve_precision

    suite = load_suite(Path(args.suite) if args.suite else None, _parse_sets(args.set))
    dataset = open_dataset(suite.dataset.name, suite.dataset.root, suite.dataset.options)
    tokenizer = build_tokenizer(suite, dataset)
    texts = list(dataset.retrieval_split(suite.latency.text_split).texts)
    device = resolve_device(suite.device)
    precision = resolve_precision(suite.precision, device)
    proto = suite.latency.protocol
    if args.repeats:
        proto = proto.model_copy(update={"repeats": args.repeats})
    methods = args.methods.split(",") if args.methods else suite.method_names()
    out: dict[str, Any] = {"environment": fingerprint(device), "precision": precision,
                           "protocol": proto.model_dump(mode="json"), "methods": {}}
    for name in methods:
        model = create_method(suite.method_of(name), args.size, tokenizer=tokenizer,
                              overrides=suite.overrides_for(name, "method")).to(device)
        if not out["methods"]:  # process warm-up: the first measurement of a fresh process runs slow
            measure_latency(model, texts, proto, device, precision)
        runs = [latency_metrics(measure_latency(model, texts, proto, device, precision))
                for _ in range(2 if args.twice else 1)]
        entry: dict[str, Any] = {"metrics": runs[0]}
        print(f"{name}-{args.size}: {_headline(runs[0])}")
        if args.twice:
            moved = {k.split("/")[0]: abs(runs[1][k] / runs[0][k] - 1) for k in runs[0] if k.endswith("/p50_ms")
                     and runs[0][k] > 0}
            entry["second_run"] = runs[1]
            entry["p50_relative_change"] = moved
            worst = max(moved, key=lambda k: moved[k])
            print(f"  second run: p50s moved by at most {100 * moved[worst]:.1f} % ({worst}); "
                  f"{sum(v <= 0.10 for v in moved.values())}/{len(moved)} within 10 %")
        out["methods"][name] = entry
    if args.output:
        atomic_write_text(Path(args.output), json.dumps(out, indent=2))
        print(f"written: {args.output}")
    return 0


def cmd_dvae_train(args: argparse.Namespace) -> int:
    """Train (or find in the cache) the visual tokenizer a method's masked vision modelling needs."""
    from benchmarks.data.builtin.build import default_cache_root
    from benchmarks.pipeline import Job, dvae_request
    from benchmarks.training.dvae import ensure_dvae

    suite = load_suite(Path(args.suite) if args.suite else None, _parse_sets(args.set))
    job = Job(suite, args.method, args.size, args.seed)
    mcfg = method_config(args.method, args.size, suite.method_overrides.get(args.method))
    request = dvae_request(job, mcfg)
    if request is None:
        raise ConfigError(f"{args.method}/{args.size} needs no trained visual tokenizer (it has none, its masked "
                          "vision objective is off, or visual_tokenizer.weights already names a file)")
    cache = Path(args.cache) if args.cache else default_cache_root()
    dataset = open_dataset(suite.dataset.name, suite.dataset.root, suite.dataset.options, cache)
    weights = ensure_dvae(request, dataset.fingerprint, lambda: dataset.images("pretrain"),
                          lambda: dataset.images("val"),
                          {"train": dataset.ref("pretrain").to_json(), "heldout": dataset.ref("val").to_json()},
                          cache)
    r = weights.record
    print(f"visual tokenizer: {weights.encoder}")
    print(f"  {r['vocab_size']} codes, {r['grid']}x{r['grid']} tokens at {r['input_resolution']} px; held-out MSE "
          f"{r['heldout_mse']:.4f}, {r['heldout_codes_used']} codes used (perplexity {r['heldout_perplexity']:.1f})")
    print(f"  use it with: method_overrides: {{{args.method}: {{visual_tokenizer: {{weights: {weights.encoder}}}}}}}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlpbench", description="Vision-language pretraining benchmark harness.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="pretrain and evaluate a suite (default: every method, tiny, built-in data)")
    run.add_argument("--suite", help="suite YAML file (default: the built-in default suite)")
    run.add_argument("--output", default="outputs", help="output root (default: ./outputs)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                            "an embedded sqlite store in the output root)")
    run.add_argument("--resume", help="'latest' resumes each job from its newest checkpoint, or a step_*.pt path")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a top-level suite field (YAML value), e.g. --set methods=[clip]")
    run.add_argument("--executor", default="inline", choices=("inline", "debug", "local", "slurm"),
                     help="where jobs run: inline (this process, default), debug (submitit, in-process, pdb on "
                          "error), local (a subprocess per task), slurm (job arrays; needs --cluster)")
    run.add_argument("--cluster", help="cluster profile: a name in slurm/clusters/ or a YAML file")
    run.add_argument("--dry-run", action="store_true", help="print the sbatch scripts the suite would be "
                                                            "submitted with, submit nothing")
    run.add_argument("--no-wait", action="store_true", help="submit and return (follow with vlpbench status)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(fn=cmd_run)

    st = sub.add_parser("status", help="the submitted tasks of a suite: state, records, MLflow runs, logs. It reads "
                                       "submitit's pickled task files in the output folder, as submitit does: anyone "
                                       "who can write that folder can run code as you through them, so keep it "
                                       "writable by you alone")
    st.add_argument("--suite")
    st.add_argument("--output", default="outputs")
    st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as given to vlpbench run")
    st.add_argument("--cluster", help="profile for re-submission (default: the one the suite was submitted with)")
    st.add_argument("--resubmit-failed", action="store_true", help="re-submit failed tasks alone (a failed "
                                                                   "pretraining takes its evaluations along)")
    st.add_argument("--no-query", action="store_true", help="do not ask the scheduler; states as last recorded")
    st.set_defaults(fn=cmd_status)

    rep = sub.add_parser("report", help="the comparison report (HTML, Markdown, CSV/JSON) of a suite or of any "
                                        "selection of MLflow runs")
    rep.add_argument("--suite", help="suite file (default: the built-in default suite)")
    rep.add_argument("--output", default="outputs")
    rep.add_argument("--tracking-uri", help="MLflow store or server (default: the suite's, or "
                                            "sqlite:///<output>/mlflow.db)")
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
    rep.set_defaults(fn=cmd_report)

    ft = sub.add_parser("finetune", help="fine-tune a suite's pretrained models for retrieval (each method's "
                                         "recipe) and evaluate them; the lineage names both stages")
    ft.add_argument("--suite", help="the suite `vlpbench run` pretrained (default: the built-in default suite)")
    ft.add_argument("--output", default="outputs", help="output root of that run (default: ./outputs)")
    ft.add_argument("--tracking-uri", help="MLflow tracking URI (default: as vlpbench run)")
    ft.add_argument("--methods", help="comma-separated methods/variants of the suite (default: all of them)")
    ft.add_argument("--dataset", choices=("flickr30k", "coco"),
                    help="fine-tune on this Karpathy set (train) and evaluate on its test split, from --root")
    ft.add_argument("--root", help="the local copy of --dataset (nothing is downloaded)")
    ft.add_argument("--steps", type=int, help="fine-tuning steps (default: the suite's finetune budget)")
    ft.add_argument("--batch-size", type=int, help="fine-tuning batch size (default: the suite's)")
    ft.add_argument("--pretrain", action="store_true", help="pretrain a job first when its pretraining is "
                                                            "missing (default: fail and say so)")
    ft.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as given to vlpbench run")
    ft.add_argument("--no-progress", action="store_true", help="no progress bars")
    ft.set_defaults(fn=cmd_finetune)

    def checkpoint_args(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--format", default=None, choices=("auto", "vlpbench", "open_clip", "openai", "hf_clip",
                                                            "tcl", "albef", "ernie_vil2"),
                         help="checkpoint layout (default: auto, told from the files)")
        cmd.add_argument("--arch", help="architecture when the file does not say it: an open_clip config name "
                                        "(ViT-B-32, ViT-B-32-quickgelu, ViT-L-14-336...)")
        cmd.add_argument("--tokenizer", help="tokenizer files when the checkpoint has none: open_clip's "
                                             "bpe_simple_vocab_16e6.txt.gz, a Hugging Face tokenizer folder, or a "
                                             "folder with bert-base-uncased's vocab.txt (TCL/ALBEF)")
        cmd.add_argument("--protocol", action="append", default=[], metavar="KEY=VALUE",
                         help="protocol field: setting, resolution, text_max_length, prompt, scoring, rerank_k, "
                              "tie_policy, precision, batch_size, check_counts")
        cmd.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
        cmd.add_argument("--output", default="outputs", help="output root (default: ./outputs)")
        cmd.add_argument("--tracking-uri", help="MLflow tracking URI (default: as vlpbench run)")
        cmd.add_argument("--json", help="also write the metrics (i2t_R1 ... rsum) and the protocol to this file")

    ev = sub.add_parser("eval", help="evaluate given weights (a vlpbench model folder or a released checkpoint) on "
                                     "one benchmark, without pretraining")
    ev.add_argument("--weights", required=True, help="checkpoint file or folder")
    ev.add_argument("--dataset", required=True, choices=("builtin", "flickr30k", "coco", "msrvtt"))
    ev.add_argument("--root", help="the dataset's local folder (builtin: a built folder; default: the cache)")
    ev.add_argument("--split", default="test")
    ev.add_argument("--name", default="eval", help="the folder under --output and the MLflow experiment "
                                                   "(vlpbench-<name>); default: eval")
    checkpoint_args(ev)
    ev.set_defaults(fn=cmd_eval)

    rp = sub.add_parser("reproduce", help="evaluate a card's claim from its released weights under the claim's "
                                          "protocol: reproduced / not reproduced")
    rp.add_argument("claim", nargs="?", help="claim id (vlpbench reproduce --list)")
    rp.add_argument("--list", action="store_true", help="every claim of every card, with what it needs")
    rp.add_argument("--weights", help="the claim's checkpoint")
    rp.add_argument("--root", help="the claim's dataset folder")
    rp.add_argument("--name", default="reproduce", help="folder under --output and MLflow experiment suffix")
    checkpoint_args(rp)
    rp.set_defaults(fn=cmd_reproduce)

    sub.add_parser("list", help="list registered methods").set_defaults(fn=cmd_list)
    card = sub.add_parser("card", help="print a method's card (claims, deviations, presets) as JSON")
    card.add_argument("method")
    card.set_defaults(fn=cmd_card)

    data = sub.add_parser("data", help="datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    build = dsub.add_parser("build", help="generate the built-in dataset into the cache")
    build.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="generator option")
    build.add_argument("--cache", help="cache root (default: $VLPBENCH_CACHE or ~/.cache/vlpbench)")
    build.set_defaults(fn=cmd_data_build)
    ver = dsub.add_parser("verify", help="check a local copy of a real dataset (layout, file counts, sha256 of the "
                                         "annotations) against the manifest shipped with vlpbench")
    ver.add_argument("name", help="flickr30k, coco or msrvtt")
    ver.add_argument("--root", required=True, help="the dataset folder")
    ver.add_argument("--decode", action="store_true", help="also decode every referenced image/video (slow)")
    ver.add_argument("--json", help="also write the report as JSON to this file")
    ver.add_argument("--manifest", help="a manifest YAML to use instead of the shipped one")
    ver.set_defaults(fn=cmd_data_verify)

    lat = sub.add_parser("latency", help="time each inference stage of every method (untrained weights: timings do "
                                         "not depend on them); the suite's `latency` benchmark does the same for "
                                         "trained models")
    lat.add_argument("--suite", help="suite YAML (methods, latency protocol, device, precision); default suite")
    lat.add_argument("--methods", help="comma-separated methods/variants (default: the suite's)")
    lat.add_argument("--size", default="tiny", choices=SIZES)
    lat.add_argument("--repeats", type=int, help="timed calls per operation (default: the suite's, 20)")
    lat.add_argument("--twice", action="store_true", help="run everything twice back to back: repeatability")
    lat.add_argument("--output", help="write the results (with the machine fingerprint) to this JSON file")
    lat.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite field")
    lat.set_defaults(fn=cmd_latency)

    perf = sub.add_parser("perf", help="performance benchmarks side by side: matmul peak, training step "
                                      "time and MFU, COCO-scale metrics, batched re-ranking, evaluation overhead")
    perf.add_argument("--only", help="comma-separated sections (default: all): machine (matmul FLOP/s), train "
                                     "(step time, MFU), profile (where a training step's time goes, torch.profiler), "
                                     "compile (training with torch.compile'd towers vs eager), "
                                     "open_clip (CLIP vs open_clip), metrics (COCO-scale ranks), "
                                     "rerank (batched re-ranking), "
                                     "overhead (evaluation vs forward)")
    perf.add_argument("--methods", help="train/profile/overhead: comma-separated methods (default: train and profile "
                                        "every method of the default suite, overhead clip)")
    perf.add_argument("--size", default="tiny", choices=SIZES, help="model size of the train, profile, compile, "
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
    perf.set_defaults(fn=cmd_perf)

    dvae = sub.add_parser("dvae", help="visual tokenizers for masked vision modelling (COTS's CMVM)")
    vsub = dvae.add_subparsers(dest="dvae_command", required=True)
    train = vsub.add_parser("train", help="train a dVAE on the suite dataset's pretraining images (cached, "
                                          "fingerprinted, reused by `vlpbench run`)")
    train.add_argument("--suite", help="suite YAML (dataset, dvae budget, method_overrides); default suite if unset")
    train.add_argument("--method", default="cots")
    train.add_argument("--size", default="tiny", choices=SIZES)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a suite field")
    train.add_argument("--cache", help="cache root (default: $VLPBENCH_CACHE or ~/.cache/vlpbench)")
    train.set_defaults(fn=cmd_dvae_train)
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


if __name__ == "__main__":
    sys.exit(main())
