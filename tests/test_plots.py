"""Report figures: styles, the latency/accuracy pairing and Pareto front, and what each figure draws."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from PIL import Image

from vlpbench.reports.plots import (
    LatencyPoint, MethodStyle, latency_accuracy_points, latency_vs_gallery, latency_vs_rsum, loss_curves,
    method_styles, pareto_front, recall_bars, save_figure,
)
from vlpbench.reports.stats import Interval
from vlpbench.reports.store import EvaluationRecord

GALLERIES = [1000, 5000, 25000]


def _record(job: str, benchmark: str, metrics: dict[str, float], variant: str | None = None,
            **protocol: Any) -> EvaluationRecord:
    method, size, seed = job.rsplit("-", 2)
    return EvaluationRecord(
        suite="s", job=job, method=method, size=size, seed=int(seed.removeprefix("s")), variant=variant, config={},
        environment={}, benchmark=benchmark, dataset={"dataset": "builtin", "split": "test", "fingerprint": "f",
                                                      "dataset_fingerprint": "d"},
        protocol=protocol, metrics=metrics, lineage=[], card={})


def _retrieval(job: str, rsum: float, benchmark: str = "zeroshot_retrieval", n_images: int = 4000,
               **metrics: float) -> EvaluationRecord:
    rerank = benchmark.endswith("_rerank")
    return _record(job, benchmark, {"rsum": rsum, **metrics}, scoring="itm" if rerank else "itc",
                   rerank_k=16 if rerank else None, n_images=n_images, n_texts=5 * n_images)


def _latency(job: str, **per_query: float) -> EvaluationRecord:
    metrics = {f"per_query_ms/{k.replace('_at_', '@')}": v for k, v in per_query.items()}
    return _record(job, "latency", {**metrics, "search@1000/p50_ms": 0.01}, gallery_sizes=GALLERIES, rerank_k=16)


def _suite() -> list[EvaluationRecord]:
    """CLIP (two seeds), TCL (ITC and re-ranking), COTS (dominated), SCALE without latency, ERNIE without retrieval."""
    return [
        _retrieval("clip-tiny-s0", 100.0), _retrieval("clip-tiny-s1", 110.0),
        _latency("clip-tiny-s0", dual_encoder_at_1000=0.1, dual_encoder_at_5000=0.2, dual_encoder_at_25000=0.9),
        _latency("clip-tiny-s1", dual_encoder_at_1000=0.3, dual_encoder_at_5000=0.4, dual_encoder_at_25000=1.1),
        _retrieval("clip-tiny-s0", 300.0, benchmark="finetuned_retrieval"),
        _retrieval("tcl-tiny-s0", 120.0), _retrieval("tcl-tiny-s0", 150.0, benchmark="zeroshot_retrieval_rerank"),
        _latency("tcl-tiny-s0", dual_encoder_at_1000=0.25, dual_encoder_at_5000=0.5, dual_encoder_at_25000=2.0,
                 rerank_top16_at_1000=18.0, rerank_top16_at_5000=20.0, rerank_top16_at_25000=24.0,
                 exhaustive_extrapolated_at_1000=900.0, exhaustive_extrapolated_at_5000=4500.0,
                 exhaustive_extrapolated_at_25000=22500.0),
        _retrieval("cots-tiny-s0", 110.0),
        _latency("cots-tiny-s0", dual_encoder_at_1000=0.3, dual_encoder_at_5000=0.6, dual_encoder_at_25000=2.5),
        _retrieval("scale-tiny-s0", 130.0),
        _latency("ernie_vil2-tiny-s0", dual_encoder_at_1000=0.2, dual_encoder_at_5000=0.3,
                 dual_encoder_at_25000=1.0),
    ]


STYLES = method_styles(["clip", "tcl", "cots", "scale", "ernie_vil2"])


def test_base_methods_keep_their_styles_and_variants_get_their_own() -> None:
    base = method_styles(["clip"])
    with_variants = method_styles(["scale-2mod", "clip", "ernie_vil2-no-tags", "tcl"])
    assert base["clip"] == MethodStyle("#0173b2", "o") and base["scale"] == MethodStyle("#cc78bc", "v")
    assert [base[m].marker for m in ("clip", "tcl", "cots", "ernie_vil2", "scale")] == ["o", "s", "D", "^", "v"]
    assert {m: with_variants[m] for m in base} == base
    # variants follow in sorted order, after the five base colours and markers
    assert with_variants["ernie_vil2-no-tags"] == MethodStyle("#ca9161", "P")
    assert with_variants["scale-2mod"] == MethodStyle("#fbafe4", "X")
    assert method_styles(["ernie_vil2-no-tags", "scale-2mod"]) == with_variants   # order of the input is irrelevant
    many = method_styles([f"clip-v{i}" for i in range(9)])
    assert len({s.color for s in many.values()}) == len(many) == 14
    assert len({s.marker for s in many.values()}) == 14


def test_pareto_front_with_ties_and_dominated_points() -> None:
    points = [(1.0, 10.0), (2.0, 20.0), (2.0, 20.0), (3.0, 15.0), (1.0, 5.0), (4.0, 30.0), (2.0, 10.0)]
    # identical points do not dominate each other; equal latency with lower accuracy is dominated, and so is
    # equal accuracy at a higher latency
    assert pareto_front(points) == [True, True, True, False, False, True, False]
    assert pareto_front([]) == []
    assert pareto_front([(5.0, 1.0)]) == [True]


def test_latency_accuracy_points_pair_each_job_with_its_own_latency() -> None:
    points = latency_accuracy_points(_suite())
    assert [(p.label, p.design) for p in points] == [
        ("clip", "dual encoder (ITC)"), ("tcl", "dual encoder (ITC)"), ("cots", "dual encoder (ITC)"),
        ("tcl", "re-rank top-16 (ITM)")]
    clip, tcl, cots, rerank = points
    # n_images=4000: the closest gallery is 5000
    assert {p.gallery for p in points} == {5000}
    assert clip.latency_ms == pytest.approx(0.3) and clip.rsum == pytest.approx(105.0) and clip.seeds == 2
    assert (tcl.latency_ms, tcl.rsum, tcl.seeds) == (0.5, 120.0, 1)
    assert (rerank.latency_ms, rerank.rsum, rerank.size) == (20.0, 150.0, "tiny")
    # COTS (0.6 ms, 110) is slower and less accurate than TCL's dual encoder (0.5 ms, 120)
    assert [p.pareto for p in points] == [True, True, False, True]
    assert rerank.name == "tcl-tiny (re-rank top-16 (ITM))"


def test_latency_accuracy_points_gallery_choice() -> None:
    at_1000 = {(p.label, p.design): p for p in latency_accuracy_points(_suite(), gallery=1000)}
    assert at_1000[("clip", "dual encoder (ITC)")].latency_ms == pytest.approx(0.2)
    assert at_1000[("tcl", "re-rank top-16 (ITM)")].latency_ms == 18.0
    assert {p.gallery for p in at_1000.values()} == {1000}
    small = [_retrieval("clip-tiny-s0", 100.0, n_images=2000), _latency("clip-tiny-s0", dual_encoder_at_1000=0.1,
                                                                         dual_encoder_at_5000=0.2)]
    assert latency_accuracy_points(small)[0].gallery == 1000      # |2000 - 1000| < |2000 - 5000|
    # a real dataset's benchmark: the re-ranking record is "<base>_rerank@<dataset>"
    real = [_retrieval("tcl-tiny-s0", 120.0, benchmark="zeroshot_retrieval@flickr30k", n_images=1000),
            _retrieval("tcl-tiny-s0", 150.0, benchmark="zeroshot_retrieval_rerank@flickr30k", n_images=1000),
            _latency("tcl-tiny-s0", dual_encoder_at_1000=0.25, rerank_top16_at_1000=18.0)]
    got = latency_accuracy_points(real, benchmark="zeroshot_retrieval@flickr30k")
    assert [(p.latency_ms, p.rsum) for p in got] == [(0.25, 120.0), (18.0, 150.0)]
    assert latency_accuracy_points(_suite(), benchmark="video_retrieval") == []


def _scatter_offsets(ax: Any) -> list[tuple[float, float]]:
    return [tuple(c.get_offsets()[0]) for c in ax.collections if isinstance(c, PathCollection)]


def test_latency_vs_rsum_draws_each_point_and_the_front() -> None:
    points = latency_accuracy_points(_suite())
    grid = matplotlib.rcParams["axes.grid"]
    fig = latency_vs_rsum(points, STYLES, title="Zero-shot retrieval: cost and accuracy")
    assert matplotlib.rcParams["axes.grid"] == grid          # the theme did not leak into global state
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert ax.get_title() == "Zero-shot retrieval: cost and accuracy"
    assert "5,000" in ax.get_xlabel() and "ms" in ax.get_xlabel() and "RSUM" in ax.get_ylabel()
    np.testing.assert_allclose(_scatter_offsets(ax), [(0.3, 105.0), (0.5, 120.0), (0.6, 110.0), (20.0, 150.0)])
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert to_hex(scatters[0].get_facecolor()[0]) == STYLES["clip"].color
    assert len(scatters[3].get_facecolor()) == 0                                      # re-ranking: hollow
    assert to_hex(scatters[3].get_edgecolor()[0]) == STYLES["tcl"].color
    front = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    assert list(front.get_xdata()) == pytest.approx([0.3, 0.5, 20.0])
    assert list(front.get_ydata()) == pytest.approx([105.0, 120.0, 150.0])
    assert {t.get_text() for t in ax.texts} == {p.name for p in points}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["clip", "tcl", "cots"] and "re-rank top-16 (ITM)" in legend
    with pytest.raises(ValueError, match="no latency/accuracy points"):
        latency_vs_rsum([], STYLES, title="t")


def _label_overlaps(fig: Any) -> list[tuple[str, str]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    texts = fig.axes[0].texts
    boxes = [t.get_window_extent(canvas.get_renderer()) for t in texts]
    return [(texts[i].get_text(), texts[j].get_text()) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if boxes[i].overlaps(boxes[j])]


def test_point_names_do_not_overlap_for_near_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default suite's points (SCALE's and COTS's dual encoders 0.15 ms and 0.8 RSUM apart, ERNIE-ViL 2.0
    beside them): drawn names do not overlap; with one fixed offset they would."""
    import vlpbench.reports.plots as plots

    dual, rerank = "dual encoder (ITC)", "re-rank top-16 (ITM)"
    data = [("clip", dual, 2.52, 240.16), ("cots", dual, 4.17, 179.98), ("ernie_vil2", dual, 3.24, 180.66),
            ("scale", dual, 4.02, 179.22), ("tcl", dual, 2.35, 73.37), ("tcl", rerank, 14.66, 76.73)]
    points = [LatencyPoint(label, "tiny", design, ms, rsum, 1, 1000, False) for label, design, ms, rsum in data]
    styles = method_styles([p.label for p in points])
    assert _label_overlaps(latency_vs_rsum(points, styles, title="t")) == []
    monkeypatch.setattr(plots, "label_offsets", lambda pts: [4] * len(pts))
    assert ("cots-tiny (dual encoder (ITC))", "scale-tiny (dual encoder (ITC))") in \
        _label_overlaps(latency_vs_rsum(points, styles, title="t"))


