"""Learning-rate schedule: linear warm-up, then cosine decay to a floor (open_clip's `cosine_lr`)."""

from __future__ import annotations

import math


def warmup_steps_for(total_steps: int, warmup_fraction: float, warmup_steps: int | None) -> int:
    steps = warmup_steps if warmup_steps is not None else int(round(warmup_fraction * total_steps))
    return max(0, min(steps, total_steps))


def warmup_cosine(step: int, total_steps: int, warmup: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at optimizer step `step` (0-based): (step+1)/warmup during warm-up, then
    min_ratio + (1 - min_ratio) * ½(1 + cos(π · progress)) with progress in [0, 1]."""
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
