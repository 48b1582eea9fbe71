"""Build the comparison report from `ReportInputs`: figures, Markdown, HTML and leaderboard exports.

Output folder layout (each file written atomically; figures first, so no page ever links a missing one):

    report.md           the report (Markdown; figures linked as figures/*.png)
    report.html         the same content as one self-contained page (figures embedded, inline style)
    leaderboard.csv     one row per evaluation, protocol id and fingerprint on every row
    leaderboard.json    the rows plus mean ± std over seeds within each protocol and model
    figures/*.png       recall bars per image-text table, latency vs RSUM (Pareto), latency vs gallery size,
                        training-loss curves; one colour and marker per method in every figure

Intervals are 95 % percentile-bootstrap intervals from each record's saved per-query ranks (reports/stats.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vlpbench.reports import exports, html, markdown, plots
from vlpbench.reports.comparison import protocol_id, protocol_key
from vlpbench.reports.sections import section_of
from vlpbench.reports.sources import ReportInputs, record_key
from vlpbench.reports.stats import Interval, bootstrap_retrieval
from vlpbench.reports.store import EvaluationRecord, atomic_write_text, utc_now

FIGURES = "figures"


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    csv: Path
    json: Path
    figures: tuple[Path, ...]


def _intervals(inputs: ReportInputs, n_resamples: int) -> markdown.IntervalsFn:
    cache: dict[tuple[str, str, str], Mapping[str, Interval] | None] = {}

    def get(rec: EvaluationRecord) -> Mapping[str, Interval] | None:
        key = record_key(rec)
        if key not in cache:
            r = inputs.ranks(rec)
            cache[key] = None if r is None else bootstrap_retrieval(r["i2t"], r["t2i"], n_resamples=n_resamples)
        return cache[key]
    return get


def _figures(inputs: ReportInputs, out_dir: Path, intervals: markdown.IntervalsFn
             ) -> tuple[dict[str, Path], list[plots.LatencyPoint]]:
    """Every figure the inputs allow, saved under out_dir/figures; {report key: path} and the latency points."""
    evaluations = inputs.evaluations
    labels = {r.label for r in [*inputs.pretrain, *evaluations]}
    styles = plots.method_styles(labels)
    fig_dir = out_dir / FIGURES
    saved: dict[str, Path] = {}

    groups: dict[str, list[EvaluationRecord]] = defaultdict(list)
    for r in evaluations:
        if section_of(r.benchmark).layout == "image_text" and "i2t_R1" in r.metrics:
            groups[protocol_key(r)].append(r)
    for key, recs in groups.items():
        first = recs[0]
        title = (f"{section_of(first.benchmark).title} — "
                 f"{first.dataset['dataset']}/{first.dataset['split']}")
        saved[key] = plots.save_figure(plots.recall_bars(recs, styles, title=title, intervals=intervals),
                                       fig_dir / f"recall-{first.benchmark.replace('@', '-')}-{protocol_id(first)}.png")

    points = plots.latency_accuracy_points(evaluations)
    if points:
        saved[markdown.FIG_LATENCY_RSUM] = plots.save_figure(
            plots.latency_vs_rsum(points, styles, title="Zero-shot RSUM vs per-query latency"),
            fig_dir / "latency-vs-rsum.png")
    if any(r.benchmark == "latency" for r in evaluations):
        saved[markdown.FIG_LATENCY_GALLERY] = plots.save_figure(plots.latency_vs_gallery(evaluations, styles),
                                                                fig_dir / "latency-vs-gallery.png")
    histories, job_labels = {}, {}
    for pre in inputs.pretrain:
        lines = inputs.history(pre)
        if any("loss/total" in line for line in lines):
            name = pre.job if pre.job not in histories else f"{pre.job} ({pre.suite}, {pre.created_utc})"
            histories[name], job_labels[name] = lines, pre.label
    if histories:
        saved[markdown.FIG_LOSS] = plots.save_figure(plots.loss_curves(histories, styles, job_labels),
                                                     fig_dir / "loss-curves.png")
    return saved, points


def build_report(inputs: ReportInputs, out_dir: Path, *, title: str, tolerance: float = 1.0,
                 n_resamples: int = 1000) -> ReportFiles:
    """Write the report of `inputs` into out_dir (see the module docstring); returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    intervals = _intervals(inputs, n_resamples)
    figures, points = _figures(inputs, out_dir, intervals)
    for stale in (out_dir / FIGURES).glob("*.png"):
        if stale not in figures.values():
            stale.unlink()
    text = markdown.render(inputs.pretrain, inputs.evaluations, suite=title, source=inputs.source,
                           intervals=intervals, tolerance=tolerance, ranks=inputs.ranks,
                           figures={k: p.relative_to(out_dir).as_posix() for k, p in figures.items()},
                           latency_points=points)
    md_path = atomic_write_text(out_dir / "report.md", text)
    html_path = atomic_write_text(out_dir / "report.html",
                                  html.render_html(text, title=f"vlpbench report — {title}", base=out_dir))
    board = exports.leaderboard(inputs.evaluations, intervals)
    csv_path = atomic_write_text(out_dir / "leaderboard.csv", exports.to_csv(board))
    json_path = atomic_write_text(out_dir / "leaderboard.json",
                                  exports.to_json(board, source=inputs.source, generated_utc=utc_now()))
    return ReportFiles(md_path, html_path, csv_path, json_path, tuple(sorted(figures.values())))
