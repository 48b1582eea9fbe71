"""Figures of the comparison report, drawn with seaborn/matplotlib from the stored records.

- `latency_vs_rsum`: what accuracy each retrieval design buys at what per-query cost, with the Pareto front;
  its points come from `latency_accuracy_points`, which pairs each job's latency record with its retrieval records.
- `recall_bars`: R@1/5/10 in both directions for one table of image-text retrieval records, with uncertainty.
- `loss_curves`: pretraining losses against step, one panel per method.
- `latency_vs_gallery`: how the per-query cost of each design grows with the gallery.

Every figure is a standalone `matplotlib.figure.Figure` (no pyplot, so no global figure state and no display
needed), styled with a seaborn theme applied only while it is drawn. `method_styles` gives each method one colour
and one marker that every figure uses, so a method looks the same throughout the report.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from vlpbench.reports.stats import Interval, seed_summary
from vlpbench.reports.store import EvaluationRecord, atomic_write_bytes

BASE_METHODS: tuple[str, ...] = ("clip", "tcl", "cots", "ernie_vil2", "scale")
_BASE_MARKERS: tuple[str, ...] = ("o", "s", "D", "^", "v")
_VARIANT_MARKERS: tuple[str, ...] = ("P", "X", "<", ">", "p", "h", "*", "d", "H", "8")
DUAL_DESIGN = "dual encoder (ITC)"
RECALL_METRICS: tuple[tuple[str, str], ...] = (
    ("i2t_R1", "I→T R@1"), ("i2t_R5", "I→T R@5"), ("i2t_R10", "I→T R@10"),
    ("t2i_R1", "T→I R@1"), ("t2i_R5", "T→I R@5"), ("t2i_R10", "T→I R@10"))
_PER_QUERY = re.compile(r"^per_query_ms/(?P<design>[a-z0-9_]+)@(?P<n>\d+)$")
_RERANK = re.compile(r"^per_query_ms/rerank_top(?P<k>\d+)@(?P<n>\d+)$")
_SEED_LINESTYLES: tuple[str, ...] = ("-", "--", ":", "-.")
_WIDTH_IN = 9.0   # at the default 100 dpi of a Figure: about 900 px wide


@dataclass(frozen=True)
class MethodStyle:
    color: str    # hex, e.g. "#0173b2"
    marker: str   # matplotlib marker


@dataclass(frozen=True)
class LatencyPoint:
    label: str
    size: str
    design: str         # "dual encoder (ITC)" or "re-rank top-{k} (ITM)"
    latency_ms: float   # per-query ms at `gallery` (mean over seeds)
    rsum: float         # mean over seeds
    seeds: int
    gallery: int
    pareto: bool        # no other point is at least as fast and as accurate, and strictly better in one

    @property
    def name(self) -> str:
        return f"{self.label}-{self.size} ({self.design})"


def _log_scale(ax: Axes, *which: str) -> None:
    """Log scale on the named axes ("x", "y") with plain numbers on the ticks (0.5, 2, 1000), not powers of ten;
    minor ticks labelled at 2 and 5 of each decade."""
    for name in which:
        getattr(ax, f"set_{name}scale")("log")
        axis = ax.xaxis if name == "x" else ax.yaxis
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


def method_styles(labels: Iterable[str]) -> dict[str, MethodStyle]:
    """A colour (seaborn "colorblind") and a marker per label. The five base methods always get the first five
    colours and markers, and are always in the result, so a method looks the same in every report whichever labels
    it holds; other labels (suite variants) take the following colours and markers in sorted order."""
    variants = sorted(set(labels) - set(BASE_METHODS))
    palette = sns.color_palette("colorblind").as_hex()
    spare = len(BASE_METHODS) + len(variants) - len(palette)
    if spare > 0:   # more labels than the palette has colours: extend it rather than reuse a colour
        palette += sns.color_palette("husl", spare).as_hex()
    markers = _BASE_MARKERS + tuple(_VARIANT_MARKERS[i % len(_VARIANT_MARKERS)] for i in range(len(variants)))
    return {label: MethodStyle(palette[i], markers[i]) for i, label in enumerate((*BASE_METHODS, *variants))}


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (latency, accuracy) pairs, whether each is on the Pareto front: no other point is at least as fast and
    at least as accurate while strictly better in one. Identical points do not dominate each other."""
    def dominated(lat: float, acc: float) -> bool:
        return any(ol <= lat and oa >= acc and (ol < lat or oa > acc) for ol, oa in points)

    return [not dominated(lat, acc) for lat, acc in points]


