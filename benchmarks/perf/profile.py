"""Profile before optimising: where each method's training step spends its time.

Each method is trained by the harness' own Trainer (as in train_step.py) under torch.profiler, which records
`steps` steps after `warmup` unrecorded ones (one-off costs); the operators of the recorded steps are grouped by
what they do and ranked by self time (time in the operator itself, not in what it calls). The groups:
- dense: matrix multiplies, convolutions and fused attention kernels (what the MFU of train_step.py counts);
- elementwise: activations, normalisation, adds, copies and casts (memory-bound on a CPU, fusible by a compiler);
- other: everything else (indexing, reductions, optimizer, allocation, Python-side framework overhead).
The share of `dense` says how much a faster kernel library could gain; the share of `elementwise` what operator
fusion (torch.compile) could at most remove.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from vlpbench.benchmarks.perf.context import PerfContext, needs_gpu, open_context
from vlpbench.benchmarks.perf.train_step import train_history
from vlpbench.benchmarks.suite import Suite
from vlpbench.benchmarks.training.batches import PretrainBatches

DENSE = ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "convolution", "mkldnn_convolution",
         "convolution_backward", "_scaled_dot_product_flash_attention_for_cpu",
         "_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_efficient_attention",
         "_scaled_dot_product_flash_attention", "_efficient_attention_backward", "_flash_attention_backward",
         "addbmm", "einsum", "_convolution", "conv2d", "conv1d")
ELEMENTWISE = ("add", "add_", "mul", "mul_", "div", "div_", "sub", "rsub", "gelu", "gelu_backward", "silu",
               "relu", "threshold_backward", "sigmoid_backward", "tanh_backward", "silu_backward",
               "native_layer_norm", "native_layer_norm_backward", "copy_", "to",
               "_to_copy", "clone", "exp", "log", "neg", "pow", "sqrt", "rsqrt", "tanh", "sigmoid", "where",
               "masked_fill", "masked_fill_", "fill_", "zero_", "lerp_", "addcmul_", "addcdiv_", "_softmax",
               "_softmax_backward_data", "_log_softmax", "_log_softmax_backward_data", "mul_out", "clamp",
               "clamp_", "cat", "dropout", "native_dropout", "native_dropout_backward", "_foreach_mul_",
               "_foreach_add_", "_foreach_lerp_", "_foreach_addcmul_", "_foreach_addcdiv_", "_foreach_div_",
               "_foreach_sqrt", "_foreach_mul", "_foreach_add")


def group_of(op: str) -> str:
    name = op.removeprefix("aten::")
    if name in DENSE:
        return "dense"
    if name in ELEMENTWISE:
        return "elementwise"
    return "other"


def profile_method(ctx: PerfContext, name: str, size: str, steps: int, warmup: int, top: int) -> dict[str, Any]:
    batch = ctx.suite.budget(size).batch_size
    model = ctx.model(name, size)
    data = PretrainBatches(ctx.corpus, model, batch, seed=0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    # the first `warmup` steps run unrecorded (one-off costs; the last of them also warms the profiler up), the
    # next `steps` are recorded
    when = schedule(wait=max(warmup - 1, 0), warmup=min(warmup, 1), active=steps, repeat=1)
    with profile(activities=activities, schedule=when) as prof:
        train_history(ctx, name, size, model, data, warmup + steps + 1, step_hook=lambda _: prof.step())
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {"dense": 0.0, "elementwise": 0.0, "other": 0.0}
    for e in events:
        groups[group_of(e.key)] += e.self_cpu_time_total
    wall = sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith("ProfilerStep"))
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "size": size, "batch_size": batch, "profiled_steps": steps, "warmup_steps": warmup,
        "wall_s": wall / 1e6, "aten_self_s": total / 1e6,
        "share_of_aten_self": {g: v / total for g, v in groups.items()} if total else {},
        "outside_aten_share": max(0.0, 1 - total / wall) if wall else None,
        "top_ops": [{"op": e.key, "group": group_of(e.key), "self_s": e.self_cpu_time_total / 1e6,
                     "share": e.self_cpu_time_total / total, "calls": e.count} for e in ranked],
    }


def run(methods: list[str] | None = None, size: str = "tiny", steps: int = 3, warmup: int = 2, top: int = 8,
        suite: Suite | None = None) -> dict[str, Any]:
    """Every method of the suite (default: the default suite) at `size`."""
    ctx = open_context(suite, with_corpus=True)
    if needs_gpu(size, ctx.device):
        return {"size": size, "skipped": f"{size} is profiled on a GPU; this device is {ctx.device.type}"}
    return {"size": size, "threads": torch.get_num_threads(),
            "methods": {name: profile_method(ctx, name, size, steps, warmup, top)
                        for name in methods or ctx.suite.method_names()}}
