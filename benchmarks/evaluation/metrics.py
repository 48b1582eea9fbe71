"""Retrieval metrics: a pure module from scores to ranks to recalls (no model, no I/O).

Protocol (Karpathy splits; uta-smile/TCL and salesforce/ALBEF Retrieval.py `itm_eval`, LAION-AI/CLIP_benchmark
clip_benchmark/metrics/zeroshot_retrieval.py `recall_at_k`):
- image→text: an image query is a hit at K if *any* of its ground-truth captions is in its top
  K; its rank is the position of its best-ranked ground-truth caption. The number of captions
  per image is whatever the split holds (never assumed to be 5).
- text→image: each caption has exactly one ground-truth image.
- Ranks are 1-based; R@K = 100 · fraction of queries with rank ≤ K (percent units).

Tie policy (a score equal to the best positive's score):
- "pessimistic" (default): every tied negative is ranked above the positive. A constant
  scorer gets R@1 = 0, never a perfect score by accident of ordering.
- "optimistic": tied negatives are ranked below the positive.
- "index": ties are broken by column index, as a stable sort would. (open_clip's and CLIP_benchmark's
  torch argsort/topk are not stable: their tie order is arbitrary, so no policy equals theirs exactly.)

Ranks are computed one chunk of queries at a time (`chunked_ranks`, any per-query scores such as
re-ranked rows) or, for one score matrix serving both directions, one tile at a time in a single
pass (`PairedRanks`, what ITC evaluation runs: each score computed once, ~10x faster than a full
matrix and an argsort at COCO scale). Memory is O(chunk × gallery), never images × captions, and
the result depends neither on the chunk nor on the tile size.
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


ScoreTile = Callable[[int, int, int, int], torch.Tensor]


class PairedRanks:
    """Both directions' ranks from one pass over the image x caption score matrix, one tile at a time.

    `score_tile(a, b, c, d)` returns the scores of images a:b against captions c:d. The matrix is walked on a
    fixed grid (`chunk` images x `text_tile` captions), so every score is the value of one fixed call; a
    pre-pass evaluates only the tiles that hold a ground-truth pair (for captions stored next to their image,
    as in every Karpathy/MSR-VTT file, about text_tile/n_texts of the matrix per image chunk) and records every
    positive score. Each tile of the main pass then serves both directions: image rows count the captions
    scoring at or above their best positive, caption columns the images scoring at or above their positive.
    The ranks equal `retrieval_ranks` on the same scores for every tie policy; memory is one tile plus O(N).

    The score function must be deterministic (the same call gives the same bits, as dense matmuls do): the
    main pass checks every positive score against the pre-pass and raises if one differs.

    Work can be split between processes by image chunk: each calls `accumulate` on its own chunk starts and
    the partial counts are combined by `finish` (image rows concatenated, caption counts summed).
    """

    def __init__(self, score_tile: ScoreTile, txt2img: Sequence[int] | np.ndarray, n_images: int,
                 chunk: int = 256, text_tile: int = 1024, tie_policy: TiePolicy = "pessimistic") -> None:
        if tie_policy not in TIE_POLICIES:
            raise ValueError(f"unknown tie policy {tie_policy!r}; choose one of {TIE_POLICIES}")
        if chunk <= 0 or text_tile <= 0:
            raise ValueError(f"chunk ({chunk}) and text_tile ({text_tile}) must be positive")
        t2i = np.asarray(txt2img, dtype=np.int64)
        img2txt_from_txt2img(t2i, n_images)   # validates: ids in range, every image has a caption
        self.score_tile, self.t2i, self.n_images, self.n_texts = score_tile, t2i, n_images, len(t2i)
        self.chunk, self.text_tile, self.tie_policy = chunk, text_tile, tie_policy
        self.tiles_scored = 0
        self.positive = self._positive_scores()
        pos = torch.from_numpy(self.positive)
        t2i_t = torch.from_numpy(t2i)
        # image i: its best positive, how many of its positives reach it, the first caption column that does
        self.best = torch.full((n_images,), float("-inf")).scatter_reduce(0, t2i_t, pos, "amax")
        at_best = pos == self.best[t2i_t]
        self.positives_at_best = torch.zeros(n_images, dtype=torch.long).index_add_(0, t2i_t, at_best.long())
        cols = torch.arange(self.n_texts).masked_fill(~at_best, self.n_texts)
        self.first_best = torch.full((n_images,), self.n_texts).scatter_reduce(0, t2i_t, cols, "amin")

    def _tile(self, a: int, c: int) -> torch.Tensor:
        b, d = min(a + self.chunk, self.n_images), min(c + self.text_tile, self.n_texts)
        s = self.score_tile(a, b, c, d).detach().float().cpu()
        if s.shape != (b - a, d - c):
            raise ValueError(f"score_tile({a}, {b}, {c}, {d}) returned shape {tuple(s.shape)}, "
                             f"expected {(b - a, d - c)}")
        if torch.isnan(s).any():
            raise ValueError("scores contain NaN")
        self.tiles_scored += 1
        return s

    def _positive_scores(self) -> np.ndarray:
        """The score of every ground-truth pair, from the grid tiles that hold one."""
        out = np.empty(self.n_texts, dtype=np.float32)
        texts = np.arange(self.n_texts)
        key = (self.t2i // self.chunk) * (-(-self.n_texts // self.text_tile)) + texts // self.text_tile
        order = np.argsort(key, kind="stable")
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for group in np.split(order, bounds) if self.n_texts else []:
            a = int(self.t2i[group[0]] // self.chunk) * self.chunk
            c = int(group[0] // self.text_tile) * self.text_tile
            out[group] = self._tile(a, c)[self.t2i[group] - a, group - c].numpy()
        return out

    def chunk_starts(self) -> list[int]:
        return list(range(0, self.n_images, self.chunk))

    def accumulate(self, image_starts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(counts of the image rows of these chunks, in order; per-caption counts from these image rows)."""
        rows, col_counts = [], torch.zeros(self.n_texts, dtype=torch.long)
        pos = torch.from_numpy(self.positive)
        t2i = torch.from_numpy(self.t2i)
        index = self.tie_policy == "index"
        for a in image_starts:
            b = min(a + self.chunk, self.n_images)
            best = self.best[a:b, None]
            row_counts = torch.zeros(b - a, dtype=torch.long)
            for c in range(0, self.n_texts, self.text_tile):
                d = min(c + self.text_tile, self.n_texts)
                s = self._tile(a, c)
                mine = ((t2i[c:d] >= a) & (t2i[c:d] < b)).nonzero().flatten()
                if not torch.equal(s[t2i[c + mine] - a, mine], pos[c + mine]):
                    raise RuntimeError(f"score_tile({a}, {b}, {c}, {d}) gave other positive scores than in the "
                                       "pre-pass: the score function is not deterministic")
                p = pos[None, c:d]
                if self.tie_policy == "pessimistic":
                    row_counts += _count(s >= best, 1)
                    col_counts[c:d] += _count(s >= p, 0)
                else:
                    row_counts += _count(s > best, 1)
                    col_counts[c:d] += _count(s > p, 0)
                if index:   # ties before the first best positive's column (rows) / the positive's row (columns)
                    col_ids = torch.arange(c, d)[None, :]
                    row_ids = torch.arange(a, b)[:, None]
                    row_counts += _count((s == best) & (col_ids < self.first_best[a:b, None]), 1)
                    col_counts[c:d] += _count((s == p) & (row_ids < t2i[None, c:d]), 0)
            rows.append(row_counts)
        return (torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)), col_counts

    def finish(self, row_counts: torch.Tensor, col_counts: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """1-based (i2t, t2i) ranks from every image row's counts and the caption counts summed over rows."""
        if row_counts.shape != (self.n_images,) or col_counts.shape != (self.n_texts,):
            raise ValueError("finish needs the counts of every image row and of every caption")
        if self.tie_policy == "pessimistic":   # counted: every score >= the best positive, positives included
            i2t, t2i = row_counts - self.positives_at_best + 1, col_counts   # (t2i: its one positive counted)
        else:                                  # counted: negatives strictly above (+ earlier ties for "index")
            i2t, t2i = row_counts + 1, col_counts + 1
        return i2t.numpy().astype(np.int64), t2i.numpy().astype(np.int64)


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """True entries along `dim` (bytes summed into int32: several times faster than summing bools to int64)."""
    return mask.view(torch.uint8).sum(dim, dtype=torch.int32).long()


def paired_ranks(score_tile: ScoreTile, txt2img: Sequence[int] | np.ndarray, n_images: int, chunk: int = 256,
                 text_tile: int = 1024, tie_policy: TiePolicy = "pessimistic") -> tuple[np.ndarray, np.ndarray]:
    """(i2t_ranks, t2i_ranks) in one pass over the score matrix (see `PairedRanks`), in this process."""
    ranker = PairedRanks(score_tile, txt2img, n_images, chunk, text_tile, tie_policy)
    return ranker.finish(*ranker.accumulate(ranker.chunk_starts()))


def img2txt_from_txt2img(txt2img: Sequence[int] | np.ndarray, n_images: int) -> list[list[int]]:
    ids = np.asarray(txt2img)
    if ids.size and (ids.min() < 0 or ids.max() >= n_images):
        raise ValueError(f"txt2img holds image ids outside 0..{n_images - 1} (min {ids.min()}, max {ids.max()})")
    groups: list[list[int]] = [[] for _ in range(n_images)]
    for t, i in enumerate(ids):
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