def latency_accuracy_points(evaluations: Sequence[EvaluationRecord], *, benchmark: str = "zeroshot_retrieval",
                            gallery: int | None = None) -> list[LatencyPoint]:
    """Each job's `benchmark` record (dual-encoder ITC scores) paired with its latency record's
    "per_query_ms/dual_encoder@N", and its re-ranking record (`benchmark` with "_rerank" before any "@dataset"
    suffix) with "per_query_ms/rerank_top{k}@N". N is `gallery`, or else the latency protocol's gallery size
    closest to the retrieval record's n_images. Latency and RSUM are averaged over seeds per (label, size,
    design); jobs without a latency record, or without the retrieval record, are left out. Sorted by latency."""
    latency = {r.job: r for r in evaluations if _is_latency(r)}
    base, at, dataset = benchmark.partition("@")
    designs = {benchmark: False, f"{base}_rerank{at}{dataset}": True}
    groups: dict[tuple[str, str, str, int], list[tuple[float, float]]] = defaultdict(list)
    for rec in evaluations:
        lat_rec = latency.get(rec.job)
        if rec.benchmark not in designs or lat_rec is None or "rsum" not in rec.metrics:
            continue
        n = gallery if gallery is not None else _closest_gallery(lat_rec, rec)
        found = _rerank_latency(lat_rec, n) if designs[rec.benchmark] else _dual_latency(lat_rec, n)
        if found is not None:
            design, ms = found
            groups[(rec.label, rec.size, design, n)].append((ms, rec.metrics["rsum"]))
    means = {key: (float(np.mean([ms for ms, _ in runs])), float(np.mean([rsum for _, rsum in runs])))
             for key, runs in groups.items()}
    front = pareto_front(list(means.values()))
    points = [LatencyPoint(label, size, design, ms, rsum, len(groups[(label, size, design, n)]), n, on_front)
              for ((label, size, design, n), (ms, rsum)), on_front in zip(means.items(), front)]
    return sorted(points, key=lambda p: (p.latency_ms, -p.rsum, p.label, p.size, p.design))


def _is_latency(rec: EvaluationRecord) -> bool:
    return rec.benchmark.partition("@")[0] == "latency"


def _gallery_sizes(lat_rec: EvaluationRecord) -> list[int]:
    sizes = lat_rec.protocol.get("gallery_sizes")
    if sizes:
        return [int(n) for n in sizes]
    return sorted({int(m["n"]) for k in lat_rec.metrics if (m := _PER_QUERY.match(k))})


def _closest_gallery(lat_rec: EvaluationRecord, rec: EvaluationRecord) -> int:
    n_images = rec.protocol.get("n_images")
    if n_images is None:
        raise ValueError(f"{rec.job}/{rec.benchmark}: its protocol has no n_images to match a gallery size to; "
                         "pass gallery=")
    sizes = _gallery_sizes(lat_rec)
    if not sizes:
        raise ValueError(f"{lat_rec.job}/{lat_rec.benchmark}: no gallery sizes in its protocol or metrics")
    return min(sizes, key=lambda n: (abs(n - int(n_images)), n))


def _dual_latency(lat_rec: EvaluationRecord, n: int) -> tuple[str, float] | None:
    ms = lat_rec.metrics.get(f"per_query_ms/dual_encoder@{n}")
    return None if ms is None else (DUAL_DESIGN, ms)


def _rerank_latency(lat_rec: EvaluationRecord, n: int) -> tuple[str, float] | None:
    for key, ms in sorted(lat_rec.metrics.items()):
        m = _RERANK.match(key)
        if m and int(m["n"]) == n:
            return f"re-rank top-{m['k']} (ITM)", ms
    return None


