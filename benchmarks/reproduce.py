"""`vlpbench reproduce`: a card's claim, evaluated from its released weights under the claim's own protocol.

Each claim on a method card (methods/card.py ClaimedResult) names its dataset and split, its checkpoint (file,
where it is published, sha256 when known), its full protocol and a tolerance fixed before anything runs. This
module lists them, turns one into an `evaluate_weights` call, and gives the verdict:

- ``reproduced``: every claimed metric lies inside our 95 % bootstrap interval (queries resampled, 2,000
  resamples) or within the claim's tolerance of our number;
- ``not reproduced``: at least one does not (the verdict names them);
- ``not reproducible: no released weights``: the card says why no public checkpoint can give the number.

The verdict is stored in the record (`EvaluationRecord.reproduction`) before it is logged, and reaches MLflow
(tags ``vlpbench.claim`` / ``vlpbench.reproduction``) and the report's "Claimed vs reproduced" section.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vlpbench.benchmarks.data import DatasetError
from vlpbench.benchmarks.evaluate import EvalResult, evaluate_weights
from vlpbench.methods import ConfigError, get_spec, list_methods
from vlpbench.methods.card import ClaimedResult
from vlpbench.methods.checkpoints.importer import import_checkpoint, sha256_path
from vlpbench.methods.towers import WeightsError
from vlpbench.reports.stats import bootstrap_retrieval
from vlpbench.reports.store import RESULTS_FILE, write_record

REPRODUCED, NOT_REPRODUCED, NO_WEIGHTS = "reproduced", "not reproduced", "not reproducible: no released weights"
PROTOCOL_KEYS = ("resolution", "text_max_length", "prompt", "scoring", "rerank_k", "tie_policy")
# A claim's dataset name -> (vlpbench eval --dataset, split)
EVAL_TARGETS = {"flickr30k-karpathy-test-1k": ("flickr30k", "test"), "coco-karpathy-test-5k": ("coco", "test")}


def all_claims() -> list[tuple[str, ClaimedResult]]:
    """(method, claim) for every claim of every registered card, in card order."""
    return [(m, c) for m in list_methods() for c in get_spec(m).card.claimed]


def get_claim(claim_id: str) -> tuple[str, ClaimedResult]:
    found = [(m, c) for m, c in all_claims() if c.id == claim_id]
    if not found:
        ids = ", ".join(c.id for _, c in all_claims() if c.id)
        raise ConfigError(f"no claim {claim_id!r}; `vlpbench reproduce --list` lists them ({ids})")
    return found[0]


def eval_target(claim: ClaimedResult) -> tuple[str, str] | None:
    return EVAL_TARGETS.get(claim.dataset)


def needs(claim: ClaimedResult) -> str:
    """One line: what a user must have to reproduce the claim."""
    if claim.checkpoint is None:
        return f"{NO_WEIGHTS} ({claim.no_weights})"
    target = eval_target(claim)
    ck = claim.checkpoint
    data = f"{target[0]} ({target[1]} split) under --root" if target else f"{claim.dataset}: no loader in vlpbench"
    sha = f", sha256 {ck.sha256[:12]}" if ck.sha256 else ", sha256 not published"
    return f"weights {ck.name} ({ck.url}{sha}); data {data}"


def list_lines() -> list[str]:
    """`vlpbench reproduce --list`: every claim of every card, with its numbers' source and what it needs."""
    lines = []
    for method, c in all_claims():
        r1 = f"I→T R@1 {c.metrics.get('i2t_R1', float('nan')):g} / T→I R@1 {c.metrics.get('t2i_R1', float('nan')):g}" \
            if c.benchmark == "image_text_retrieval" else \
            "mAP@1 " + f"{c.metrics.get('mAP@1', float('nan')):g}"
        lines.append(f"{c.id or '(no id)'}\n    {method}: {c.model}, {c.dataset}, {c.setting}: {r1}  [{c.confidence.value}: "
                     f"{c.source}]\n    needs: {needs(c)}")
    return lines


