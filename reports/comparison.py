"""Claimed vs reproduced: each number a paper claims (from the method card) beside ours, with a status.

Statuses:
- ``reproduced``: our run is comparable and the claim lies inside our 95 % interval, or within the stated
  tolerance of our number;
- ``not reproduced``: comparable, and outside both;
- ``not comparable``: we have a run of that method, benchmark and setting, but its protocol differs — the
  reason lists every field that differs (dataset/split, scoring rule, k, resolution, prompt, model size,
  pretraining data);
- ``claimed only``: no run of that method, benchmark and setting (e.g. no public weights and no real data here);
- ``not reproducible: no released weights``: the card says no public checkpoint gives the number (and why).

A record made by `vlpbench reproduce` for the claim (its ``reproduction.claim`` is the claim's id) is the one
compared, and its stored verdict — computed under the claim's protocol from its released weights — is the status.

A claim is matched to the records of the same method (or variant of it) and setting — zero-shot claims to
``zeroshot_retrieval*`` records, fine-tuned ones to ``finetuned_retrieval*`` — preferring, in order, a record on
the claimed dataset and split, then one with the claimed scoring rule, so the reason names the smallest gap.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vlpbench.reports.stats import Interval

CPU_PRESETS = frozenset({"cpu", "tiny"})   # the shipped CPU-size presets: never the papers' model
SETTING_PREFIX = {"zero-shot": "zeroshot_retrieval", "fine-tuned": "finetuned_retrieval"}
RETRIEVAL_METRICS = ("i2t_R1", "i2t_R5", "i2t_R10", "t2i_R1", "t2i_R5", "t2i_R10")
_SIZE_SUFFIX = re.compile(r"-\d+k$")   # '-1k', '-5k': the test set's size in a claim's dataset name


# Protocol fields that only describe a split (sizes, tokenizer id) and do not change what a number means.
DESCRIPTIVE = frozenset({"n_images", "n_texts", "captions_per_image", "tokenizer"})
# Fields that belong to the model, not to the evaluation: its checkpoint lineage, its paper's text length, its
# fine-tuning recipe, the feature types it has (product retrieval). Methods
# that differ in them are still compared on one protocol (one table, shown per row), but never averaged together.
MODEL_FIELDS = ("lineage", "text_max_length", "finetune_recipe", "feature_types")


def protocol_key(rec: Any) -> str:
    """What results must share to stand in one table or one leaderboard group: benchmark, split fingerprint and
    every protocol field but the descriptive and the model's own ones (JSON, sorted keys)."""
    essential = {k: v for k, v in rec.protocol.items() if k not in DESCRIPTIVE and k not in MODEL_FIELDS}
    return json.dumps({"benchmark": rec.benchmark, "dataset": rec.dataset["fingerprint"], **essential},
                      sort_keys=True, default=str)


def model_key(rec: Any) -> tuple[str, ...]:
    """What seeds must share to be summarised as one model: label, size and the model's own protocol fields."""
    return (rec.label, rec.size, *(json.dumps(rec.protocol.get(k), sort_keys=True, default=str) for k in MODEL_FIELDS))


