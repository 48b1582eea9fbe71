"""Token masking, shared by every masked objective: BERT-style text masking (TCL's MLM, COTS's CMLM,
SCALE's MLM), entity-level table masking (SCALE's MEM) and BEiT-style blockwise patch masking (COTS's CMVM).

Text (ALBEF/TCL `mask()`): each position is chosen with probability p (never the positions
holding `never_mask` ids, e.g. [PAD] and [CLS]; [SEP] can be chosen, as in the official code);
of the chosen, 80 % become [MASK], 10 % a random id drawn from the whole vocabulary, 10 % stay.
Labels are the original ids at chosen positions and -100 elsewhere (ignored by cross-entropy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MaskedTokens:
    input_ids: torch.Tensor   # (B, L) with masking applied
    labels: torch.Tensor      # (B, L) original id where chosen, IGNORE_INDEX elsewhere
    chosen: torch.Tensor      # (B, L) bool


def mask_tokens(input_ids: torch.Tensor, *, vocab_size: int, mask_id: int, never_mask: Sequence[int],
                probability: float = 0.15, replace_with_mask: float = 0.8, replace_with_random: float = 0.1,
                generator: torch.Generator | None = None) -> MaskedTokens:
    if not 0.0 <= probability <= 1.0 or replace_with_mask + replace_with_random > 1.0:
        raise ValueError("masking probabilities out of range")
    device = input_ids.device
    shape = input_ids.shape

    def bernoulli(p: float) -> torch.Tensor:
        return torch.bernoulli(torch.full(shape, p), generator=generator).bool().to(device)

    chosen = bernoulli(probability)
    for tok in never_mask:
        chosen &= input_ids != tok
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = input_ids.clone()
    to_mask = bernoulli(replace_with_mask) & chosen
    masked[to_mask] = mask_id
    rest = 1.0 - replace_with_mask
    to_random = bernoulli(replace_with_random / rest if rest > 0 else 0.0) & chosen & ~to_mask
    random_ids = torch.randint(vocab_size, shape, generator=generator).to(device)
    masked[to_random] = random_ids[to_random]
    return MaskedTokens(masked, labels, chosen)


def block_mask(grid: int, n_masked: int, *, min_block: int = 16, aspect: tuple[float, float] = (0.3, 1 / 0.3),
               generator: torch.Generator | None = None, attempts: int = 10) -> torch.Tensor:
    """BEiT's blockwise masking of a grid x grid patch layout: (grid²,) bool, row-major like ViT patches.

    Rectangles are added until about `n_masked` patches are covered: each has a target area drawn
    uniformly from [min_block, patches still to mask] and a log-uniform aspect ratio; a rectangle
    that would overshoot the budget or adds nothing is redrawn (up to `attempts` times, then the
    loop stops, so the count may end a little under `n_masked`, as in BEiT).
    """
    if not 0 <= n_masked <= grid * grid:
        raise ValueError(f"cannot mask {n_masked} of {grid * grid} patches")
    g = generator if generator is not None else torch.default_generator

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=g))

    mask = torch.zeros(grid, grid, dtype=torch.bool)
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    count = 0
    while count < n_masked:
        left_to_mask = n_masked - count
        added = 0
        for _ in range(attempts):
            area = uniform(min(min_block, left_to_mask), left_to_mask)
            ratio = math.exp(uniform(log_lo, log_hi))
            h, w = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
            if not (0 < h <= grid and 0 < w <= grid):
                continue
            top = int(torch.randint(grid - h + 1, (), generator=g))
            left = int(torch.randint(grid - w + 1, (), generator=g))
            new = int((~mask[top:top + h, left:left + w]).sum())
            if 0 < new <= left_to_mask:
                mask[top:top + h, left:left + w] = True
                added = new
                break
        if added == 0:
            break
        count += added
    return mask.flatten()


def block_masks(batch: int, grid: int, ratio: float, *, min_block: int = 16,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, grid²) independent blockwise masks covering about `ratio` of the patches each."""
    n = int(round(ratio * grid * grid))
    return torch.stack([block_mask(grid, n, min_block=min_block, generator=generator) for _ in range(batch)])


def mask_entities(input_ids: torch.Tensor, entity_index: torch.Tensor, is_value: torch.Tensor, *, mask_id: int,
                  probability: float = 0.15, generator: torch.Generator | None = None) -> MaskedTokens:
    """SCALE's masked entity modelling on a property–value table ([CLS] p1 v1 p2 v2 … [SEP]).

    entity_index: (B, L) the pair each token belongs to (0, 1, …; -1 for [CLS]/[SEP]/[PAD]);
    is_value: (B, L) True on value tokens, False on property tokens. Each pair is chosen with
    probability p; a chosen pair has either all of its property tokens or all of its value tokens
    (a fair coin per pair) replaced by [MASK] — a pair is never split within a side, and the other
    side stays visible as context (the entity-level masking of Xiaodongsuper/M5Product_toolkit
    datatoolkit/dataloader/pretrain_dataset_ITPVA.py; docs/research/m5product.md §2.4).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"masking probability {probability} out of [0, 1]")
    if entity_index.shape != input_ids.shape or is_value.shape != input_ids.shape:
        raise ValueError("entity_index and is_value must have the shape of input_ids")
    batch = input_ids.shape[0]
    n_pairs = int(entity_index.max()) + 1 if entity_index.numel() else 0
    device = input_ids.device
    if n_pairs == 0:
        chosen = torch.zeros_like(input_ids, dtype=torch.bool)
    else:
        pick = torch.rand(batch, n_pairs, generator=generator).to(device) < probability      # (B, P)
        side = torch.rand(batch, n_pairs, generator=generator).to(device) < 0.5              # True: mask values
        idx = entity_index.clamp_min(0)
        pair_chosen = torch.gather(pick, 1, idx) & (entity_index >= 0)
        mask_values = torch.gather(side, 1, idx)
        chosen = pair_chosen & (is_value == mask_values)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    masked = input_ids.masked_fill(chosen, mask_id)
    return MaskedTokens(masked, labels, chosen)