def _bars(ax: Any) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def test_recall_bars_heights_seed_spread_and_intervals() -> None:
    recalls = dict(i2t_R1=40.0, i2t_R5=70.0, i2t_R10=80.0, t2i_R1=30.0, t2i_R5=60.0, t2i_R10=75.0)
    records = [_retrieval("clip-tiny-s0", 355.0, **recalls),
               _retrieval("clip-tiny-s1", 365.0, **{k: v + 2.0 for k, v in recalls.items()}),
               _retrieval("tcl-tiny-s0", 400.0, **{k: v + 10.0 for k, v in recalls.items()})]

    def intervals(rec: EvaluationRecord) -> dict[str, Interval] | None:
        return {"i2t_R1": Interval(50.0, 46.0, 53.0), "t2i_R10": Interval(85.0, 82.5, 88.0)}

    fig = recall_bars(records, STYLES, title="Zero-shot retrieval", intervals=intervals)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["I→T R@1", "I→T R@5", "I→T R@10", "T→I R@1",
                                                            "T→I R@5", "T→I R@10"]
    assert ax.get_ylim() == (0.0, 100.0) and ax.get_title() == "Zero-shot retrieval"
    clip, tcl = _bars(ax)
    assert [b.get_height() for b in clip] == pytest.approx([41.0, 71.0, 81.0, 31.0, 61.0, 76.0])
    assert [b.get_height() for b in tcl] == pytest.approx([50.0, 80.0, 90.0, 40.0, 70.0, 85.0])
    assert to_hex(clip[0].get_facecolor()) == STYLES["clip"].color
    assert to_hex(tcl[0].get_facecolor()) == STYLES["tcl"].color
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clip-tiny", "tcl-tiny"]
    # two seeds: mean ± sample std (of 40 and 42: sqrt(2))
    segments = clip.errorbar.lines[2][0].get_segments()
    assert [seg[:, 1].tolist() for seg in segments][0] == pytest.approx([41.0 - np.sqrt(2), 41.0 + np.sqrt(2)])
    # one seed: the interval's bounds, and no bar where there is no interval
    segments = tcl.errorbar.lines[2][0].get_segments()
    extents = [seg[:, 1].tolist() for seg in segments if len(seg)]
    assert extents == [[46.0, 53.0], [82.5, 88.0]]
    assert clip[0].get_x() < tcl[0].get_x()


