"""Feature gathering across processes for in-batch contrastive losses (the global batch).

`gather_with_grad(x)` concatenates every process's `x` along dim 0 and keeps the graph: the
backward pass returns to each process the gradient of its own rows, summed over every process
that used them (torch.distributed.nn's differentiable all_gather: reduce-scatter on NCCL,
all-to-all + sum on gloo). A loss computed on local rows against the gathered columns therefore
back-propagates both through the local queries and through the local features that served as
negatives elsewhere: the sum of the per-process losses has exactly the gradient of one process
holding the whole global batch (open_clip's `gather_with_grad=True, local_loss=True`).

This is what the ERNIE-ViL 2.0 release does not do: its `ContrastiveHead` overwrites the gathered
tensors with the local features, so only local negatives are used (PaddlePaddle/ERNIE
Research/ERNIE-ViL2/ernievil2/utils/loss.py `ContrastiveHead.forward`).

With no process group (or one process) both functions are the identity: single-process runs
need nothing initialised.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(all processes' rows concatenated in rank order, offset of this process's first row).

    Every process must pass the same number of rows (the harness drops the last partial batch).
    """
    rank, size = world()
    if size == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0), rank * x.shape[0]


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows concatenated in rank order, without a graph (momentum keys for queues): the
    queue of every process then holds what one process with the global batch would have enqueued."""
    rank, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """In place: each tensor becomes its mean over processes (one flattened all-reduce per dtype)."""
    _, size = world()
    if size == 1 or not tensors:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= size
        offset = 0
        for t in group:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of every process's `x` (a new tensor; `x` itself when there is one process)."""
    if world()[1] == 1:
        return x
    out = x.clone()
    dist.all_reduce(out)
    return out


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows in rank order when processes hold different numbers of rows (evaluation shards):
    sizes are exchanged first, rows padded to the longest for the collective and the padding dropped — no
    process ever contributes a duplicate row."""
    rank, size = world()
    if size == 1:
        return x
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


def shard_range(n_batches: int, rank: int, size: int) -> range:
    """The contiguous block of batch numbers process `rank` handles (whole batches: every batch is computed
    exactly as in a one-process run; blocks differ by at most one batch, the last ones may be empty)."""
    per, extra = divmod(n_batches, size)
    start = rank * per + min(rank, extra)
    return range(start, start + per + (1 if rank < extra else 0))
