"""The Markdown report of a suite: one table per benchmark and protocol, the protocol beside it.

Results measured under different protocols (split, scoring rule, k, resolution, lineage,
precision...) are never put in one table: each distinct protocol gets its own section. Seeds of
the same method and size are shown individually and as mean ± std.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from statistics import mean, stdev
from typing import Any

import numpy as np

from vlpbench.reports.comparison import (MODEL_FIELDS, Comparison, compare_all, model_key, protocol_differences,
                                protocol_key)
from vlpbench.reports.plots import LatencyPoint
from vlpbench.reports.sections import section_of, section_order
from vlpbench.reports.stats import Interval, paired_retrieval_test
from vlpbench.reports.store import EvaluationRecord, PretrainRecord, utc_now

FIG_LATENCY_RSUM = "latency_vs_rsum"
FIG_LATENCY_GALLERY = "latency_vs_gallery"
FIG_LOSS = "loss_curves"
IntervalsFn = Callable[[EvaluationRecord], Mapping[str, Interval] | None]
RanksFn = Callable[[EvaluationRecord], Mapping[str, np.ndarray] | None]

RETRIEVAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("i2t_R1", "I→T R@1"), ("i2t_R5", "R@5"), ("i2t_R10", "R@10"),
    ("t2i_R1", "T→I R@1"), ("t2i_R5", "R@5"), ("t2i_R10", "R@10"),
    ("rsum", "RSUM"), ("i2t_medr", "I→T MdR"), ("t2i_medr", "T→I MdR"),
)
VIDEO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("t2v_R1", "T→V R@1"), ("t2v_R5", "R@5"), ("t2v_R10", "R@10"), ("t2v_medr", "MdR"), ("t2v_meanr", "MnR"),
    ("v2t_R1", "V→T R@1"), ("v2t_R5", "R@5"), ("v2t_R10", "R@10"), ("v2t_medr", "MdR"), ("v2t_meanr", "MnR"),
    ("rsum", "RSUM"),
)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "—" if v is None else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _fingerprint_rows(records: Sequence[PretrainRecord | EvaluationRecord]) -> list[list[str]]:
    """Where a table's numbers came from: code version, hardware, software (every distinct value)."""
    def values(*keys: str) -> str:
        seen = sorted({" ".join(_fmt(r.environment.get(k)) for k in keys) for r in records})
        return "; ".join(seen)
    return [["code (git commit, dirty)", values("git_commit", "git_dirty")],
            ["hardware (device, name, CPUs, threads)", values("device", "device_name", "cpu_count", "torch_threads")],
            ["software (torch, CUDA, python)", values("torch", "cuda", "python")]]


def _latency_accuracy(points: Sequence[LatencyPoint], figures: Mapping[str, str],
                      latency: Sequence[EvaluationRecord]) -> list[str]:
    if not points and FIG_LATENCY_GALLERY not in figures:
        return []
    lines = ["## Latency vs accuracy", ""]
    if points:
        lines += [f"Per-query latency of retrieving from a gallery of {points[0].gallery:,} pre-encoded images (one "
                  "text query: its encoding, the search and, for re-ranking designs, the cross-encoder over the top "
                  "k; p50) against the zero-shot RSUM of the same design on the test split; mean over seeds. Pareto = "
                  "no other point is as fast and as accurate.", ""]
        lines += _table(["method", "size", "design", "ms per query", "RSUM", "seeds", "Pareto"],
                        [[p.label, p.size, p.design, f"{p.latency_ms:.3f}", f"{p.rsum:.2f}", str(p.seeds),
                          "yes" if p.pareto else ""] for p in points]) + [""]
    if FIG_LATENCY_RSUM in figures:
        lines += [f"![Latency vs RSUM with the Pareto front]({figures[FIG_LATENCY_RSUM]})", ""]
    if FIG_LATENCY_GALLERY in figures:
        lines += [f"![Per-query latency vs gallery size per design]({figures[FIG_LATENCY_GALLERY]})", ""]
    if latency:
        lines += ["Latency measured on:", ""] + _table(["field", "value"], _fingerprint_rows(latency)) + [""]
    return lines