def _history(steps: int, total: float, **components: float) -> list[dict[str, float]]:
    return [{"step": 5 * (i + 1), "epoch": 0, "lr": 1e-3, "loss/total": total / (i + 1),
             **{f"loss/{k}": v / (i + 1) for k, v in components.items()}} for i in range(steps)]


def test_loss_curves_one_panel_per_method() -> None:
    histories = {"clip-tiny-s0": _history(4, 6.0, itc=6.0), "clip-tiny-s1": _history(3, 5.0, itc=5.0),
                 "tcl-tiny-s0": _history(5, 9.0, itc=4.0, itm=0.7, mlm=4.3),
                 "cots-tiny-s0": [{"step": 5, "samples_per_s": 100.0}]}
    labels = {job: job.split("-")[0] for job in histories}
    fig = loss_curves(histories, STYLES, labels)
    assert [ax.get_title() for ax in fig.axes] == ["clip", "tcl"]          # COTS logged no loss/total
    clip, tcl = fig.axes
    assert len(clip.get_lines()) == 4 and len(tcl.get_lines()) == 4
    totals = [line for line in clip.get_lines() if line.get_label().startswith("clip-tiny")]
    assert [line.get_label() for line in totals] == ["clip-tiny-s0", "clip-tiny-s1"]
    assert {to_hex(line.get_color()) for line in totals} == {STYLES["clip"].color}
    assert [line.get_linestyle() for line in totals] == ["-", "--"]
    assert list(totals[0].get_xdata()) == [5.0, 10.0, 15.0, 20.0]
    assert list(totals[1].get_ydata()) == pytest.approx([5.0, 2.5, 5.0 / 3])
    components = [line for line in tcl.get_lines() if line.get_linewidth() < 1.0]
    assert len(components) == 3 and all(line.get_alpha() == 0.6 for line in components)
    assert [t.get_text() for t in tcl.get_legend().get_texts()] == ["tcl-tiny-s0", "itc", "itm", "mlm"]
    assert [t.get_text() for t in clip.get_legend().get_texts()] == ["clip-tiny-s0", "clip-tiny-s1", "itc"]
    assert not clip.get_shared_y_axes().joined(clip, tcl)


