"""Batches made ahead of the model, in worker processes, without changing them.

Every batch the harness feeds a model is a pure function of its position (training: `PretrainBatches.batch(epoch,
step)`, seeded per sample; evaluation: a slice of the split), so a DataLoader over positions gives the same
batches, in the same order, with 0 or N workers. On CUDA the batches are pinned, so the copy to the device
(non_blocking) overlaps with compute. With 0 workers nothing changes from building each batch in place.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

T = TypeVar("T")


class _Positions(torch.utils.data.Dataset):   # type: ignore[type-arg]
    def __init__(self, make: Callable[[int], Any], positions: list[Any]) -> None:
        self.make, self.positions = make, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Any:
        return self.make(self.positions[i])


def _as_is(item: Any) -> Any:
    return item


def prefetched(make: Callable[[Any], T], positions: list[Any], workers: int = 0, pin: bool = False,
               depth: int = 2) -> Iterator[T]:
    """make(p) for each position p, in order; built by `workers` processes `depth` batches ahead when workers > 0,
    and pinned (the item's own `pin_memory()`) when `pin`."""
    if workers <= 0:
        for p in positions:
            item = make(p)
            yield item.pin_memory() if pin and hasattr(item, "pin_memory") else item   # type: ignore[union-attr]
        return
    loader = torch.utils.data.DataLoader(_Positions(make, positions), batch_size=None, shuffle=False,
                                         num_workers=workers, pin_memory=pin, prefetch_factor=depth,
                                         collate_fn=_as_is, persistent_workers=False,
                                         # fork: the batch makers close over the corpus and the model's builders
                                         multiprocessing_context="fork" if sys.platform == "linux" else None)
    yield from loader