def _environment(records: Sequence[PretrainRecord | EvaluationRecord]) -> list[str]:
    keys = ("git_commit", "git_dirty", "torch", "device", "device_name", "cpu_count", "torch_threads",
            "python", "transformers", "timm", "mlflow")
    seen: dict[str, set[str]] = defaultdict(set)
    for r in records:
        for k in keys:
            seen[k].add(_fmt(r.environment.get(k)))
    return _table(["fingerprint", "value"], [[k, ", ".join(sorted(seen[k]))] for k in keys if seen[k]])


def _pretraining(records: Sequence[PretrainRecord]) -> list[str]:
    rows = []
    for r in sorted(records, key=lambda r: (r.label, r.size, r.seed)):
        s = r.summary
        loss = s.get("final", {}).get("loss/total")
        rows.append([r.label, r.size, str(r.seed), f"{s['steps']} × {s['batch_size']}", f"{s['epochs']:.2f}",
                     f"{s['wall_s']:.0f}", f"{s['step_s_mean']:.3f}", _fmt(loss), s["precision"], s["device"],
                     r.dataset["fingerprint"][:12]])
    return _table(["method", "size", "seed", "steps × batch", "epochs", "wall (s)", "s/step", "final loss",
                   "precision", "device", "split sha256"], rows)


def _filters(records: Sequence[PretrainRecord]) -> list[str]:
    """Per-sample filters a method applied in pretraining (COTS's AMF), scored against the known noisy pairs."""
    rows = []
    for r in sorted(records, key=lambda r: (r.label, r.size, r.seed)):
        for name, f in sorted(r.summary.get("filters", {}).items()):
            rows.append([r.label, r.size, str(r.seed), name, str(f["steps"]), _fmt(100 * f["flagged_fraction"]),
                         _fmt(None if f.get("noise_fraction") is None else 100 * f["noise_fraction"]),
                         _fmt(None if f.get("precision") is None else 100 * f["precision"]),
                         _fmt(None if f.get("recall") is None else 100 * f["recall"])])
    if not rows:
        return []
    return _table(["method", "size", "seed", "filter", "active steps", "flagged %", "noisy pairs %",
                   "precision %", "recall %"], rows)


def _ci_cell(ci: Mapping[str, Interval] | None, key: str) -> str:
    if not ci or key not in ci:
        return "—"
    return f"[{ci[key].low:.2f}, {ci[key].high:.2f}]"


def varying_model_fields(records: Sequence[EvaluationRecord]) -> list[str]:
    """The model's own protocol fields (lineage, text length, feature types) that differ between a table's rows:
    they become columns of the table; the others stay in its protocol table."""
    return [k for k in MODEL_FIELDS if len({_fmt(r.protocol.get(k)) for r in records}) > 1]


def _results_rows(records: Sequence[EvaluationRecord],
                  columns: Sequence[tuple[str, str]] = RETRIEVAL_COLUMNS,
                  intervals: IntervalsFn | None = None, per_row: Sequence[str] = ()) -> list[list[str]]:
    rows = []
    by_model: dict[tuple[str, ...], list[EvaluationRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.label, r.size, r.seed)):
        by_model[model_key(r)].append(r)
        extra = [_ci_cell(intervals(r), "rsum"), _ci_cell(intervals(r), "i2t_R1"),
                 _ci_cell(intervals(r), "t2i_R1")] if intervals else []
        rows.append([r.label, r.size, str(r.seed)] + [_fmt(r.metrics.get(k)) for k, _ in columns] + extra
                    + [_fmt(r.protocol.get(k)) for k in per_row])
    for (method, size, *_), group in sorted(by_model.items()):
        if len(group) < 2:
            continue
        cells = []
        for k, _ in columns:
            vals = [g.metrics[k] for g in group if k in g.metrics]
            cells.append(f"{mean(vals):.2f} ± {stdev(vals):.2f}" if len(vals) > 1 else "—")
        rows.append([f"**{method}**", size, f"mean ± std ({len(group)})"] + cells + (["", "", ""] if intervals else [])
                    + [_fmt(group[0].protocol.get(k)) for k in per_row])
    return rows


def _product_columns(records: Sequence[EvaluationRecord]) -> list[str]:
    ks = records[0].protocol.get("ks", [1, 5, 10])
    return [f"mAP@{k}" for k in ks] + [f"Prec@{k}" for k in ks]


