"""Retrieval metrics: a pure module from scores to ranks to recalls (no model, no I/O).

Protocol (Karpathy / ALBEF `itm_eval`, CLIP_benchmark `recall_at_k`, anchors.md §2):
- image→text: an image query is a hit at K if *any* of its ground-truth captions is in its top
  K; its rank is the position of its best-ranked ground-truth caption. The number of captions
  per image is whatever the split holds (never assumed to be 5).
- text→image: each caption has exactly one ground-truth image.
- Ranks are 1-based; R@K = 100 · fraction of queries with rank ≤ K (percent units).

Tie policy (a score equal to the best positive's score):
- "pessimistic" (default): every tied negative is ranked above the positive. A constant
  scorer gets R@1 = 0, never a perfect score by accident of ordering.
- "optimistic": tied negatives are ranked below the positive.
- "index": ties are broken by column index, as a stable sort would (open_clip's choice).

Ranks are computed one chunk of queries at a time, so memory is O(chunk × gallery), never
images × captions, and the result does not depend on the chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

TiePolicy = Literal["pessimistic", "optimistic", "index"]
TIE_POLICIES: tuple[str, ...] = ("pessimistic", "optimistic", "index")
DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def query_ranks(scores: torch.Tensor, positives: torch.Tensor, tie_policy: TiePolicy = "pessimistic"
                ) -> torch.Tensor:
    """1-based rank of the best-ranked positive of each query row.

    scores: (Q, N) float; positives: (Q, N) bool with at least one True per row.
    """
    if scores.shape != positives.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and positives {tuple(positives.shape)} differ in shape")
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"unknown tie policy {tie_policy!r}; choose one of {TIE_POLICIES}")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one positive")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    scores = scores.float()
    best = scores.masked_fill(~positives, float("-inf")).max(dim=1, keepdim=True).values
    negatives = ~positives
    above = ((scores > best) & negatives).sum(dim=1)
    if tie_policy == "optimistic":
        return above + 1
    tied = (scores == best) & negatives
    if tie_policy == "pessimistic":
        return above + tied.sum(dim=1) + 1
    # index: the first positive reaching `best` in column order; tied negatives before it count.
    cols = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    first_best = cols.masked_fill(~(positives & (scores == best)), scores.shape[1]).min(dim=1, keepdim=True).values
    return above + (tied & (cols < first_best)).sum(dim=1) + 1


def chunked_ranks(score_rows: Callable[[int, int], torch.Tensor],
                  positive_rows: Callable[[int, int], torch.Tensor],
                  n_queries: int, chunk: int = 256, tie_policy: TiePolicy = "pessimistic") -> np.ndarray:
    """Ranks of all queries, asking for `chunk` rows of scores/positives at a time."""
    out = np.empty(n_queries, dtype=np.int64)
    for start in range(0, n_queries, chunk):
        stop = min(start + chunk, n_queries)
        out[start:stop] = query_ranks(score_rows(start, stop), positive_rows(start, stop), tie_policy).cpu().numpy()
    return out


def img2txt_from_txt2img(txt2img: Sequence[int] | np.ndarray, n_images: int) -> list[list[int]]:
    groups: list[list[int]] = [[] for _ in range(n_images)]
    for t, i in enumerate(np.asarray(txt2img)):
        groups[int(i)].append(t)
    empty = [i for i, g in enumerate(groups) if not g]
    if empty:
        raise ValueError(f"{len(empty)} images have no caption (first: {empty[:5]})")
    return groups


def retrieval_ranks(sim: torch.Tensor, txt2img: Sequence[int] | np.ndarray, chunk: int = 256,
                    tie_policy: TiePolicy = "pessimistic") -> tuple[np.ndarray, np.ndarray]:
    """(i2t_ranks, t2i_ranks) from a full (N_img, N_txt) score matrix; convenience for small sets."""
    t2i = torch.as_tensor(np.asarray(txt2img), dtype=torch.long, device=sim.device)
    n_img, n_txt = sim.shape
    img2txt_from_txt2img(t2i.cpu().numpy(), n_img)  # validates: every image has a caption
    img_ids = torch.arange(n_img, device=sim.device)
    i2t = chunked_ranks(lambda a, b: sim[a:b], lambda a, b: t2i[None, :] == img_ids[a:b, None], n_img, chunk,
                        tie_policy)
    t2i_r = chunked_ranks(lambda a, b: sim[:, a:b].t(), lambda a, b: img_ids[None, :] == t2i[a:b, None], n_txt,
                          chunk, tie_policy)
    return i2t, t2i_r


def recall_at(ranks: np.ndarray, k: int) -> float:
    return float(100.0 * np.mean(np.asarray(ranks) <= k))


def direction_metrics(prefix: str, ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """{prefix}_R{k} for each k, {prefix}_mR (mean of those), {prefix}_medr, {prefix}_meanr."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no ranks")
    out = {f"{prefix}_R{k}": recall_at(ranks, k) for k in ks}
    out[f"{prefix}_mR"] = float(np.mean([out[f"{prefix}_R{k}"] for k in ks]))
    out[f"{prefix}_medr"] = float(np.median(ranks))
    out[f"{prefix}_meanr"] = float(np.mean(ranks))
    return out


def image_text_metrics(i2t_ranks: np.ndarray, t2i_ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS
                       ) -> dict[str, float]:
    """All image-text retrieval metrics; rsum = sum of the six recalls (R@1/5/10, both directions)."""
    out = direction_metrics("i2t", i2t_ranks, ks)
    out.update(direction_metrics("t2i", t2i_ranks, ks))
    out["rsum"] = float(sum(out[f"{d}_R{k}"] for d in ("i2t", "t2i") for k in ks))
    out["r_mean"] = out["rsum"] / (2 * len(ks))
    return out