@contextmanager
def _theme() -> Iterator[None]:
    """seaborn's whitegrid look for what is drawn inside, restoring the global rcParams afterwards."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _style(styles: Mapping[str, MethodStyle], label: str) -> MethodStyle:
    try:
        return styles[label]
    except KeyError:
        raise KeyError(f"no style for {label!r}: build styles with method_styles() over every label") from None


def _label_order(labels: Iterable[str], styles: Mapping[str, MethodStyle]) -> list[str]:
    """Labels in the order of the styles (base methods first), so every figure lists methods alike."""
    rank = {label: i for i, label in enumerate(styles)}
    return sorted(set(labels), key=lambda label: (rank.get(label, len(rank)), label))


# The latency plot's axes in points (about: 6 in tall figure, the default width), and a 7 pt label's box.
_AXES_PT = (560.0, 330.0)
_LABEL_PT_PER_CHAR, _LABEL_HEIGHT_PT = 3.9, 9.0
_LABEL_DY = (4, -11, 15, -22, 26, -33)


def label_offsets(points: Sequence[LatencyPoint]) -> list[int]:
    """Vertical offsets (points) of each point's name so that no two names overlap where the data allow: points
    whose labels would collide (close in log latency and in RSUM, as SCALE's and COTS's dual-encoder points are)
    get their names above and below in turn. Positions are estimated from the data range and the axes' size."""
    if not points:
        return []
    xs = [math.log10(max(p.latency_ms, 1e-9)) for p in points]
    ys = [p.rsum for p in points]
    xspan, yspan = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    boxes: list[tuple[float, float, float, float]] = []
    out = []
    for p, x, y in zip(points, xs, ys):
        px = (x - min(xs)) / xspan * _AXES_PT[0] * 0.8 + 5
        py = (y - min(ys)) / yspan * _AXES_PT[1] * 0.8
        width = len(p.name) * _LABEL_PT_PER_CHAR
        for dy in _LABEL_DY:
            box = (px, py + dy, px + width, py + dy + _LABEL_HEIGHT_PT)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
                break
        else:
            dy = _LABEL_DY[0]
            box = (px, py + dy, px + width, py + dy + _LABEL_HEIGHT_PT)
        boxes.append(box)
        out.append(dy)
    return out


def latency_vs_rsum(points: Sequence[LatencyPoint], styles: Mapping[str, MethodStyle], *, title: str) -> Figure:
    """RSUM against per-query latency (log scale), one point per method × size × design: filled markers for the
    dual encoder, hollow ones for top-k re-ranking; each point named, and the Pareto front (the best accuracy
    attainable within a latency budget) drawn as a step line."""
    if not points:
        raise ValueError("no latency/accuracy points to plot (no job has both a latency and a retrieval record)")
    with _theme():
        fig = Figure(figsize=(_WIDTH_IN, 6.0), layout="constrained")
        ax = fig.subplots()
        offsets = label_offsets(points)
        for p, dy in zip(points, offsets):
            style = _style(styles, p.label)
            hollow = p.design != DUAL_DESIGN
            ax.scatter([p.latency_ms], [p.rsum], s=60, marker=style.marker, linewidths=1.5, zorder=3,
                       facecolors="none" if hollow else style.color, edgecolors=style.color)
            ax.annotate(p.name, (p.latency_ms, p.rsum), xytext=(5, dy), textcoords="offset points", fontsize=7)
        front = sorted((p.latency_ms, p.rsum) for p in points if p.pareto)
        # "post": up to the next front point's latency, the best attainable RSUM is the previous point's
        ax.step([x for x, _ in front], [y for _, y in front], where="post", color="0.35", linestyle="--",
                linewidth=1.0, zorder=2, label="Pareto front")
        _log_scale(ax, "x")
        galleries = ", ".join(f"{n:,}" for n in sorted({p.gallery for p in points}))
        ax.set_xlabel(f"per-query latency at a gallery of {galleries} items (ms, log scale)")
        ax.set_ylabel("RSUM (sum of six recalls, %)")
        ax.set_title(title)
        ax.legend(handles=_method_handles([p.label for p in points], styles) + _design_handles(points),
                  fontsize=8, loc="best")
    return fig


def _method_handles(labels: Iterable[str], styles: Mapping[str, MethodStyle]) -> list[Line2D]:
    return [Line2D([], [], linestyle="", marker=_style(styles, label).marker, color=_style(styles, label).color,
                   label=label) for label in _label_order(labels, styles)]