def claim_protocol(claim: ClaimedResult) -> dict[str, Any]:
    """The EvalProtocol a claim asks for (setting plus the protocol fields it states)."""
    proto: dict[str, Any] = {"setting": claim.setting}
    proto.update({k: claim.protocol[k] for k in PROTOCOL_KEYS if k in claim.protocol})
    if "check_counts" in claim.protocol:
        proto["check_counts"] = claim.protocol["check_counts"]
    return proto


def verdict(claim: ClaimedResult, metrics: Mapping[str, float], ranks: Mapping[str, np.ndarray],
            n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The reproduction verdict of our metrics (and per-query ranks) against a claim."""
    ci = bootstrap_retrieval(ranks["i2t"], ranks["t2i"], n_resamples=n_resamples, seed=seed)
    rows, missed = {}, []
    for metric, claimed in claim.metrics.items():
        ours = metrics.get(metric)
        interval = ci.get(metric)
        inside = interval is not None and interval.contains(float(claimed))
        within = ours is not None and abs(float(ours) - float(claimed)) <= claim.tolerance
        ok = inside or within
        if not ok:
            missed.append(metric)
        rows[metric] = {"claimed": float(claimed), "ours": None if ours is None else float(ours),
                        "difference": None if ours is None else float(ours) - float(claimed),
                        "interval": None if interval is None else interval.to_json(),
                        "reproduced": ok, "why": ("inside our 95 % interval" if inside else
                                                  f"within ±{claim.tolerance:g} points" if within else
                                                  f"outside our 95 % interval and ±{claim.tolerance:g} points")}
    status = REPRODUCED if not missed else NOT_REPRODUCED
    return {"claim": claim.id, "status": status, "not_reproduced": missed, "tolerance": claim.tolerance,
            "source": claim.source, "confidence": claim.confidence.value, "metrics": rows,
            "bootstrap": {"n_resamples": n_resamples, "level": 0.95, "seed": seed}}


def check_weights(claim: ClaimedResult, weights: Path) -> str:
    """The weights' sha256; an error when the claim publishes another one."""
    digest = sha256_path(weights)
    ck = claim.checkpoint
    if ck is not None and ck.sha256 and ck.sha256 != digest:
        raise WeightsError(f"{weights} (sha256 {digest[:16]}…) is not {ck.name} (sha256 {ck.sha256[:16]}…), the "
                           f"checkpoint claim {claim.id} was measured with; get it from {ck.url}, or evaluate these "
                           "weights with `vlpbench eval`")
    return digest


def reproduce(claim: ClaimedResult, weights: Path, root: Path | None, *, fmt: str | None = None,
              arch: str | None = None, tokenizer: Path | None = None, device: str = "auto",
              output: Path = Path("outputs"), name: str = "reproduce", n_resamples: int = 2000,
              protocol_overrides: dict[str, Any] | None = None, method: str | None = None) -> EvalResult:
    """Evaluate `weights` under the claim's protocol and store the verdict in the record (written atomically)."""
    if claim.checkpoint is None:
        raise ConfigError(f"claim {claim.id} is {NO_WEIGHTS}: {claim.no_weights}")
    target = eval_target(claim)
    if target is None:
        raise DatasetError(f"claim {claim.id} is measured on {claim.dataset}, which vlpbench has no loader for")
    digest = check_weights(claim, weights)
    ck = claim.checkpoint
    imported = import_checkpoint(weights, fmt or ck.format, arch or ck.arch, tokenizer)
    if method is not None and imported.method != method:
        raise WeightsError(f"{weights} holds a {imported.method} model; claim {claim.id} is about {method}")
    protocol = {**claim_protocol(claim), **(protocol_overrides or {})}
    result = evaluate_weights(weights, dataset=target[0], root=root, split=target[1], protocol=protocol,
                              device=device, output=output, name=name, imported=imported, arch=arch,
                              extra_protocol={"claim": claim.id, "weights_sha256": digest})
    ranks = {"i2t": result.outcome.i2t_ranks, "t2i": result.outcome.t2i_ranks}
    record = result.record.model_copy(update={"reproduction": verdict(claim, result.record.metrics, ranks,
                                                                      n_resamples)})
    write_record(result.record_path.parent / RESULTS_FILE, record)
    return EvalResult(result.record_path, record, result.outcome)
