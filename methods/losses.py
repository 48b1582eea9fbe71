"""Contrastive losses shared by every method (written once, used by all).

`info_nce` is the one cross-entropy over similarity logits: hard targets (an index per row) or
soft targets (a distribution per row, e.g. momentum-distilled or multi-positive). `clip_loss`
is CLIP's symmetric in-batch form on top of it; its negatives are the global batch (features of
every process, gathered with gradients, see methods/distributed.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlpbench.methods.distributed import gather_with_grad, world


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


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor, gather: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE with the global batch as negatives.

    image_emb, text_emb: (N, D) L2-normalised local rows (any two views: image-text, image-image,
    text-text); logit_scale: the *exponentiated* scale s. Single process:
    loss = ½[CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)]. Several processes: each local row is scored
    against the gathered rows of the other side (its positive at its global index), so the mean of
    the per-process losses equals the single-process loss on the whole global batch, with the same
    gradients. gather=False keeps each process's own batch as its only negatives.
    Returns (loss, this process's logits_per_image, (N, N_global)).
    """
    all_text, offset = gather_with_grad(text_emb) if gather else (text_emb, 0)
    labels = torch.arange(image_emb.shape[0], device=image_emb.device) + offset
    logits = logit_scale * image_emb @ all_text.t()
    if all_text is text_emb:  # one process: the text->image logits are the transpose
        return 0.5 * (info_nce(logits, labels) + info_nce(logits.t(), labels)), logits
    all_image, _ = gather_with_grad(image_emb)
    logits_t2i = logit_scale * text_emb @ all_image.t()
    return 0.5 * (info_nce(logits, labels) + info_nce(logits_t2i, labels)), logits


def contrastive_accuracy(logits: torch.Tensor) -> float:
    """Top-1 accuracy of `clip_loss` logits: the mean of both directions when the matrix is square (one
    process, or local negatives), the image->text direction of the local rows when the columns are global."""
    n = logits.shape[0]
    if logits.shape[1] != n:
        labels = torch.arange(n, device=logits.device) + world()[0] * n
        return float((logits.argmax(1) == labels).float().mean())
    labels = torch.arange(n, device=logits.device)
    return float(0.5 * ((logits.argmax(1) == labels).float().mean() + (logits.argmax(0) == labels).float().mean()))


def distilled_targets(teacher_logits: torch.Tensor, hard: torch.Tensor, alpha: float) -> torch.Tensor:
    """ALBEF momentum distillation: α·softmax(teacher) + (1 − α)·hard (hard rows sum to 1)."""
    return alpha * F.softmax(teacher_logits, dim=1) + (1.0 - alpha) * hard


def positives_from_ids(query_ids: torch.Tensor, candidate_ids: torch.Tensor) -> torch.Tensor:
    """Multi-positive targets: row i spreads mass uniformly over candidates with the same id.

    TCL/ALBEF fine-tuning (`idx_queue`): every caption of the same image is a positive.
    """
    pos = (query_ids[:, None] == candidate_ids[None, :]).float()
    if (pos.sum(dim=1) == 0).any():
        raise ValueError("a query has no candidate with its id; include the batch itself among the candidates")
    return pos / pos.sum(dim=1, keepdim=True)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                   alpha: float = 0.0) -> torch.Tensor:
    """CE over the masked positions (labels != -100), optionally distilled from a teacher.

    (1 − α)·CE + α·mean over masked positions of −Σ_v softmax(teacher)_v · log softmax(logits)_v,
    with the softmax over the vocabulary (TCL after commit 74a3e4f; before it, dim=1 was used).
    """
    flat = logits.reshape(-1, logits.shape[-1])
    target = labels.reshape(-1)
    ce = F.cross_entropy(flat, target, ignore_index=-100)
    if teacher_logits is None or alpha == 0.0:
        return ce
    chosen = target != -100
    soft = F.softmax(teacher_logits.reshape(-1, logits.shape[-1])[chosen], dim=-1)
    distill = -(soft * F.log_softmax(flat[chosen], dim=-1)).sum(dim=-1).mean()
    return (1.0 - alpha) * ce + alpha * distill


def global_local_infonce(local: torch.Tensor, global_: torch.Tensor, temperature: torch.Tensor | float,
                         valid: torch.Tensor | None = None) -> torch.Tensor:
    """TCL's local MI term (`in_batch_g2l_loss`): each sample's global vs its own locals.

    local: (N, L, D) normalised local features; global_: (N, D); valid: (N, L) bool (text padding).
    For sample b and valid local j the positive is g_b·l_bj and the negatives are g_b·l_b'j' for
    every valid local j' of every other sample b' in the batch (the same set for all j of b).
    Reduction: without `valid`, the mean over all (b, j); with it, per sample the mean over its
    valid locals, then the mean over samples.
    """
    n, length, _ = local.shape
    if valid is None:
        valid = torch.ones(n, length, dtype=torch.bool, device=local.device)
    pos = torch.einsum("nld,nd->nl", local, global_) / temperature                   # (N, L)
    neg = torch.einsum("bd,cjd->bcj", global_, local) / temperature                   # (N, N, L)
    other = ~torch.eye(n, dtype=torch.bool, device=local.device)
    keep = other[:, :, None] & valid[None, :, :]
    # Every local of sample b shares b's negatives, so their log-sum-exp is computed once per sample:
    # -log softmax([pos, negs])[0] = logaddexp(pos, LSE(negs)) - pos   (no N·L copies of the negatives).
    lse_neg = torch.logsumexp(neg.masked_fill(~keep, float("-inf")).reshape(n, n * length), dim=1)  # (N,)
    nll = torch.logaddexp(pos, lse_neg[:, None]) - pos                                  # (N, L)
    nll = nll.masked_fill(~valid, 0.0)
    per_sample = nll.sum(dim=1) / valid.sum(dim=1).clamp_min(1)
    return per_sample.mean()


