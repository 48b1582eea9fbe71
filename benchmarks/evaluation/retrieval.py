"""Image-text retrieval evaluation: the model embeds and scores, `metrics` ranks and counts.

Scoring rules (a protocol field, recorded with every result):
- "itc": cosine similarity of the global embeddings (dual encoders; CLIP, COTS, ERNIE-ViL 2.0).
- "itm": for each query, the top-k candidates by ITC are re-scored by the model's cross-encoder
  (TCL / ALBEF official protocol); candidates outside the top k rank below every candidate.
- "itm+itc": as "itm" with the ITC similarity added to the cross-encoder score (LAVIS, BLIP).

With re-ranking, ranks beyond k are not observed: they are reported censored at k + 1, so
R@K is exact for K ≤ k and the median/mean ranks are lower bounds.

In a process group (several evaluation processes) each process encodes a contiguous block of whole batches —
so every embedding is computed exactly as in one process, and no sample is padded or duplicated — and the
blocks are gathered in order; queries are then split between processes for ranking (and re-ranking, for which
every process holds every candidate's features), and the ranks gathered: the numbers are those of one process.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from vlpbench.benchmarks.data.types import ImageSource, RetrievalSplit
from vlpbench.benchmarks.evaluation.metrics import PairedRanks, TiePolicy, chunked_ranks, image_text_metrics
from vlpbench.benchmarks.prefetch import prefetched
from vlpbench.benchmarks.runtime import autocast, eval_mode
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel
from vlpbench.methods.distributed import all_reduce_sum, gather_rows, shard_range, world

Scoring = Literal["itc", "itm", "itm+itc"]


class RetrievalProtocol(StrictModel):
    scoring: Scoring = "itc"
    rerank_k: int | None = Field(None, gt=0, description="Candidates re-scored per query (itm scoring).")
    tie_policy: TiePolicy = "pessimistic"
    prompt: str | None = Field(None, description="Text prepended to every caption, e.g. 'a photo of'.")
    batch_size: int = Field(256, gt=0, description="Encoding batch size (does not change results).")
    chunk: int = Field(256, gt=0, description="Query rows scored at a time (does not change results).")
    text_tile: int = Field(1024, gt=0, description="Captions per score tile of the one-pass ITC ranking: "
                                                   "`chunk` images x `text_tile` captions (does not change results).")
    rerank_batch: int = Field(512, gt=0, description="Cross-encoder pairs per forward (does not change results).")
    workers: int = Field(0, ge=0, description="Processes decoding and preprocessing image batches ahead of the "
                                              "model (benchmarks/prefetch.py; does not change results).")
    omit_when_default = frozenset({"workers"})

    @model_validator(mode="after")
    def _k_for_rerank(self) -> "RetrievalProtocol":
        if self.scoring != "itc" and self.rerank_k is None:
            raise ValueError(f"scoring {self.scoring!r} needs rerank_k (k_test: 128 Flickr30K, 256 COCO)")
        if self.scoring == "itc" and self.rerank_k is not None:
            raise ValueError("rerank_k is only meaningful with scoring 'itm' or 'itm+itc'")
        return self


@dataclass
class RetrievalOutcome:
    metrics: dict[str, float]
    i2t_ranks: np.ndarray
    t2i_ranks: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def my_batches(n: int, batch_size: int) -> list[int]:
    """Start offsets of the batches of `batch_size` over n items that this process handles (all of them in a
    one-process run; a contiguous block of whole batches in a process group)."""
    rank, size = world()
    return [b * batch_size for b in shard_range(-(-n // batch_size), rank, size)]


def first_known(value: Any) -> Any:
    """The first non-None of every process's `value` (what a process with no batch learns from the others)."""
    if world()[1] == 1:
        return value
    got: list[Any] = [None] * world()[1]
    torch.distributed.all_gather_object(got, value)
    return next(v for v in got if v is not None)


