"""The machine's limit — measured dense matmul FLOP/s.

Square matrix products (``torch.mm``) of a few sizes, each timed by wall clock over enough calls to cover
`min_time_s` after warm-up; a product of two n×n matrices is 2n³ floating-point operations. The best size's rate
is the machine's practical peak that model FLOP utilisation (train_step.py) is measured against: an MFU of 1.0
would mean the model ran as fast as a large, ideal matmul on the same threads.

bf16 is measured where the device runs it: on GPUs with bf16 support, and on CPUs (where PyTorch may emulate it
without AVX512-BF16/AMX; the CPU flags are reported so a slow bf16 rate can be read correctly).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from vlpbench.benchmarks.evaluation.latency import _sync

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cpu_flags() -> list[str]:
    """The CPU features that decide matmul speed (AVX2/AVX512/AMX, bf16 instructions), from /proc/cpuinfo."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return []
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")) or "bf16" in f)
    return []


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def matmul_flops(n: int, dtype: torch.dtype, device: torch.device, min_time_s: float = 1.0,
                 warmup: int = 2) -> dict[str, float]:
    """FLOP/s of n×n @ n×n at `dtype`: warm-up calls, then calls until min_time_s is covered."""
    gen = torch.Generator(device="cpu").manual_seed(n)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    for _ in range(warmup):
        torch.mm(a, b)
    _sync(device)
    calls = 0
    t0 = time.perf_counter()
    while True:
        torch.mm(a, b)
        calls += 1
        if calls % 4 == 0 or n >= 2048:
            _sync(device)
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time_s:
                break
    return {"n": n, "calls": calls, "seconds": elapsed, "flops_per_s": 2.0 * n ** 3 * calls / elapsed}


def run(device: torch.device | None = None, sizes: tuple[int, ...] = (512, 1024, 2048),
        min_time_s: float = 1.0) -> dict[str, Any]:
    """{"fp32": {...}, "bf16": {...}}: per size and the best (the peak MFU is measured against)."""
    device = device or torch.device("cpu")
    out: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "cpu_flags": cpu_flags(),
                           "sizes": list(sizes), "min_time_s": min_time_s}
    for name, dtype in DTYPES.items():
        if name == "bf16" and not bf16_supported(device):
            out[name] = {"supported": False}
            continue
        # emulated bf16 (a CPU without bf16 instructions) runs a 2048² product for tens of seconds: the smallest
        # size shows the rate well enough
        native = name == "fp32" or device.type == "cuda" or any("bf16" in f for f in out["cpu_flags"])
        per = [matmul_flops(n, dtype, device, min_time_s) for n in (sizes if native else sizes[:1])]
        best = max(per, key=lambda r: r["flops_per_s"])
        out[name] = {"supported": True, "native": native, "per_size": per, "peak_flops_per_s": best["flops_per_s"],
                     "peak_at_n": best["n"], "peak_gflops": best["flops_per_s"] / 1e9}
    return out