def kl_alignment(logits_a: torch.Tensor, logits_b: torch.Tensor, direction: str = "symmetric") -> torch.Tensor:
    """COTS's task-level term between two retrieval distributions over the same candidates.

    Row i of `logits_a` and `logits_b` scores the same K + 1 aligned pairs (the current pair and
    the queued ones) from the image side and from the text side; P = softmax(a), Q = softmax(b).
    direction "a_to_b" is mean_i KL(P_i ‖ Q_i), "b_to_a" mean_i KL(Q_i ‖ P_i), "symmetric" their sum.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"the two distributions must be over the same candidates: {tuple(logits_a.shape)} vs "
                         f"{tuple(logits_b.shape)}")
    log_p = F.log_softmax(logits_a.float(), dim=1)
    log_q = F.log_softmax(logits_b.float(), dim=1)
    p_to_q = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    q_to_p = (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()
    if direction == "a_to_b":
        return p_to_q
    if direction == "b_to_a":
        return q_to_p
    if direction == "symmetric":
        return p_to_q + q_to_p
    raise ValueError(f"unknown KL direction {direction!r}: use a_to_b, b_to_a or symmetric")


def self_harmonized_weights(scores: torch.Tensor, *, include_diagonal: bool = False, row_l2_normalise: bool = False,
                            stop_gradient: bool = True, valid: torch.Tensor | None = None) -> torch.Tensor:
    """SCALE's modality re-weighting S' = S ⊙ softmax(S), the softmax taken along each row.

    scores: (..., M, M) modality score matrices S (one per sample, or a batch mean). include_diagonal
    False: the softmax runs over the other modalities only and S'_mm = 0 (the paper's reading: pairwise
    losses exist only for m != n); True with row_l2_normalise: what SCALE_code computes (per sample,
    diagonal included, each row of S' L2-normalised; docs/research/scale_code.md). stop_gradient: S' is a
    constant weight (no gradient flows into the scores through it); SCALE_code does not detach.
    valid: (..., M) bool, modalities present; absent ones take no part in any softmax and get weight 0
    (rows and columns).
    """
    if scores.ndim < 2 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"S must be (..., M, M) square, got {tuple(scores.shape)}")
    s = scores.detach() if stop_gradient else scores
    eye = torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
    drop = torch.zeros(s.shape, dtype=torch.bool, device=s.device) if include_diagonal else eye.expand(s.shape)
    if valid is not None:
        pair_ok = valid.unsqueeze(-1) & valid.unsqueeze(-2)
        drop = drop | ~pair_ok
    # A row with nothing left (an absent modality, or one modality alone) gets zeros, not NaN.
    logits = s.masked_fill(drop, float("-inf"))
    empty = drop.all(dim=-1, keepdim=True)
    weights = s * torch.softmax(logits.masked_fill(empty, 0.0), dim=-1)
    weights = weights.masked_fill(drop, 0.0)
    if row_l2_normalise:
        weights = F.normalize(weights, dim=-1)
    return weights


def pairwise_infonce(a: torch.Tensor, b: torch.Tensor, temperature: float, *, negatives: str = "simclr",
                     row_scale: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE between two views a, b (B, D) of the same B samples (L2-normalised here), positives aligned.

    negatives "simclr": SimCLR's NT-Xent over the 2B items [a; b] — each of the 2B anchors has its
    other view as positive and the other 2B - 2 items, of both views, as negatives (what SCALE_code's
    `info_nce_loss` does); "cross_modal": CLIP's ½[CE(a·bᵀ/τ) + CE(b·aᵀ/τ)], negatives from the other
    view only. row_scale (B,): multiplies the logits of sample b's anchor rows (both views) — SCALE_code's
    per-sample graph weight, an inverse temperature. valid (B,) bool: samples that take part (as anchors
    and as negatives); a pair with fewer than two valid samples gives 0.
    """
    n = a.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=a.device) if valid is None else valid
    if int(keep.sum()) < 2:
        return (a.sum() + b.sum()) * 0.0
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    scale = torch.ones(n, device=a.device, dtype=a.dtype) if row_scale is None else row_scale.to(a.dtype)
    if negatives == "simclr":
        z = torch.cat([a, b])
        logits = (z @ z.t() / temperature) * torch.cat([scale, scale])[:, None]
        eye = torch.eye(2 * n, dtype=torch.bool, device=a.device)
        cols = torch.cat([keep, keep])
        logits = logits.masked_fill(eye | ~cols[None, :], float("-inf"))
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(a.device)
        return info_nce(logits[cols], targets[cols])
    if negatives == "cross_modal":
        idx = torch.arange(n, device=a.device)
        a2b = (a @ b.t() / temperature) * scale[:, None]
        b2a = (b @ a.t() / temperature) * scale[:, None]
        a2b = a2b.masked_fill(~keep[None, :], float("-inf"))
        b2a = b2a.masked_fill(~keep[None, :], float("-inf"))
        return 0.5 * (info_nce(a2b[keep], idx[keep]) + info_nce(b2a[keep], idx[keep]))
    raise ValueError(f"unknown negatives {negatives!r}: simclr or cross_modal")