def test_loss_curves_without_losses_is_an_error() -> None:
    with pytest.raises(ValueError, match="loss/total"):
        loss_curves({}, STYLES, {})
    with pytest.raises(ValueError, match="loss/total"):
        loss_curves({"clip-tiny-s0": [{"step": 1, "lr": 0.1}]}, STYLES, {"clip-tiny-s0": "clip"})


def test_latency_vs_gallery_lines_per_design() -> None:
    fig = latency_vs_gallery(_suite(), STYLES)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    # methods in the styles' order, each model's designs cheapest first
    assert list(lines) == ["clip-tiny: dual encoder", "tcl-tiny: dual encoder", "tcl-tiny: re-rank top-16",
                           "tcl-tiny: exhaustive (extrapolated)", "cots-tiny: dual encoder",
                           "ernie_vil2-tiny: dual encoder"]
    clip = lines["clip-tiny: dual encoder"]
    assert list(clip.get_xdata()) == GALLERIES
    assert list(clip.get_ydata()) == pytest.approx([0.2, 0.3, 1.0])          # mean of the two seeds
    assert to_hex(clip.get_color()) == STYLES["clip"].color and clip.get_marker() == "o"
    assert [lines[f"tcl-tiny: {d}"].get_linestyle() for d in
            ("dual encoder", "re-rank top-16", "exhaustive (extrapolated)")] == ["-", "--", ":"]
    assert list(lines["tcl-tiny: exhaustive (extrapolated)"].get_ydata()) == [900.0, 4500.0, 22500.0]
    with pytest.raises(ValueError, match="no latency record"):
        latency_vs_gallery([_retrieval("clip-tiny-s0", 100.0)], STYLES)


def test_save_figure_writes_a_png_atomically(tmp_path: Path) -> None:
    fig = latency_vs_rsum(latency_accuracy_points(_suite()), STYLES, title="t")
    path = save_figure(fig, tmp_path / "figures" / "latency.png")
    assert path == tmp_path / "figures" / "latency.png"
    assert [p.name for p in path.parent.iterdir()] == ["latency.png"]          # no temporary file left behind
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 700 <= width <= 1300 and 400 <= height <= 900
