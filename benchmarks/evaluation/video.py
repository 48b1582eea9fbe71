"""Text-to-video retrieval (MSR-VTT 1k-A protocol; the built-in video split by default).

The model embeds: each video through `VLPModel.encode_video` (by default the mean of its frame embeddings,
CLIP4Clip's meanP — the COTS recipe), each caption through `encode_text`; scores are `similarity`. `metrics` ranks:
t2v and v2t R@1/5/10, median rank (MdR) and mean rank (MnR), 1-based — CLIP4Clip's `compute_metrics` reports
``rank + 1`` of a 0-based rank, the same numbers. With several captions per video, v2t counts the best-ranked one.
No test-time post-processing (DSL / inverted softmax): those change the protocol and inflate the numbers
(github.com/starmemda/CAMoE/issues/4).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import Field

from vlpbench.benchmarks.data.types import VideoRetrievalSplit, VideoSource
from vlpbench.benchmarks.evaluation.metrics import TiePolicy, direction_metrics, retrieval_ranks
from vlpbench.benchmarks.evaluation.retrieval import encode_texts
from vlpbench.benchmarks.runtime import autocast, eval_mode
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel


class VideoRetrievalProtocol(StrictModel):
    tie_policy: TiePolicy = "pessimistic"
    batch_size: int = Field(16, gt=0, description="Videos per encoding batch (does not change results).")
    text_batch_size: int = Field(256, gt=0, description="Captions per encoding batch (does not change results).")
    chunk: int = Field(256, gt=0, description="Query rows ranked at a time (does not change results).")


@dataclass
class VideoOutcome:
    metrics: dict[str, float]
    v2t_ranks: np.ndarray
    t2v_ranks: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def video_metrics(v2t_ranks: np.ndarray, t2v_ranks: np.ndarray) -> dict[str, float]:
    """t2v_/v2t_ R1, R5, R10, mR, medr (MdR), meanr (MnR); rsum = the six recalls."""
    out = direction_metrics("t2v", t2v_ranks)
    out.update(direction_metrics("v2t", v2t_ranks))
    out["rsum"] = float(sum(out[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10)))
    return out


@torch.inference_mode()
def encode_videos(model: VLPModel, videos: VideoSource, batch_size: int, device: torch.device,
                  precision: str) -> torch.Tensor:
    out = []
    for start in range(0, len(videos), batch_size):
        clips = videos.get(np.arange(start, min(start + batch_size, len(videos))))   # (B, T, H, W, 3) uint8
        b, t = clips.shape[:2]
        x = model.preprocess.eval(clips.reshape(b * t, *clips.shape[2:]))
        x = x.view(b, t, *x.shape[1:]).to(device, non_blocking=True)
        with autocast(device, precision):
            out.append(model.encode_video(x).float())
    return torch.cat(out)


def evaluate_text_video(model: VLPModel, split: VideoRetrievalSplit, protocol: VideoRetrievalProtocol,
                        device: torch.device, precision: str) -> VideoOutcome:
    timings: dict[str, float] = {}
    with eval_mode(model):
        t0 = time.perf_counter()
        vid = encode_videos(model, split.videos, protocol.batch_size, device, precision)
        timings["encode_videos_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        txt = encode_texts(model, list(split.texts), protocol.text_batch_size, device, precision)
        timings["encode_texts_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.inference_mode():
            v2t, t2v = retrieval_ranks(model.similarity(vid, txt), split.txt2vid, protocol.chunk, protocol.tie_policy)
        timings["rank_s"] = time.perf_counter() - t0
    return VideoOutcome(metrics=video_metrics(v2t, t2v), v2t_ranks=v2t, t2v_ranks=t2v, timings=timings)
