"""COTS's adaptive momentum filter (AMF): leave likely-mismatched pairs out of a step's losses.

The aligned image/text queues of momentum contrastive learning hold momentum features of recent
pairs, so their row-wise dot products are a sample of the similarity distribution of pairs
(COTS Sec. 3.3). With μ and σ the mean and standard deviation of that sample, a pair of the
current batch whose momentum similarity falls below θ = μ − λσ is treated as noise and left out
of every loss of the step; the whole batch is still enqueued afterwards (Sec. 3.3, as read in a
secondary summary of the paper).
These are pure functions; the method decides when the filter is warm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FilterDecision:
    keep: torch.Tensor     # (B,) bool
    threshold: float
    mean: float
    std: float


def pair_similarities(image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of aligned (N, D) features: the similarity of each stored pair."""
    if image_feats.shape != text_feats.shape:
        raise ValueError(f"aligned features differ in shape: {tuple(image_feats.shape)} vs {tuple(text_feats.shape)}")
    return (image_feats.float() * text_feats.float()).sum(dim=-1)


def amf_filter(batch_similarities: torch.Tensor, queue_similarities: torch.Tensor, lam: float) -> FilterDecision:
    """Keep pairs with similarity >= μ − λσ of the queue sample (σ: population standard deviation)."""
    if queue_similarities.numel() < 2:
        raise ValueError("the similarity sample needs at least two pairs")
    q = queue_similarities.float()
    mean = float(q.mean())
    std = float(q.std(unbiased=False))
    threshold = mean - lam * std
    return FilterDecision(keep=batch_similarities.float() >= threshold, threshold=threshold, mean=mean, std=std)