def _product_rows(records: Sequence[EvaluationRecord], per_row: Sequence[str] = ()) -> list[list[str]]:
    """One row per model and feature type (image, text, image+text; SCALE: its modalities and 'joint')."""
    cols = _product_columns(records)
    rows = []
    groups: dict[tuple[tuple[str, ...], str], list[EvaluationRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.label, r.size, r.seed)):
        for feature in r.protocol.get("feature_types", []):
            groups[(model_key(r), feature)].append(r)
            rows.append([r.label, r.size, str(r.seed), feature] + [_fmt(r.metrics.get(f"{feature}/{c}")) for c in cols]
                        + [_fmt(r.protocol.get(k)) for k in per_row])
    for ((method, size, *_), feature), group in sorted(groups.items()):
        if len(group) < 2:
            continue
        cells = []
        for c in cols:
            vals = [g.metrics[f"{feature}/{c}"] for g in group if f"{feature}/{c}" in g.metrics]
            cells.append(f"{mean(vals):.2f} ± {stdev(vals):.2f}" if len(vals) > 1 else "—")
        rows.append([f"**{method}**", size, f"mean ± std ({len(group)})", feature] + cells
                    + [_fmt(group[0].protocol.get(k)) for k in per_row])
    return rows


def _metrics_table(records: Sequence[EvaluationRecord], per_row: Sequence[str]) -> list[str]:
    """Every metric of the records as a column (benchmarks whose section has the generic layout)."""
    names = sorted({k for r in records for k in r.metrics})
    rows = [[r.label, r.size, str(r.seed)] + [_fmt(r.metrics.get(k)) for k in names]
            + [_fmt(r.protocol.get(k)) for k in per_row] for r in sorted(records, key=lambda r: (r.label, r.size, r.seed))]
    return _table(["method", "size", "seed", *names, *per_row], rows)


def _design_rank(design: str) -> int:
    """Retrieval designs cheapest first: dual encoder, top-k re-rank, exhaustive."""
    return next((i for i, p in enumerate(("dual", "rerank", "exhaustive")) if design.startswith(p)), 3)


