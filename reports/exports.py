"""Leaderboard exports: every evaluation as a row (CSV) and as a nested object with seed summaries (JSON).

Rows are never merged across protocols: each carries `protocol_id`, a short hash of everything that makes two
numbers comparable (benchmark, split fingerprint, scoring rule, k, resolution, precision...; the same key the
report groups its tables by) and the model's own fields (lineage, text length) as columns; the JSON's seed
summaries are computed within one protocol_id and one model (label, size, lineage, text length) only. Intervals are the report's 95 % bootstrap intervals where ranks were at hand.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vlpbench.reports.comparison import model_key, protocol_id
from vlpbench.reports.stats import Interval, seed_summary
from vlpbench.reports.store import EvaluationRecord

IntervalsFn = Callable[[EvaluationRecord], Mapping[str, Interval] | None]
ENVIRONMENT = ("git_commit", "git_dirty", "device", "device_name", "cpu_count", "torch_threads", "torch", "cuda",
               "python")


def _row(rec: EvaluationRecord, intervals: IntervalsFn | None) -> dict[str, Any]:
    p = rec.protocol
    return {
        "suite": rec.suite, "benchmark": rec.benchmark, "protocol_id": protocol_id(rec),
        "dataset": rec.dataset["dataset"], "split": rec.dataset["split"], "split_sha256": rec.dataset["fingerprint"],
        "method": rec.method, "variant": rec.variant, "label": rec.label, "size": rec.size, "seed": rec.seed,
        "job": rec.job, "setting": p.get("setting"), "scoring": p.get("scoring"), "rerank_k": p.get("rerank_k"),
        "resolution": p.get("resolution"), "text_max_length": p.get("text_max_length"),
        "precision": p.get("precision"), "lineage": p.get("lineage"), "created_utc": rec.created_utc,
        "metrics": dict(sorted(rec.metrics.items())),
        "intervals": {k: v.to_json() for k, v in sorted((intervals(rec) or {}).items())} if intervals else {},
        "protocol": rec.protocol,
        "environment": {k: rec.environment.get(k) for k in ENVIRONMENT},
    }


def leaderboard(evaluations: Sequence[EvaluationRecord], intervals: IntervalsFn | None = None) -> dict[str, Any]:
    """{'rows': one per evaluation, 'summaries': mean ± std over seeds per (protocol, model)}."""
    rows = [_row(r, intervals) for r in sorted(evaluations, key=lambda r: (r.benchmark, r.label, r.size, r.seed))]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row, rec in zip(rows, sorted(evaluations, key=lambda r: (r.benchmark, r.label, r.size, r.seed))):
        groups[(row["protocol_id"], *model_key(rec))].append(row)
    summaries = []
    for (pid, label, size, *_), members in sorted(groups.items()):
        keys = sorted(set.intersection(*(set(m["metrics"]) for m in members)))
        stats = {k: seed_summary([m["metrics"][k] for m in members]) for k in keys}
        summaries.append({"protocol_id": pid, "benchmark": members[0]["benchmark"], "label": label, "size": size,
                          "lineage": members[0]["lineage"], "text_max_length": members[0]["text_max_length"],
                          "seeds": sorted(m["seed"] for m in members),
                          "mean": {k: s.mean for k, s in stats.items()},
                          "std": {k: s.std for k, s in stats.items()}})
    return {"rows": rows, "summaries": summaries}


def to_json(board: Mapping[str, Any], *, source: str, generated_utc: str) -> str:
    return json.dumps({"source": source, "generated_utc": generated_utc, **board}, indent=2, sort_keys=True,
                      default=str) + "\n"


def to_csv(board: Mapping[str, Any]) -> str:
    """One row per evaluation: identity and protocol columns, every metric, interval bounds, environment."""
    rows = board["rows"]
    fixed = [k for k in (rows[0] if rows else {}) if k not in ("metrics", "intervals", "protocol", "environment")]
    metrics = sorted({k for r in rows for k in r["metrics"]})
    ci = sorted({k for r in rows for k in r["intervals"]})
    header = (fixed + metrics + [f"{k}_ci95_{end}" for k in ci for end in ("low", "high")]
              + [f"env_{k}" for k in ENVIRONMENT] + ["protocol_json"])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        writer.writerow([_cell(r[k]) for k in fixed] + [_cell(r["metrics"].get(k)) for k in metrics]
                        + [_cell(r["intervals"].get(k, {}).get(end)) for k in ci for end in ("low", "high")]
                        + [_cell(r["environment"].get(k)) for k in ENVIRONMENT]
                        + [json.dumps(r["protocol"], sort_keys=True, default=str)])
    return out.getvalue()


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v if isinstance(v, str) else json.dumps(v, default=str)