def gather_blocks(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """This process's batch outputs -> every process's, in order (the one-process tensor), on the device the
    parts are on (the collective itself runs on `device`)."""
    if world()[1] == 1:
        return torch.cat(parts)
    local = torch.cat(parts) if parts else None
    shape, dtype, where = first_known(None if local is None else (tuple(local.shape[1:]), local.dtype,
                                                                  str(local.device)))
    if local is None:   # more processes than batches: this one holds none
        local = torch.empty((0, *shape), dtype=dtype, device=where)
    return gather_rows(local.to(device)).to(local.device)


@torch.inference_mode()
def encode_images(model: VLPModel, images: ImageSource, batch_size: int, device: torch.device,
                  precision: str, workers: int = 0) -> torch.Tensor:
    """Embeddings of every image (this process's block of batches, gathered); `workers` processes decode and
    preprocess batches ahead, pinned for CUDA."""
    def batch(start: int) -> torch.Tensor:
        return model.preprocess.eval(images.get(np.arange(start, min(start + batch_size, len(images)))))

    out = []
    for x in prefetched(batch, my_batches(len(images), batch_size), workers, pin=device.type == "cuda"):
        with autocast(device, precision):
            out.append(model.encode_image(x.to(device, non_blocking=True)).float())
    return gather_blocks(out, device)


@torch.inference_mode()
def encode_texts(model: VLPModel, texts: list[str], batch_size: int, device: torch.device,
                 precision: str) -> torch.Tensor:
    out = []
    for start in my_batches(len(texts), batch_size):
        tokens = model.tokenize(texts[start:start + batch_size]).trimmed().to(device)
        with autocast(device, precision):
            out.append(model.encode_text(tokens).float())
    return gather_blocks(out, device)


def sharded_ranks(score_fn: Any, positive_fn: Any, n: int, chunk: int, tie_policy: TiePolicy,
                  device: torch.device) -> np.ndarray:
    """chunked_ranks over this process's block of whole chunks of queries, gathered: every process gets the
    ranks of all n queries, each computed exactly as in one process."""
    starts = my_batches(n, chunk)
    lo, hi = (starts[0], min(starts[-1] + chunk, n)) if starts else (0, 0)
    ranks = chunked_ranks(lambda a, b: score_fn(lo + a, lo + b), lambda a, b: positive_fn(lo + a, lo + b),
                          hi - lo, chunk, tie_policy) if hi > lo else np.zeros(0, dtype=np.int64)
    if world()[1] == 1:
        return ranks
    return gather_rows(torch.as_tensor(ranks, dtype=torch.long, device=device)).cpu().numpy()


class _Reranker:
    """Cross-encoder re-scoring of each query's top-k ITC candidates, batched across queries."""

    def __init__(self, model: VLPModel, split: RetrievalSplit, texts: list[str], protocol: RetrievalProtocol,
                 device: torch.device, precision: str) -> None:
        if not model.supports_rerank:
            raise ValueError(f"scoring {protocol.scoring!r} needs a re-ranking head; "
                             f"{type(model).__name__} has none (use scoring 'itc')")
        self.model, self.protocol, self.device, self.precision = model, protocol, device, precision
        self.pairs = 0          # cross-encoder passes done
        self.seconds = 0.0
        # every process needs every candidate's features: its own block of batches, then gathered
        with torch.inference_mode():
            feats = []
            for start in my_batches(split.n_images, protocol.batch_size):
                idx = np.arange(start, min(start + protocol.batch_size, split.n_images))
                x = model.preprocess.eval(split.images.get(idx)).to(device)
                with autocast(device, precision):
                    feats.append(model.rerank_image_features(x).cpu())
            self.image_feats = gather_blocks(feats, device)
            parts: list[Mapping[str, torch.Tensor]] = []
            for start in my_batches(len(texts), protocol.batch_size):
                tokens = model.tokenize(texts[start:start + protocol.batch_size]).to(device)
                with autocast(device, precision):
                    parts.append({k: v.cpu() for k, v in model.rerank_text_features(tokens).items()})
            keys = first_known(sorted(parts[0]) if parts else None)
            self.text_feats = {k: gather_blocks([p[k] for p in parts], device) for k in keys}

    @torch.inference_mode()
    def scores(self, itc: torch.Tensor, image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        """Scores of P pairs (image_idx[p], text_idx[p]) with their ITC values itc[p]."""
        t0 = time.perf_counter()
        self.pairs += len(image_idx)
        out = []
        for start in range(0, len(image_idx), self.protocol.rerank_batch):
            sl = slice(start, start + self.protocol.rerank_batch)
            img = self.image_feats[image_idx[sl]].to(self.device)
            txt = {k: v[text_idx[sl]].to(self.device) for k, v in self.text_feats.items()}
            with autocast(self.device, self.precision):
                out.append(self.model.rerank_score(img, txt).float().cpu())
        s = torch.cat(out)
        self.seconds += time.perf_counter() - t0
        return s + itc.cpu() if self.protocol.scoring == "itm+itc" else s

    def rerank_rows(self, itc_rows: torch.Tensor, row_ids: torch.Tensor, rows_are_images: bool) -> torch.Tensor:
        k = min(self.protocol.rerank_k or 1, itc_rows.shape[1])
        top = itc_rows.topk(k, dim=1).indices
        q = row_ids[:, None].expand_as(top).reshape(-1).cpu()
        c = top.reshape(-1).cpu()
        itc = itc_rows.gather(1, top).reshape(-1)
        s = self.scores(itc, q, c) if rows_are_images else self.scores(itc, c, q)
        out = torch.full(itc_rows.shape, float("-inf"))
        out.scatter_(1, top.cpu(), s.view(-1, k))
        return out


@torch.inference_mode()
def itc_ranks(model: VLPModel, img: torch.Tensor, txt: torch.Tensor, txt2img: Any, protocol: RetrievalProtocol,
              device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Both directions from one pass over the ITC score tiles (metrics.PairedRanks); in a process group each
    process scores a block of whole image chunks, image rows are gathered and caption counts summed."""
    ranker = PairedRanks(lambda a, b, c, d: model.similarity(img[a:b], txt[c:d]), np.asarray(txt2img),
                         img.shape[0], protocol.chunk, protocol.text_tile, protocol.tie_policy)
    rows, cols = ranker.accumulate(my_batches(img.shape[0], protocol.chunk))
    if world()[1] > 1:
        rows = gather_rows(rows.to(device)).cpu()
        cols = all_reduce_sum(cols.to(device)).cpu()
    return ranker.finish(rows, cols)


def reranked_ranks(model: VLPModel, split: RetrievalSplit, texts: list[str], img: torch.Tensor, txt: torch.Tensor,
                   protocol: RetrievalProtocol, device: torch.device, precision: str,
                   timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Each direction's query rows scored by ITC, the top k re-scored by the cross-encoder, then ranked."""
    t2i = torch.as_tensor(np.asarray(split.txt2img), dtype=torch.long)
    img_ids = torch.arange(split.n_images)
    reranker = _Reranker(model, split, texts, protocol, device, precision)
    with torch.inference_mode():
        i2t = sharded_ranks(lambda a, b: reranker.rerank_rows(model.similarity(img[a:b], txt), img_ids[a:b], True),
                            lambda a, b: t2i[None, :] == img_ids[a:b, None],
                            split.n_images, protocol.chunk, protocol.tie_policy, device)
        t2i_r = sharded_ranks(lambda a, b: reranker.rerank_rows(model.similarity(img, txt[a:b]).t(),
                                                                torch.arange(a, b), False),
                              lambda a, b: img_ids[None, :] == t2i[a:b, None],
                              split.n_texts, protocol.chunk, protocol.tie_policy, device)
    timings["rerank_s"] = reranker.seconds
    timings["rerank_pairs"] = float(reranker.pairs)
    return i2t, t2i_r


def evaluate_image_text(model: VLPModel, split: RetrievalSplit, protocol: RetrievalProtocol,
                        device: torch.device, precision: str) -> RetrievalOutcome:
    texts = [f"{protocol.prompt} {t}" if protocol.prompt else t for t in split.texts]
    timings: dict[str, float] = {}
    with eval_mode(model):
        t0 = time.perf_counter()
        img = encode_images(model, split.images, protocol.batch_size, device, precision, protocol.workers)
        timings["encode_images_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        txt = encode_texts(model, texts, protocol.batch_size, device, precision)
        timings["encode_texts_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        if protocol.scoring == "itc":
            i2t, t2i_r = itc_ranks(model, img, txt, split.txt2img, protocol, device)
        else:
            i2t, t2i_r = reranked_ranks(model, split, texts, img, txt, protocol, device, precision, timings)
        timings["rank_s"] = time.perf_counter() - t0
    if protocol.rerank_k is not None:
        i2t = np.minimum(i2t, protocol.rerank_k + 1)
        t2i_r = np.minimum(t2i_r, protocol.rerank_k + 1)
    return RetrievalOutcome(metrics=image_text_metrics(i2t, t2i_r), i2t_ranks=i2t, t2i_ranks=t2i_r,
                            timings=timings)
