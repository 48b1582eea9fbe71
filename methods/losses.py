"""Contrastive losses shared by every method (written once, used by all).

`info_nce` is the one cross-entropy over similarity logits: hard targets (an index per row) or
soft targets (a distribution per row, e.g. momentum-distilled or multi-positive). `clip_loss`
is CLIP's symmetric in-batch form on top of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j t_ij log softmax(logits_i)_j.

    `targets` is either int64 of shape (N,) (the positive's column) or float of the logits'
    shape (rows summing to 1).
    """
    if targets.dtype in (torch.int64, torch.int32):
        return F.cross_entropy(logits, targets.long())
    if targets.shape != logits.shape:
        raise ValueError(f"soft targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE over the in-batch similarity matrix.

    image_emb, text_emb: (N, D) L2-normalised; logit_scale: the *exponentiated* scale s.
    Returns (loss, logits_per_image) with loss = ½[CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)].
    """
    logits = logit_scale * image_emb @ text_emb.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (info_nce(logits, labels) + info_nce(logits.t(), labels))
    return loss, logits
