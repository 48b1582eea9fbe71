"""M5Product's same-category retrieval metrics, as the official evaluator computes them (pure, no model).

Source: Xiaodongsuper/SCALE_code `retrieval_unit_id_list_v2.py` (ranking) and `evaluate_unit_v2.py`
(metrics), identical in M5Product_toolkit apart from the K list; read, not copied. A query is
relevant to every item with its category label. The evaluator

1. ranks the gallery by raw dot product, keeps the top `max_topk` (every shipped script passes 10)
   and only then drops the query's own id, so a query found in its own top 10 has 9 results;
2. counts the positives G from the ground-truth label file, the query itself included;
3. cuts each query at k = min(K, |G|, |list|) — the **cut-off rule** — and computes
   Prec@K = hits in the first k / k (not / K) and
   AP@K = mean of the precision at each hit in the first k, divided by the hits found (0 if none);
4. averages over queries, in percent (SCALE_code; the toolkit reports fractions).

Consequences a reader of the paper's tables should know: mAP@1 = Prec@1 always; "@10" uses at
most 9 results; K larger than `max_topk` is capped by the list. Every rule is a protocol field, so
the textbook variant (no cap, P@K over K) is one option away.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pydantic import Field

from vlpbench.methods.config import StrictModel

TOOLKIT_KS: tuple[int, ...] = (1, 5, 10, 50, 100)
SCALE_CODE_KS: tuple[int, ...] = (1, 5, 10)


class ProductRetrievalProtocol(StrictModel):
    ks: tuple[int, ...] = Field(TOOLKIT_KS, description="K values (toolkit: 1, 5, 10, 50, 100; SCALE_code: 1, 5, 10).")
    max_topk: int | None = Field(10, gt=0, description="Results kept per query before the query's own id is dropped "
                                                       "(the shipped scripts: 10); None = the whole gallery.")
    exclude_query: bool = Field(True, description="Drop the query's own id from its results (leave-one-out).")
    positives_include_query: bool = Field(True, description="|G| counts the query itself (the evaluator's GT file).")
    cutoff: str = Field("toolkit", pattern="^(toolkit|textbook)$",
                        description="toolkit: k = min(K, |G|, |list|), P@K = hits/k; textbook: k = K, P@K = hits/K, "
                                    "AP over min(K, |G|) relevant items.")


def query_metrics(relevant: Sequence[bool], n_positives: int, k: int, cutoff: str = "toolkit") -> tuple[float, float]:
    """(AP@K, Prec@K) of one query as fractions: `relevant` is its ranked list's relevance, n_positives = |G|."""
    rel = [bool(r) for r in relevant]
    if cutoff == "toolkit":
        k_eff = min(k, n_positives, len(rel))
        if k_eff <= 0:
            return 0.0, 0.0
        hits, ap = 0, 0.0
        for i in range(k_eff):
            if rel[i]:
                hits += 1
                ap += hits / (i + 1)
        return (ap / hits if hits else 0.0), hits / k_eff
    if cutoff == "textbook":
        top = rel[:k]
        hits, ap = 0, 0.0
        for i, r in enumerate(top):
            if r:
                hits += 1
                ap += hits / (i + 1)
        denom = min(k, n_positives)
        return (ap / denom if denom else 0.0), hits / k
    raise ValueError(f"unknown cutoff rule {cutoff!r}: toolkit or textbook")


def ranked_lists(scores: torch.Tensor, query_gallery_index: Sequence[int] | np.ndarray | None,
                 protocol: ProductRetrievalProtocol) -> list[np.ndarray]:
    """Per query, gallery indices in the evaluator's order: top `max_topk` by score (ties: lower index
    first, as heapq.nlargest), then the query's own gallery index removed. query_gallery_index[q] is the
    query's position in the gallery, or -1 when it is not there."""
    n_query, n_gallery = scores.shape
    keep = n_gallery if protocol.max_topk is None else min(protocol.max_topk, n_gallery)
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices[:, :keep].cpu().numpy()
    own = np.full(n_query, -1) if query_gallery_index is None else np.asarray(query_gallery_index)
    out = []
    for q in range(n_query):
        row = order[q]
        if protocol.exclude_query and own[q] >= 0:
            row = row[row != own[q]]
        out.append(row)
    return out


def product_retrieval_metrics(lists: Sequence[np.ndarray], query_labels: Sequence[str], gallery_labels: Sequence[str],
                              positives_per_label: dict[str, int], protocol: ProductRetrievalProtocol
                              ) -> dict[str, float]:
    """{'mAP@K', 'Prec@K'} in percent over every query. positives_per_label: |G| per label in the ground
    truth (with the query counted when the protocol says so)."""
    g = np.asarray(gallery_labels)
    out: dict[str, float] = {}
    for k in protocol.ks:
        aps, precs = [], []
        for row, label in zip(lists, query_labels):
            ap, p = query_metrics(g[row] == label, positives_per_label[label], k, protocol.cutoff)
            aps.append(ap)
            precs.append(p)
        out[f"mAP@{k}"] = 100.0 * float(np.mean(aps)) if aps else 0.0
        out[f"Prec@{k}"] = 100.0 * float(np.mean(precs)) if precs else 0.0
    return out


def leave_one_out(scores: torch.Tensor, labels: Sequence[str], protocol: ProductRetrievalProtocol
                  ) -> dict[str, float]:
    """The SCALE scripts' setting: query set = gallery set, ground truth = the same set's labels."""
    if scores.shape[0] != scores.shape[1] or scores.shape[0] != len(labels):
        raise ValueError(f"leave-one-out needs a square (N, N) score matrix over the N labelled items, got "
                         f"{tuple(scores.shape)} for {len(labels)} labels")
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    if not protocol.positives_include_query:
        counts = {k: v - 1 for k, v in counts.items()}
    lists = ranked_lists(scores, np.arange(len(labels)), protocol)
    return product_retrieval_metrics(lists, labels, labels, counts, protocol)
