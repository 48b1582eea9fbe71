"""The comparison report built from a hand-made suite folder: exports, figures, HTML, protocols kept apart."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlpbench.reports.build import build_report
from vlpbench.reports.comparison import protocol_id
from vlpbench.reports.sources import from_folder
from vlpbench.reports.stats import bootstrap_retrieval
from tests.report_fixtures import N_IMAGES, make_suite, ranks_for


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    suite_dir = make_suite(tmp_path_factory.mktemp("report"))
    return suite_dir, build_report(from_folder(suite_dir), suite_dir, title="fixture", n_resamples=500)


def test_csv_has_one_row_per_evaluation_with_metrics_intervals_and_fingerprint(built: tuple[Path, object]) -> None:
    suite_dir, files = built
    rows = list(csv.DictReader(io.StringIO((suite_dir / "leaderboard.csv").read_text())))
    assert len(rows) == len(list(suite_dir.glob("jobs/*/eval/*/results.json"))) == 8
    clip0 = next(r for r in rows if r["job"] == "clip-tiny-s0" and r["benchmark"] == "zeroshot_retrieval")
    ranks = ranks_for(140, 0.55)   # clip seed 0 (see make_suite)
    assert float(clip0["i2t_R1"]) == pytest.approx(100 * np.mean(ranks["i2t"] <= 1))
    ci = bootstrap_retrieval(ranks["i2t"], ranks["t2i"], n_resamples=500)
    assert float(clip0["rsum_ci95_low"]) == pytest.approx(ci["rsum"].low)
    assert float(clip0["rsum_ci95_high"]) == pytest.approx(ci["rsum"].high)
    assert clip0["env_git_commit"] == "abc1234" and clip0["env_device_name"] == "Test CPU"
    assert clip0["scoring"] == "itc" and clip0["resolution"] == "64"
    assert json.loads(clip0["protocol_json"])["n_images"] == N_IMAGES
    latency = next(r for r in rows if r["benchmark"] == "latency" and r["job"] == "tcl-tiny-s0")
    assert float(latency["per_query_ms/rerank_top16@1000"]) == 9.0 and latency["rsum_ci95_low"] == ""


def test_protocols_are_never_merged(built: tuple[Path, object]) -> None:
    suite_dir, _ = built
    board = json.loads((suite_dir / "leaderboard.json").read_text())
    itc = {r["job"]: r["protocol_id"] for r in board["rows"] if r["benchmark"] == "zeroshot_retrieval"}
    assert itc["clip-tiny-s0"] == itc["clip-tiny-s1"] == itc["tcl-tiny-s0"] != itc["clip-r96-tiny-s0"]
    rerank = next(r for r in board["rows"] if r["benchmark"] == "zeroshot_retrieval_rerank")
    assert rerank["protocol_id"] not in itc.values()
    summaries = {(s["label"], s["benchmark"], s["protocol_id"]): s for s in board["summaries"]}
    clip = summaries[("clip", "zeroshot_retrieval", itc["clip-tiny-s0"])]
    values = [r["metrics"]["rsum"] for r in board["rows"]
              if r["label"] == "clip" and r["benchmark"] == "zeroshot_retrieval"]
    assert clip["seeds"] == [0, 1] and len(values) == 2
    assert clip["mean"]["rsum"] == pytest.approx(np.mean(values))
    assert clip["std"]["rsum"] == pytest.approx(np.std(values, ddof=1))
    assert summaries[("clip-r96", "zeroshot_retrieval", itc["clip-r96-tiny-s0"])]["seeds"] == [0]
    md = (suite_dir / "report.md").read_text()
    assert md.count("## Zero-shot image-text retrieval (ITC) — builtin/test") == 2   # one table per protocol


def test_markdown_links_every_figure_and_shows_fingerprints(built: tuple[Path, object]) -> None:
    suite_dir, files = built
    md = (suite_dir / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    names = sorted(Path(p).name for p in linked)
    assert sorted(p.name for p in files.figures) == names       # type: ignore[attr-defined]
    # recall bars for the three image-text tables, latency vs RSUM, latency vs gallery, loss curves
    assert len(names) == 6 and {"latency-vs-rsum.png", "latency-vs-gallery.png", "loss-curves.png"} <= set(names)
    for p in linked:
        with Image.open(suite_dir / p) as im:
            assert im.format == "PNG" and im.width > 300
    assert "| code (git commit, dirty) | abc1234 False |" in md
    assert "| hardware (device, name, CPUs, threads) | cpu Test CPU 2 2 |" in md
    assert "## Latency vs accuracy" in md and "## Claimed vs reproduced" in md


def test_latency_vs_accuracy_table_pairs_designs_with_their_scores(built: tuple[Path, object]) -> None:
    suite_dir, _ = built
    board = json.loads((suite_dir / "leaderboard.json").read_text())
    rsum = {(r["job"], r["benchmark"]): r["metrics"]["rsum"] for r in board["rows"] if "rsum" in r["metrics"]}
    md = (suite_dir / "report.md").read_text()
    section = md.split("## Latency vs accuracy")[1].split("\n## ")[0]
    clip_mean = (rsum[("clip-tiny-s0", "zeroshot_retrieval")] + rsum[("clip-tiny-s1", "zeroshot_retrieval")]) / 2
    assert f"| clip | tiny | dual encoder (ITC) | 1.100 | {clip_mean:.2f} | 2 |" in section
    tcl_rerank = rsum[("tcl-tiny-s0", "zeroshot_retrieval_rerank")]
    assert f"| tcl | tiny | re-rank top-16 (ITM) | 9.000 | {tcl_rerank:.2f} | 1 |" in section


def test_html_is_self_contained_and_embeds_the_same_figures(built: tuple[Path, object]) -> None:
    suite_dir, files = built
    page = (suite_dir / "report.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    figures = {p.read_bytes() for p in files.figures}             # type: ignore[attr-defined]
    assert {base64.b64decode(s.split(",", 1)[1]) for s in srcs} == figures
    assert not re.search(r'(src|href)="(https?:|//|file:)', page) and "<script" not in page
    assert "<table>" in page and "<h2>Latency vs accuracy</h2>" in page and "<title>vlpbench report — fixture" in page


def test_stale_figures_go_and_a_missing_figure_is_named(tmp_path: Path) -> None:
    suite_dir = make_suite(tmp_path)
    (suite_dir / "figures").mkdir()
    (suite_dir / "figures" / "old.png").write_bytes(b"x")
    build_report(from_folder(suite_dir), suite_dir, title="t", n_resamples=100)
    assert not (suite_dir / "figures" / "old.png").exists()
    from vlpbench.reports.html import FigureMissing, render_html
    with pytest.raises(FigureMissing, match="figures/gone.png"):
        render_html("![x](figures/gone.png)", title="t", base=suite_dir)
    assert "&lt;script&gt;" in render_html("<script>alert(1)</script>", title="t", base=suite_dir)


def test_same_report_from_mlflow_as_from_the_folder(tmp_path: Path) -> None:
    from vlpbench.reports import tracking
    from vlpbench.reports.sources import from_mlflow

    suite_dir = make_suite(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for job in sorted((suite_dir / "jobs").iterdir()):
        tracking.log_job(job, suite_dir, uri, "vlpbench-fixture", tmp_path / "artifacts")
    folder = build_report(from_folder(suite_dir), tmp_path / "a", title="fixture", n_resamples=200)
    inputs = from_mlflow(uri, tmp_path / "dl", experiment="vlpbench-fixture", suite="fixture", suite_dir=suite_dir)
    mlflow = build_report(inputs, tmp_path / "b", title="fixture", n_resamples=200)
    a, b = (json.loads(f.json.read_text()) for f in (folder, mlflow))
    assert a["rows"] == b["rows"] and a["summaries"] == b["summaries"]
    assert len(mlflow.figures) == 6
    only_tcl = from_mlflow(uri, tmp_path / "dl2", filter_string="tags.`vlpbench.method` = 'tcl'")
    assert {r.job for r in only_tcl.evaluations} == {"tcl-tiny-s0"} and len(only_tcl.evaluations) == 3
    assert [p.job for p in only_tcl.pretrain] == ["tcl-tiny-s0"] and only_tcl.history(only_tcl.pretrain[0])
    assert all(only_tcl.ranks(r) is not None for r in only_tcl.evaluations if r.benchmark != "latency")
    assert protocol_id(only_tcl.evaluations[0]) in {r["protocol_id"] for r in a["rows"]}


def test_methods_with_their_own_lineage_and_text_length_share_a_table_but_never_a_summary(tmp_path: Path) -> None:
    from vlpbench.reports import exports, markdown

    suite_dir = make_suite(tmp_path)
    inputs = from_folder(suite_dir)
    itc = [r for r in inputs.evaluations if r.benchmark == "zeroshot_retrieval" and r.variant is None]
    tcl = next(r for r in itc if r.method == "tcl")
    clip = [r for r in itc if r.method == "clip"]
    own = tcl.model_copy(update={"protocol": {**tcl.protocol, "lineage": "unimodal init -> pretrained",
                                              "text_max_length": 30}})
    # the same CLIP seed 1 after another pretraining: same table, but not averaged with seed 0
    other = clip[1].model_copy(update={"protocol": {**clip[1].protocol, "lineage": "pretrained on cc3m"}})
    md = markdown.render([], [clip[0], other, own], suite="t", source="here")
    assert md.count("## Zero-shot image-text retrieval (ITC)") == 1
    assert "| lineage | text_max_length |" in md and "| unimodal init -> pretrained | 30 |" in md
    assert "| lineage | per model (the rows' column) |" in md and "mean ± std" not in md
    board = exports.leaderboard([clip[0], other, own])
    assert len({r["protocol_id"] for r in board["rows"]}) == 1
    assert sorted((s["label"], s["seeds"], s["lineage"]) for s in board["summaries"]) == [
        ("clip", [0], "pretrained on builtin/pretrain"), ("clip", [1], "pretrained on cc3m"),
        ("tcl", [0], "unimodal init -> pretrained")]