def _design_handles(points: Sequence[LatencyPoint]) -> list[Line2D]:
    handles = [Line2D([], [], linestyle="", marker="o", color="0.4", label=DUAL_DESIGN)]
    reranks = sorted({p.design for p in points} - {DUAL_DESIGN})
    handles += [Line2D([], [], linestyle="", marker="o", color="0.4", markerfacecolor="none", label=design)
                for design in reranks]
    return handles + [Line2D([], [], color="0.35", linestyle="--", linewidth=1.0, label="Pareto front")]


def recall_bars(records: Sequence[EvaluationRecord], styles: Mapping[str, MethodStyle], *, title: str,
                intervals: Callable[[EvaluationRecord], Mapping[str, Interval] | None] | None = None) -> Figure:
    """Grouped bars of R@1/5/10, image→text then text→image, one bar per model (label-size) for one table of
    image-text retrieval records. Several seeds of a model: their mean, with the seed standard deviation as error
    bar; a single seed: its value, with its 95 % bootstrap interval when `intervals` gives one."""
    if not records:
        raise ValueError("no retrieval records to plot")
    models: dict[tuple[str, str], list[EvaluationRecord]] = defaultdict(list)
    for rec in records:
        models[(rec.label, rec.size)].append(rec)
    order = [(label, size) for label in _label_order((lab for lab, _ in models), styles)
             for size in sorted(s for lab, s in models if lab == label)]
    x = np.arange(len(RECALL_METRICS), dtype=float)
    width = 0.8 / len(order)
    with _theme():
        fig = Figure(figsize=(_WIDTH_IN, 5.0), layout="constrained")
        ax = fig.subplots()
        for i, (label, size) in enumerate(order):
            heights, errors = _bar_values(models[(label, size)], intervals)
            nth_size = sorted(s for lab, s in models if lab == label).index(size)
            ax.bar(x + (i - (len(order) - 1) / 2) * width, heights, width, yerr=errors, label=f"{label}-{size}",
                   color=_style(styles, label).color, hatch=("", "//", "..", "xx")[nth_size % 4],
                   edgecolor="white", linewidth=0.5, capsize=2, error_kw={"elinewidth": 1.0, "ecolor": "0.2"})
        ax.set_xticks(x, [name for _, name in RECALL_METRICS])
        ax.set_ylim(0, 100)
        ax.set_ylabel("recall (%)")
        ax.set_title(title)
        ax.legend(fontsize=8, ncols=min(len(order), 4), loc="upper left")
    return fig


def _bar_values(runs: Sequence[EvaluationRecord],
                intervals: Callable[[EvaluationRecord], Mapping[str, Interval] | None] | None
                ) -> tuple[list[float], np.ndarray]:
    """Bar heights and (2, 6) error extents below/above them; NaN where there is no error bar."""
    heights, errors = [], np.full((2, len(RECALL_METRICS)), np.nan)
    ci = intervals(runs[0]) if intervals is not None and len(runs) == 1 else None
    for j, (metric, _) in enumerate(RECALL_METRICS):
        values = [r.metrics[metric] for r in runs if metric in r.metrics]
        if not values:
            heights.append(np.nan)
            continue
        summary = seed_summary(values)
        heights.append(summary.mean)
        if summary.std is not None:
            errors[:, j] = summary.std
        elif ci and metric in ci:
            # matplotlib rejects negative extents; a percentile interval can sit just off its estimate
            errors[:, j] = max(0.0, summary.mean - ci[metric].low), max(0.0, ci[metric].high - summary.mean)
    return heights, errors


