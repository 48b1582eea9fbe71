"""BERT-style token masking, shared by every masked-language objective (TCL's MLM, COTS's CMLM, SCALE's MLM).

Follows ALBEF/TCL `mask()`: each position is chosen with probability p (never the positions
holding `never_mask` ids, e.g. [PAD] and [CLS]; [SEP] can be chosen, as in the official code);
of the chosen, 80 % become [MASK], 10 % a random id drawn from the whole vocabulary, 10 % stay.
Labels are the original ids at chosen positions and -100 elsewhere (ignored by cross-entropy).
"""

from __future__ import annotations

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
