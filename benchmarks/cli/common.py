"""What the commands share: the parent parsers of their common flags, `--set` parsing, the suite a command names,
the suite's report, and the one line a finished record prints."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlpbench.benchmarks.registry import benchmark_of_record
from vlpbench.benchmarks.suite import Suite, load_suite
from vlpbench.methods import ConfigError
from vlpbench.reports import sources

SET_HELP = ("override a suite field (YAML value; a dotted key sets a nested one), repeatable: --set methods=[clip] "
            "--set train.tiny.steps=2")
TRACKING_HELP = ("MLflow tracking URI, a store or a server (default: a suite's tracking_uri, else "
                 "$MLFLOW_TRACKING_URI, else an embedded sqlite store <output>/mlflow.db)")


@dataclass(frozen=True)
class Parents:
    """Parent parsers (argparse `parents=`): each flag is declared once, and commands that share it agree."""

    suite: list[argparse.ArgumentParser]        # --suite --set --output --tracking-uri: every suite command
    selection: list[argparse.ArgumentParser]    # --suite --set alone (latency, dvae train: no run folder)
    checkpoint: list[argparse.ArgumentParser]   # --output --tracking-uri and the checkpoint flags (eval, reproduce)


def make_parents() -> Parents:
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--suite", help="suite YAML file (default: the built-in default suite)")
    selection.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--output", default="outputs", help="output root (default: ./outputs)")
    store.add_argument("--tracking-uri", help=TRACKING_HELP)
    return Parents(suite=[selection, store], selection=[selection], checkpoint=[store, _checkpoint_parser()])


def _checkpoint_parser() -> argparse.ArgumentParser:
    cmd = argparse.ArgumentParser(add_help=False)
    cmd.add_argument("--format", default=None, choices=("auto", "vlpbench", "open_clip", "openai", "hf_clip", "tcl",
                                                        "albef", "ernie_vil2"),
                     help="checkpoint layout (default: auto, told from the files)")
    cmd.add_argument("--arch", help="architecture when the file does not say it: an open_clip config name "
                                    "(ViT-B-32, ViT-B-32-quickgelu, ViT-L-14-336...)")
    cmd.add_argument("--tokenizer", help="tokenizer files when the checkpoint has none: open_clip's "
                                         "bpe_simple_vocab_16e6.txt.gz, a Hugging Face tokenizer folder, or a folder "
                                         "with bert-base-uncased's vocab.txt (TCL/ALBEF)")
    cmd.add_argument("--protocol", action="append", default=[], metavar="KEY=VALUE",
                     help="protocol field: setting, resolution, text_max_length, prompt, scoring, rerank_k, "
                          "tie_policy, precision, batch_size, check_counts")
    cmd.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda when available)")
    cmd.add_argument("--json", help="also write the metrics (i2t_R1 ... rsum) and the protocol to this file")
    return cmd


def parse_sets(items: list[str]) -> dict[str, Any]:
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


def suite_of(args: argparse.Namespace) -> Suite:
    """The suite of --suite (default: the built-in one) with the --set overrides."""
    return load_suite(Path(args.suite) if args.suite else None, parse_sets(args.set))


def suite_dir(args: argparse.Namespace, suite: Suite) -> Path:
    return Path(args.output) / suite.name


def render_report(suite: Suite, folder: Path, uri: str, source: str = "mlflow", out_dir: Path | None = None) -> Any:
    """The suite's report (report.html/.md, leaderboard.csv/.json, figures/) in out_dir (default: its folder),
    from MLflow or from the run folder; returns the ReportFiles."""
    from vlpbench.benchmarks.launch import experiment_name
    from vlpbench.reports.build import build_report

    out_dir = out_dir or folder
    if source == "files":
        return build_report(sources.from_folder(folder), out_dir, title=suite.name)
    with tempfile.TemporaryDirectory(prefix="vlpbench-report-") as tmp:
        inputs = sources.from_mlflow(uri, Path(tmp), experiment=experiment_name(suite), suite=suite.name,
                                     suite_dir=folder)
        return build_report(inputs, out_dir, title=suite.name)


def print_report(files: Any, screenshot: bool = False) -> None:
    print(f"report: {files.html}")
    print(f"        {files.markdown}, {files.csv.name} / {files.json.name} and {len(files.figures)} figure(s) beside it")
    if screenshot:
        from vlpbench.reports.screenshot import screenshot as take

        print(f"        screenshot (headless Chromium): {take(files.html, files.html.with_suffix('.png'))}")


def print_done(t0: float, report: Any) -> None:
    print(f"done in {time.perf_counter() - t0:.0f} s")
    print_report(report)


def print_evaluation(result: Any, run_id: str, json_path: str | None) -> None:
    """What `vlpbench eval` and `vlpbench reproduce` print for the record they wrote (benchmarks/evaluate.py)."""
    rec = result.record
    print(f"{rec.job}/{rec.benchmark}: {headline(rec.benchmark, rec.metrics)}")
    print(f"  record: {result.record_path}  (MLflow run {run_id})")
    print(f"  report: vlpbench report --filter \"tags.`vlpbench.suite` = '{rec.suite}'\" --title {rec.suite}")
    if json_path:
        print(f"  json:   {json_path}")


def print_task(result: Mapping[str, Any]) -> None:
    """One line per record of a finished task (launch.log_task's result): its headline and its MLflow run."""
    job = Path(result["job_dir"]).name
    for bench, path in result["records"].items():
        metrics = json.loads(Path(path).read_text())["metrics"]
        print(f"[{job}] {bench}: {headline(bench, metrics)}  (mlflow run {result['runs'].get(bench, '?')})",
              flush=True)


def headline(benchmark: str, metrics: Mapping[str, float]) -> str:
    """The one line a finished record prints (`benchmark`: its record name, e.g. 'zeroshot_retrieval_rerank@coco'):
    the headline of the registered benchmark that writes it, else its first metrics."""
    spec = benchmark_of_record(benchmark)
    if spec is not None:
        return spec.headline(metrics)
    return "  ".join(f"{k} {v:.3g}" for k, v in sorted(metrics.items())[:4])