def protocol_id(rec: Any) -> str:
    """A short, stable name of `protocol_key` (12 hex digits of its sha256)."""
    return hashlib.sha256(protocol_key(rec).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Comparison:
    method: str
    dataset: str            # the claim's
    setting: str
    model: str              # the claim's model variant
    metric: str
    claimed: float
    ours: float | None
    interval: Interval | None
    status: str
    reason: str
    source: str
    confidence: str
    record: str | None      # "<job>/<benchmark>" of the record compared with

    @property
    def difference(self) -> float | None:
        return None if self.ours is None else self.ours - self.claimed


def claim_split(dataset: str) -> str:
    """'flickr30k-karpathy-test-1k' -> 'flickr30k/karpathy-test' (our split identifiers)."""
    name, _, rest = dataset.partition("-")
    return name + "/" + _SIZE_SUFFIX.sub("", rest)


def _record_split(rec: Any) -> str:
    return f"{rec.dataset['dataset']}/{rec.dataset['split']}"


def _pretrained_on(rec: Any) -> str | None:
    for stage in rec.lineage:
        if stage.get("stage") == "pretrain":
            d = stage.get("dataset", {})
            return f"{d.get('dataset')}/{d.get('split')}"
    return None


def protocol_differences(claim: Mapping[str, Any], rec: Any) -> list[str]:
    """Every field on which the record's protocol differs from the claim's ("field: ours vs claimed")."""
    out = []
    want = claim_split(claim["dataset"])
    if _record_split(rec) != want:
        out.append(f"dataset: {_record_split(rec)} vs {want}")
    proto = claim.get("protocol", {})
    ours = rec.protocol
    if proto.get("scoring", "itc") != ours.get("scoring", "itc"):
        out.append(f"scoring: {ours.get('scoring', 'itc')} vs {proto.get('scoring', 'itc')}")
    elif proto.get("rerank_k") is not None and proto.get("rerank_k") != ours.get("rerank_k"):
        out.append(f"k: {ours.get('rerank_k')} vs {proto['rerank_k']}")
    for key in ("resolution", "prompt"):
        if key in proto and proto[key] != ours.get(key):
            out.append(f"{key}: {ours.get(key)} vs {proto[key]}")
    if rec.size in CPU_PRESETS:
        out.append(f"model: {rec.method}-{rec.size} (our CPU-size preset) vs {claim['model']}")
    released = next((s for s in rec.lineage if s.get("stage") == "released"), None)
    ck = claim.get("checkpoint")
    if released is not None:
        if not ck:
            out.append(f"weights: {released['checkpoint']} vs none released for this claim")
        elif (ck.get("sha256") or released["sha256"]) != released["sha256"] or \
                (not ck.get("sha256") and ck.get("name") != released["checkpoint"]):
            out.append(f"weights: {released['checkpoint']} (sha256 {released['sha256'][:12]}) vs {ck['name']}")
    pre = _pretrained_on(rec)
    if pre is not None and pre.startswith("builtin/"):
        out.append(f"pretraining: {pre} (the built-in world) vs {proto.get('lineage', 'the paper’s data')}")
    return out


def _candidates(claim: Mapping[str, Any], method: str, records: Sequence[Any]) -> list[Any]:
    prefix = SETTING_PREFIX.get(claim["setting"])
    if prefix is None:
        return []
    return [r for r in records if r.method == method and (r.benchmark == prefix or r.benchmark.startswith(prefix + "@")
                                                          or r.benchmark.startswith(prefix + "_rerank"))]


NO_WEIGHTS = "not reproducible: no released weights"


def _reproductions(claim: Mapping[str, Any], method: str, records: Sequence[Any]) -> list[Comparison]:
    """Rows from the newest `vlpbench reproduce` record of this claim ([] when there is none)."""
    mine = [r for r in records if r.method == method and getattr(r, "reproduction", None)
            and claim.get("id") and r.reproduction.get("claim") == claim["id"]]
    if not mine:
        return []
    rec = max(mine, key=lambda r: r.created_utc)
    rows = []
    for metric, claimed in claim["metrics"].items():
        v = rec.reproduction["metrics"].get(metric, {})
        iv = v.get("interval")
        rows.append(Comparison(
            method=method, dataset=claim["dataset"], setting=claim["setting"], model=claim["model"], metric=metric,
            claimed=float(claimed), ours=v.get("ours"), interval=None if iv is None else Interval(**iv),
            status="reproduced" if v.get("reproduced") else "not reproduced",
            reason=f"released weights, claim's protocol: {v.get('why', 'no value')}", source=claim["source"],
            confidence=claim["confidence"], record=f"{rec.job}/{rec.benchmark}"))
    return rows


def compare(claim: Mapping[str, Any], method: str, records: Sequence[Any],
            intervals: Callable[[Any], Mapping[str, Interval] | None], tolerance: float = 1.0) -> list[Comparison]:
    """One row per claimed metric. `intervals(record)` gives its bootstrap intervals (None if its ranks are
    not available); `tolerance` is in points (percent), the claim's own when it states one."""
    if claim.get("no_weights") and claim.get("checkpoint") is None:
        return [Comparison(method=method, dataset=claim["dataset"], setting=claim["setting"], model=claim["model"],
                           metric=m, claimed=float(v), ours=None, interval=None, status=NO_WEIGHTS,
                           reason=claim["no_weights"], source=claim["source"], confidence=claim["confidence"],
                           record=None) for m, v in claim["metrics"].items()]
    reproduced = _reproductions(claim, method, records)
    if reproduced:
        return reproduced
    tolerance = float(claim.get("tolerance", tolerance))
    cands = _candidates(claim, method, records)
    rec = min(cands, key=lambda r: (len(protocol_differences(claim, r)), r.benchmark, r.job)) if cands else None
    diffs = protocol_differences(claim, rec) if rec is not None else []
    ci = intervals(rec) if rec is not None and not diffs else None
    rows = []
    for metric, claimed in claim["metrics"].items():
        ours = None if rec is None else rec.metrics.get(metric)
        interval = None if ci is None else ci.get(metric)
        if rec is None:
            status, reason = "claimed only", f"no {claim['setting']} run of {method}"
        elif diffs:
            status, reason = "not comparable", "; ".join(diffs)
        elif ours is None:
            status, reason = "not comparable", f"our record has no {metric}"
        elif (interval is not None and interval.contains(claimed)) or abs(ours - claimed) <= tolerance:
            status = "reproduced"
            reason = (f"inside our {int(interval.level * 100)} % interval" if interval is not None
                      and interval.contains(claimed) else f"within ±{tolerance:g} points")
        else:
            status = "not reproduced"
            reason = (f"outside our {int(interval.level * 100)} % interval [{interval.low:.2f}, {interval.high:.2f}]"
                      if interval is not None else f"differs by more than ±{tolerance:g} points")
        rows.append(Comparison(method=method, dataset=claim["dataset"], setting=claim["setting"],
                               model=claim["model"], metric=metric, claimed=float(claimed), ours=ours,
                               interval=interval, status=status, reason=reason, source=claim["source"],
                               confidence=claim["confidence"],
                               record=None if rec is None else f"{rec.job}/{rec.benchmark}"))
    return rows


def compare_all(cards: Mapping[str, Mapping[str, Any]], records: Sequence[Any],
                intervals: Callable[[Any], Mapping[str, Interval] | None], tolerance: float = 1.0
                ) -> list[Comparison]:
    """Every image-text retrieval claim of every method card (product-retrieval claims are reported apart)."""
    out: list[Comparison] = []
    for method in sorted(cards):
        for claim in cards[method].get("claimed", []):
            if claim["benchmark"] == "image_text_retrieval":
                out += compare(claim, method, records, intervals, tolerance)
    return out