def loss_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], styles: Mapping[str, MethodStyle],
                labels: Mapping[str, str], *, title: str | None = None) -> Figure:
    """Pretraining loss against step, one panel per method label (methods' losses are on different scales, so
    panels share no axis): "loss/total" of each job (seeds as different line styles in the method's colour) and
    the other "loss/*" components as thin translucent lines. Jobs that never logged "loss/total" are left out."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for job in sorted(histories):
        if any("loss/total" in line for line in histories[job]):
            by_label[labels[job]].append(job)
    if not by_label:
        raise ValueError("no training history with a 'loss/total' entry to plot")
    panels = _label_order(by_label, styles)
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    with _theme():
        fig = Figure(figsize=(_WIDTH_IN, 3.2 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, label in zip(axes, panels):
            _loss_panel(ax, label, [(job, histories[job]) for job in by_label[label]], _style(styles, label))
        for ax in axes[len(panels):]:
            fig.delaxes(ax)
        if title:
            fig.suptitle(title)
    return fig


def _loss_panel(ax: Axes, label: str, jobs: Sequence[tuple[str, Sequence[Mapping[str, float]]]],
                style: MethodStyle) -> None:
    components = sorted({k for _, lines in jobs for line in lines for k in line
                         if k.startswith("loss/") and k != "loss/total"})
    colors = dict(zip(components, sns.color_palette("Set2", len(components)).as_hex()))
    linestyles = [_SEED_LINESTYLES[i % len(_SEED_LINESTYLES)] for i in range(len(jobs))]
    # totals first (and on top), so the legend lists the jobs before the components
    for (job, lines), linestyle in zip(jobs, linestyles):
        ax.plot(*_series(lines, "loss/total"), color=style.color, linestyle=linestyle, linewidth=1.6, zorder=3,
                label=job)
    for i, ((_, lines), linestyle) in enumerate(zip(jobs, linestyles)):
        for name in components:
            ax.plot(*_series(lines, name), color=colors[name], linestyle=linestyle, linewidth=0.8, alpha=0.6,
                    zorder=2, label=name.removeprefix("loss/") if i == 0 else None)
    ax.set_title(label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=6.5, loc="upper right")


def _series(lines: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(step, value) of the history lines that logged `key`; the line index stands in for a missing step."""
    pairs = [(float(line.get("step", i)), float(line[key])) for i, line in enumerate(lines) if key in line]
    return [s for s, _ in pairs], [v for _, v in pairs]


def latency_vs_gallery(evaluations: Sequence[EvaluationRecord], styles: Mapping[str, MethodStyle], *,
                       title: str | None = None) -> Figure:
    """Per-query latency against gallery size (both log scale) from the latency records: one line per model
    (label-size, the method's colour and marker) and retrieval design: dual encoder solid, top-k re-ranking
    dashed, exhaustive cross-encoder scoring (extrapolated) dotted. Seeds are averaged."""
    series: dict[tuple[str, str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rec in evaluations:
        if not _is_latency(rec):
            continue
        for key, ms in rec.metrics.items():
            if m := _PER_QUERY.match(key):
                series[(rec.label, rec.size, m["design"])][int(m["n"])].append(ms)
    if not series:
        raise ValueError("no latency record with per_query_ms/<design>@N metrics to plot")
    rank = {label: i for i, label in enumerate(_label_order((k[0] for k in series), styles))}
    with _theme():
        fig = Figure(figsize=(_WIDTH_IN, 5.5), layout="constrained")
        ax = fig.subplots()
        for label, size, design in sorted(series, key=lambda k: (rank[k[0]], k[1], _design_rank(k[2]), k[2])):
            by_n = series[(label, size, design)]
            ns = sorted(by_n)
            style = _style(styles, label)
            ax.plot(ns, [float(np.mean(by_n[n])) for n in ns], color=style.color, marker=style.marker,
                    linestyle=_design_linestyle(design), label=f"{label}-{size}: {_design_name(design)}")
        _log_scale(ax, "x", "y")
        ax.set_xlabel("gallery size (items, log scale)")
        ax.set_ylabel("per-query latency (ms, log scale)")
        ax.set_title(title or "Per-query retrieval cost against gallery size")
        ax.legend(fontsize=7.5, loc="upper left")
    return fig


def _design_rank(design: str) -> int:
    return next((i for i, p in enumerate(("dual", "rerank", "exhaustive")) if design.startswith(p)), 3)


def _design_linestyle(design: str) -> str:
    return ("-", "--", ":", "-.")[_design_rank(design)]


def _design_name(design: str) -> str:
    if m := re.fullmatch(r"rerank_top(\d+)", design):
        return f"re-rank top-{m[1]}"
    return {"dual_encoder": "dual encoder", "exhaustive_extrapolated": "exhaustive (extrapolated)"}.get(
        design, design.replace("_", " "))


def save_figure(fig: Figure, path: Path, *, dpi: int = 110) -> Path:
    """Write the figure as a PNG, atomically: rendered in memory first, so a crash never leaves half an image."""
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())
