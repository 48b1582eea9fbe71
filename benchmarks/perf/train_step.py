"""Training step time, samples/s and model FLOP utilisation (MFU) of every method.

Each method is trained for `warmup + steps` steps by the harness' own Trainer (the loop `vlpbench run` uses:
batch assembly from the corpus, augmentation, forward, backward, optimizer, momentum/queue updates) on the suite's
pretraining data, with its size's recipe and batch; untrained weights (timings do not depend on them). The step
time is the median of the timed steps' wall times (the Trainer's per-step samples/s at log_every 1); the first
`warmup` steps pay one-off costs and are left out.

Model FLOPs per step are counted by `torch.utils.flop_counter` over one forward + backward of a batch (matmuls,
convolutions and attention; elementwise work is not counted, as in the usual MFU definition). MFU = FLOPs per
step / step time / the machine's measured dense matmul peak (machine.py), at the same threads and precision.
Batch assembly is also timed alone, so the share of a step spent outside the model is visible.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from vlpbench.benchmarks.perf.context import PerfContext, needs_gpu, open_context
from vlpbench.benchmarks.suite import Budget, Suite
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.benchmarks.training.loop import Trainer
from vlpbench.methods import StepContext, train_recipe


def step_flops(model: Any, batch: Any, steps_per_epoch: int) -> int:
    """FLOPs of one pretraining step's forward and backward (flop_counter's matmul/conv/attention count)."""
    from torch.utils.flop_counter import FlopCounterMode

    ctx = StepContext(step=0, total_steps=1, steps_per_epoch=steps_per_epoch, epoch=0)
    counter = FlopCounterMode(display=False)
    model.train()
    with counter:
        out = model.pretrain_step(batch, ctx)
        out.total.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def train_history(ctx: PerfContext, name: str, size: str, model: Any, data: PretrainBatches, steps: int, *,
                  compile: bool = False, step_hook: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Train `model` for `steps` steps with the harness' Trainer (its size's recipe with the suite's overrides,
    log_every 1, in a throw-away folder); the per-step history records."""
    recipe = train_recipe(ctx.suite.method_of(name), size, ctx.suite.overrides_for(name, "recipe"))
    cfg = ctx.suite.train_config(Budget(steps=steps, batch_size=data.batch_size, log_every=1), 0, recipe)
    cfg = cfg.model_copy(update={"precision": ctx.precision, "compile": compile})   # the section's, not the suite's
    with tempfile.TemporaryDirectory(prefix="vlpbench-perf-") as tmp:
        Trainer(model, data, cfg, Path(tmp), progress=False, step_hook=step_hook).fit()
        return [json.loads(line) for line in (Path(tmp) / "history.jsonl").read_text().splitlines()]


def measure_method(ctx: PerfContext, name: str, size: str, steps: int, warmup: int, batch_size: int | None,
                   peak_flops: float | None, compile: bool = False) -> dict[str, Any]:
    suite, device, precision = ctx.suite, ctx.device, ctx.precision
    batch = batch_size or suite.budget(size).batch_size
    model = ctx.model(name, size)
    data = PretrainBatches(ctx.corpus, model, batch, seed=0)
    t0 = time.perf_counter()
    for s in range(3):
        data.batch(0, s)
    data_s = (time.perf_counter() - t0) / 3
    history = train_history(ctx, name, size, model, data, warmup + steps, compile=compile)
    step_times = [batch / h["samples_per_s"] for h in history[warmup:]]
    step_s = statistics.median(step_times)
    flops = step_flops(model, data.batch(0, warmup + steps).to(device), data.steps_per_epoch)
    out: dict[str, Any] = {
        "size": size, "batch_size": batch, "precision": precision, "device": str(device),
        "compile": compile, "timed_steps": steps, "warmup_steps": warmup, "step_s_median": step_s,
        "warmup_step_s": [batch / h["samples_per_s"] for h in history[:warmup]],
        "step_s": step_times, "samples_per_s": batch / step_s,
        "batch_assembly_s": data_s, "batch_assembly_share": data_s / step_s,
        "flops_per_step": flops, "achieved_flops_per_s": flops / step_s,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if peak_flops:
        out["mfu"] = flops / step_s / peak_flops
    return out


def run(methods: list[str] | None = None, size: str = "tiny", steps: int = 6, warmup: int = 2,
        batch_size: int | None = None, peak_flops: float | None = None, suite: Suite | None = None
        ) -> dict[str, Any]:
    """Every method of the suite (default: the default suite) at `size`; MFU against `peak_flops`."""
    ctx = open_context(suite, with_corpus=True)
    if needs_gpu(size, ctx.device):
        return {"size": size, "skipped": f"{size} is measured on a GPU; this device is {ctx.device.type}"}
    results = {name: measure_method(ctx, name, size, steps, warmup, batch_size, peak_flops)
               for name in methods or ctx.suite.method_names()}
    return {"size": size, "threads": torch.get_num_threads(), "peak_flops_per_s": peak_flops, "methods": results}


def run_compile(methods: list[str] | None = None, size: str = "tiny", steps: int = 6, warmup: int = 2,
                eager: dict[str, Any] | None = None, suite: Suite | None = None) -> dict[str, Any]:
    """Each method trained with its towers torch.compile'd (Suite.compile) against eager: step time, the extra
    time of the warm-up steps (compilation), and the steps after which compiling has paid for itself. `eager`:
    the train section's results, when it ran in the same process (otherwise eager is measured here)."""
    ctx = open_context(suite, with_corpus=True)
    if needs_gpu(size, ctx.device):
        return {"size": size, "skipped": f"{size} is measured on a GPU; this device is {ctx.device.type}"}
    out: dict[str, Any] = {}
    for name in methods or ctx.suite.method_names():
        e = (eager or {}).get(name) or measure_method(ctx, name, size, steps, warmup, None, None)
        c = measure_method(ctx, name, size, steps, warmup, None, None, compile=True)
        gain = e["step_s_median"] - c["step_s_median"]
        extra = sum(c["warmup_step_s"]) - sum(e["warmup_step_s"])
        out[name] = {"eager_step_s": e["step_s_median"], "compiled_step_s": c["step_s_median"],
                     "speedup": e["step_s_median"] / c["step_s_median"], "compile_extra_s": extra,
                     "break_even_steps": extra / gain if gain > 0 else None,
                     "default_budget_steps": ctx.suite.budget(size).steps,
                     "compiled_warmup_step_s": c["warmup_step_s"]}
    return {"size": size, "threads": torch.get_num_threads(), "methods": out}