def _latency_section(records: Sequence[EvaluationRecord]) -> list[str]:
    """Per-stage p50 (ms per call) and throughput, then the per-query cost of each retrieval design."""
    sizes = records[0].protocol.get("gallery_sizes", [])
    head = (["method", "size", "seed", "res", "image batch p50 ms", "images/s", "text batch p50 ms", "texts/s",
             "1 text p50 ms"] + [f"search@{n} p50 ms" for n in sizes]
            + ["re-rank/query p50 ms", "cross pairs/s", "params image / text / cross", "GFLOPs image / text / pair"])
    rows = []
    for r in sorted(records, key=lambda r: (r.label, r.size, r.seed)):
        m = r.metrics

        def g(key: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
            return fmt.format(m[key] * scale) if key in m else "—"

        rows.append([r.label, r.size, str(r.seed), g("model/resolution", fmt="{:.0f}"),
                     g("encode_image/p50_ms"), g("encode_image/throughput_per_s", fmt="{:.0f}"),
                     g("encode_text/p50_ms"), g("encode_text/throughput_per_s", fmt="{:.0f}"), g("encode_text_1/p50_ms")]
                    + [g(f"search@{n}/p50_ms", fmt="{:.3f}") for n in sizes]
                    + [g("rerank_query/p50_ms"), g("cross_pair/throughput_per_s", fmt="{:.0f}"),
                       " / ".join(g(f"params/{t}", 1e-6, "{:.2f}M") for t in ("image_tower", "text_tower",
                                                                              "cross_encoder")),
                       " / ".join(g(f"flops/{t}", 1e-9, "{:.3f}") for t in ("image_per_item", "text_per_item",
                                                                             "cross_per_pair"))])
    lines = _table(head, rows)
    design_rows = []
    for r in sorted(records, key=lambda r: (r.label, r.size, r.seed)):
        designs = [(k.split("/", 1)[1].rsplit("@", 1), v) for k, v in r.metrics.items() if k.startswith("per_query_ms/")]
        for (design, n), v in sorted(designs, key=lambda d: (int(d[0][1]), _design_rank(d[0][0]))):
            ratio = r.metrics.get(f"ratios/exhaustive_over_dual@{n}") if design.startswith("exhaustive") else None
            design_rows.append([r.label, r.size, str(r.seed), design, n, f"{v:.3f}", _fmt(ratio)])
    lines += ["", "Per-query cost of retrieving from a gallery of N (gallery encoded offline; p50s; "
                  "`exhaustive_extrapolated` = every gallery item through the cross-encoder, from measured pairs/s; "
                  "COTS claims 10,800x between a single-stream model and its dual encoder):", ""]
    lines += _table(["method", "size", "seed", "design", "N", "ms per query", "exhaustive / dual"], design_rows)
    return lines


# What produced a table: the presets of the shipped suites, named in the report's opening lines.
SIZE_NOTES: dict[str, str] = {
    "cpu": "the default suite's preset (`make run`: minutes on two CPU cores, docs/calibration.md)",
    "tiny": "the calibrated tiny suite's preset (`make run-full`, benchmarks/suites/tiny.yaml: about two hours on "
            "two CPU cores)",
    "base": "the papers' model sizes",
}


def _sizes_line(sizes: Sequence[str]) -> list[str]:
    """One sentence naming the model sizes the report's rows come from (every table has a size column)."""
    present = sorted(set(sizes))
    if not present:
        return []
    named = "; ".join(f"`{s}`" + (f": {SIZE_NOTES[s]}" if s in SIZE_NOTES else "") for s in present)
    return [f"Model sizes in this report — {named}. The size column of every table says which produced a row.", ""]


def render(pretrain: Sequence[PretrainRecord], evaluations: Sequence[EvaluationRecord], *, suite: str,
           source: str, intervals: IntervalsFn | None = None, tolerance: float = 1.0,
           ranks: RanksFn | None = None, figures: Mapping[str, str] | None = None,
           latency_points: Sequence[LatencyPoint] = ()) -> str:
    """The Markdown report. intervals(record): 95 % bootstrap intervals from the record's saved ranks (image-text
    retrieval records; None where the ranks are not at hand); tolerance: points within which a comparable
    reproduction counts as reproduced when the claim is outside the interval; ranks(record): its per-query
    ranks, for paired tests between the methods of one table; figures: relative paths of the figures to link
    (keys: a table's protocol_key for its recall bars, FIG_LATENCY_RSUM, FIG_LATENCY_GALLERY, FIG_LOSS);
    latency_points: the latency-vs-accuracy points (reports/plots.py) shown as a table beside their figure."""
    figures = figures or {}
    lines = [f"# vlpbench report — suite `{suite}`", "",
             f"Generated {utc_now()} from `{source}`. Recalls in percent (R@K: share of queries whose "
             "ground truth is in the top K; I→T counts a hit if any of the image's captions is there); "
             "RSUM = sum of the six recalls; MdR / MnR = median / mean rank (1-based).", ""]
    lines += _sizes_line([r.size for r in pretrain] + [r.size for r in evaluations])
    groups: dict[str, list[EvaluationRecord]] = defaultdict(list)
    for r in evaluations:
        groups[protocol_key(r)].append(r)
    for key in sorted(groups, key=lambda k: (section_order(json.loads(k)["benchmark"]), k)):
        recs = groups[key]
        first = recs[0]
        section = section_of(first.benchmark)
        lines += [f"## {section.title} — {first.dataset['dataset']}/{first.dataset['split']}", ""]
        if section.layout == "latency":
            lines += _latency_section(recs)
        elif section.layout == "metrics":
            per_row = varying_model_fields(recs)
            lines += _metrics_table(recs, per_row)
        elif section.layout == "products":
            per_row = [k for k in varying_model_fields(recs) if k != "feature_types"]  # features: a row each
            lines += _table(["method", "size", "seed", "features"] + _product_columns(recs) + per_row,
                            _product_rows(recs, per_row))
        else:
            video = section.layout == "video"
            columns = VIDEO_COLUMNS if video else RETRIEVAL_COLUMNS
            with_ci = intervals if not video else None
            ci_labels = ["RSUM 95 % CI", "I→T R@1 CI", "T→I R@1 CI"] if with_ci else []
            per_row = varying_model_fields(recs)
            lines += _table(["method", "size", "seed"] + [label for _, label in columns] + ci_labels + per_row,
                            _results_rows(recs, columns, with_ci, per_row))
            if key in figures:
                lines += ["", f"![Recall@K per model, 95 % bootstrap intervals]({figures[key]})"]
            if ranks is not None and not video:
                lines += _paired_section(recs, ranks)
        lines += ["", "Protocol and fingerprint:", ""]
        per_model = varying_model_fields(recs)
        proto_rows = [[k, "per model (the rows' column)" if k in per_model else _fmt(v)]
                      for k, v in sorted(first.protocol.items())]
        proto_rows += [["split sha256", first.dataset["fingerprint"]],
                       ["dataset sha256", first.dataset["dataset_fingerprint"]]]
        lines += _table(["field", "value"], proto_rows + _fingerprint_rows(recs)) + [""]
    if not evaluations:
        lines += ["No evaluation results were found.", ""]
    lines += _latency_accuracy(latency_points, figures, [r for r in evaluations if r.benchmark == "latency"])
    if pretrain:
        lines += ["## Pretraining", ""] + _pretraining(pretrain) + [""]
        lines += ["Fingerprint:", ""] + _table(["field", "value"], _fingerprint_rows(pretrain)) + [""]
        if FIG_LOSS in figures:
            lines += [f"![Training loss per step, one panel per method]({figures[FIG_LOSS]})", ""]
        filters = _filters(pretrain)
        if filters:
            lines += ["### Noise filters (over the steps each was active; noisy = the corpus' known mismatched "
                      "pairs)", ""] + filters + [""]
    all_records: list[PretrainRecord | EvaluationRecord] = [*pretrain, *evaluations]
    variants = _variants(all_records)
    if variants:
        lines += ["## Variants (a method under its own overrides)", ""] + variants + [""]
    if all_records:
        lines += ["## Environment", ""] + _environment(all_records) + [""]
        lines += ["## Claimed vs reproduced", "",
                  "Each paper's number (method card: source and confidence) beside ours. reproduced = the claim lies "
                  f"inside our 95 % bootstrap interval or within ±{tolerance:g} points; not comparable = our run "
                  "differs in protocol (the reason lists every field); claimed only = no run of that setting.", ""]
        lines += _claimed_vs_reproduced(pretrain, evaluations, intervals, tolerance) + [""]
        product = _product_claims(all_records)
        if product:
            lines += ["Same-category product retrieval claims (M5Product's data; docs/scale.md):", ""]
            lines += product + [""]
    return "\n".join(lines)


def _paired_section(records: Sequence[EvaluationRecord], ranks: RanksFn) -> list[str]:
    """Each model against the best of the table (by RSUM), on the same queries: which differences are real."""
    have = [(r, ranks(r)) for r in records]
    have = [(r, x) for r, x in have if x is not None]
    if len(have) < 2:
        return []
    best, best_ranks = max(have, key=lambda rx: rx[0].metrics.get("rsum", float("-inf")))
    rows = []
    for r, x in sorted(have, key=lambda rx: -rx[0].metrics.get("rsum", 0.0)):
        if r is best:
            continue
        t = paired_retrieval_test(best_ranks, x, n_resamples=1000)
        d = t["rsum"]
        assert d.interval is not None
        rows.append([f"{best.label}-{best.size}-s{best.seed}", f"{r.label}-{r.size}-s{r.seed}",
                     f"{d.difference:+.2f}", f"[{d.interval.low:+.2f}, {d.interval.high:+.2f}]", f"{d.p_value:.3g}",
                     f"{t['i2t_R1'].p_value:.3g}", f"{t['t2i_R1'].p_value:.3g}",
                     "yes" if d.significant() else "no"])
    return ["", "Paired tests against the best model of this table (same queries; RSUM: paired bootstrap, 1,000 "
                "resamples; R@1: exact McNemar):", ""] + _table(
        ["best", "vs", "RSUM difference", "95 % CI", "p (RSUM)", "p (I→T R@1)", "p (T→I R@1)", "real at 5 %"], rows)


def _claimed_vs_reproduced(pretrain: Sequence[PretrainRecord], evaluations: Sequence[EvaluationRecord],
                           intervals: IntervalsFn | None, tolerance: float) -> list[str]:
    cards = {r.method: r.card for r in [*pretrain, *evaluations]}
    rows = compare_all(cards, evaluations, intervals or (lambda r: None), tolerance)
    if not rows:
        return ["No claimed image-text retrieval numbers on the method cards."]
    by_claim: dict[tuple[str, str, str, str, str], list[Comparison]] = defaultdict(list)
    for c in rows:
        by_claim[(c.method, c.dataset, c.setting, c.model, c.source)].append(c)
    table = []
    for (method, dataset, setting, model, source), cs in by_claim.items():
        m = {c.metric: c for c in cs}
        statuses = {c.status for c in cs}
        if len(statuses) == 1:
            status = statuses.pop()
        else:
            status = "not reproduced (" + ", ".join(c.metric for c in cs if c.status == "not reproduced") + ")"
        reason = next(c.reason for c in cs if c.status != "reproduced") if any(
            c.status != "reproduced" for c in cs) else cs[0].reason

        def ours(k: str) -> str:
            c = m.get(k)
            if c is None or c.ours is None:
                return "—"
            return f"{c.ours:.2f}" + (f" {_ci_cell({k: c.interval}, k)}" if c.interval else "")
        table.append([method, dataset, setting, model,
                      f"{_fmt(m['i2t_R1'].claimed) if 'i2t_R1' in m else '—'} / "
                      f"{_fmt(m['t2i_R1'].claimed) if 't2i_R1' in m else '—'}",
                      f"{ours('i2t_R1')} / {ours('t2i_R1')}", f"**{status}**", reason,
                      cs[0].record or "—", cs[0].confidence, source])
    return _table(["method", "dataset", "setting", "model", "claimed I→T / T→I R@1", "ours", "status", "why",
                   "our record", "confidence", "source"], table)


def _variants(records: Sequence[PretrainRecord | EvaluationRecord]) -> list[str]:
    seen: dict[str, list[str]] = {}
    for r in records:
        v = r.config.get("method", {}).get("variant")
        if r.variant and v and r.variant not in seen:
            overrides = {k: v[k] for k in ("method_overrides", "recipe_overrides") if v.get(k)}
            seen[r.variant] = [r.variant, r.method, json.dumps(overrides, sort_keys=True), v.get("description", "")]
    return _table(["variant", "method", "overrides", "description"], [seen[k] for k in sorted(seen)]) if seen else []


def _product_claims(records: Sequence[PretrainRecord | EvaluationRecord]) -> list[str]:
    """The cards' product-retrieval claims (M5Product's own data), each with a status against our product records:
    claimed only (no product record of the method), not comparable (why), or to be compared by hand (a record
    on the claimed split: which feature type matches the paper's is a judgement, docs/scale.md)."""
    cards = {r.method: r.card for r in records}
    ours = [r for r in records if isinstance(r, EvaluationRecord) and r.benchmark.startswith("product_retrieval")]
    rows = []
    for method in sorted(cards):
        for c in cards[method].get("claimed", []):
            if c["benchmark"] != "product_retrieval":
                continue
            m = c["metrics"]
            mine = [r for r in ours if r.method == method]
            if not mine:
                status, why = "claimed only", "no product-retrieval run of this method"
            else:
                diffs = min((protocol_differences(c, r) for r in mine), key=len)
                status, why = (("not comparable", "; ".join(diffs)) if diffs else
                               ("compare by hand", "same split: pick the feature type matching the claim"))
            rows.append([method, c["dataset"], c["setting"], c["model"],
                         " / ".join(_fmt(m.get(f"mAP@{k}")) for k in (1, 5, 10)),
                         " / ".join(_fmt(m.get(f"Prec@{k}")) for k in (1, 5, 10)), f"**{status}**", why,
                         c["confidence"], c["source"]])
    return _table(["method", "dataset", "setting", "model", "mAP@1/5/10", "Prec@1/5/10", "status", "why",
                   "confidence", "source"], rows) if rows else []
