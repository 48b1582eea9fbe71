"""Momentum (EMA) encoders and aligned feature queues, shared by TCL, COTS and any MoCo-style method.

`MomentumPairs` keeps frozen copies of online modules and updates them as
θ_m ← m·θ_m + (1 − m)·θ (ALBEF/TCL `_momentum_update`: parameters only, every step, before the
momentum features are computed). `FeatureQueues` holds several FIFO queues written together,
so index k of every queue belongs to the same sample (COTS's aligned image/text queues, TCL's
image/text/id queues); they are buffers, so checkpoints carry them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.methods.distributed import gather_no_grad


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy whose parameters take no gradient (the momentum twin of `module`)."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class MomentumPairs:
    """(online, momentum) module pairs with an EMA update. Not an nn.Module: the owner registers both sides."""

    def __init__(self, pairs: Sequence[tuple[nn.Module, nn.Module]], momentum: float) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.pairs = list(pairs)
        self.momentum = momentum
        for online, twin in self.pairs:
            a = [n for n, _ in online.named_parameters()]
            b = [n for n, _ in twin.named_parameters()]
            if a != b:
                raise ValueError(f"momentum twin of {type(online).__name__} has different parameters")

    def _params(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        online, twin = [], []
        for o, t in self.pairs:
            online += [p.detach() for p in o.parameters()]
            twin += [p.detach() for p in t.parameters()]
        return online, twin

    @torch.no_grad()
    def copy_online(self) -> None:
        """Make every momentum parameter equal to its online parameter (initialisation)."""
        online, twin = self._params()
        torch._foreach_copy_(twin, online)

    @torch.no_grad()
    def update(self) -> None:
        online, twin = self._params()
        torch._foreach_mul_(twin, self.momentum)
        torch._foreach_add_(twin, online, alpha=1.0 - self.momentum)


class FeatureQueues(nn.Module):
    """Aligned FIFO queues of fixed size. Row k of every queue comes from the same enqueued sample."""

    def __init__(self, size: int, dims: dict[str, int], *, fill: dict[str, float] | None = None,
                 dtype: dict[str, torch.dtype] | None = None, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if size <= 0:
            raise ValueError("queue size must be positive")
        self.size = size
        self.names = tuple(dims)
        fill = fill or {}
        dtype = dtype or {}
        for name, dim in dims.items():
            shape = (size, dim) if dim > 0 else (size,)
            if name in fill:
                buf = torch.full(shape, fill[name], dtype=dtype.get(name, torch.float32))
            else:  # ALBEF/MoCo: random unit vectors until real features arrive
                buf = F.normalize(torch.randn(shape, generator=generator), dim=-1)
            self.register_buffer(f"queue_{name}", buf)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def get(self, name: str) -> torch.Tensor:
        """The whole queue (size, dim): a detached clone, safe to use as negatives."""
        return getattr(self, f"queue_{name}").clone().detach()

    @torch.no_grad()
    def enqueue(self, **values: torch.Tensor) -> None:
        """Enqueue this step's rows — of every process, in rank order (ALBEF/MoCo's concat_all_gather), so the
        queues of a distributed run equal those of one process holding the global batch."""
        if set(values) != set(self.names):
            raise ValueError(f"enqueue needs exactly {self.names}, got {sorted(values)}")
        values = {k: gather_no_grad(v.detach()) for k, v in values.items()}
        n = {v.shape[0] for v in values.values()}
        if len(n) != 1:
            raise ValueError("all enqueued tensors must have the same batch size")
        b = n.pop()
        if b > self.size:
            raise ValueError(f"a batch of {b} does not fit a queue of {self.size}: make the queue size (e.g. the "
                             "method's queue_size option) at least the batch size")
        idx = (int(self.ptr) + torch.arange(b)) % self.size
        for name, v in values.items():
            buf = getattr(self, f"queue_{name}")
            buf[idx.to(buf.device)] = v.detach().to(buf.dtype)
        self.ptr.fill_((int(self.ptr) + b) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + b))
