"""The pretraining loop shared by every method.

AdamW with decoupled weight decay (not on gains, biases or other 1-d parameters), linear
warm-up + cosine schedule per step, optional gradient clipping, autocast on CUDA (bf16 default,
fp16 with a GradScaler), full-state checkpoints and exact resume: on CPU a run resumed from any
checkpoint ends with bit-identical weights to an uninterrupted one.

Distributed data parallel (a process group initialised by the launcher: gloo on CPU, NCCL on GPUs): each process
takes its contiguous slice of the global batch (PretrainBatches.shard), contrastive losses see every process's
features (methods/distributed.py), gradients are averaged over processes after backward (so the step is the
one-process step on the global batch: every loss is a mean over local queries), and momentum queues are filled
from every process. Logged losses are means over processes; rank 0 alone writes history and checkpoints, which
hold every process's RNG state.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field
from tqdm.auto import tqdm

from vlpbench.benchmarks.runtime import (Precision, autocast, make_deterministic, resolve_device, resolve_precision,
                                rng_state, seed_everything, set_rng_state)
from vlpbench.benchmarks.training import preemption
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.benchmarks.prefetch import prefetched
from vlpbench.benchmarks.training.checkpoint import CheckpointError, load_checkpoint, resolve_resume, save_checkpoint
from vlpbench.benchmarks.training.schedule import warmup_cosine, warmup_steps_for
from vlpbench.methods import StepContext, TrainRecipe, VLPModel
from vlpbench.methods.distributed import all_reduce_mean_, world
from vlpbench.methods.config import ConfigError, StrictModel, sha256_json
from vlpbench.methods.towers import compiled_towers


class TrainConfig(StrictModel):
    steps: int = Field(gt=0, description="Optimizer steps.")
    batch_size: int = Field(gt=0)
    seed: int = 0
    precision: Precision = "auto"
    device: str = "auto"
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(0, ge=0, description="Steps between checkpoints; 0 = only at the end.")
    keep_checkpoints: int = Field(2, ge=1)
    recipe: TrainRecipe
    compile: bool = Field(False, description="torch.compile the vision and text towers (methods.towers."
                                             "compiled_towers): see Suite.compile.")
    data_workers: int = Field(0, ge=0, description="Processes building batches ahead (benchmarks/prefetch.py); "
                                                   "the batches are the same with any number.")
    omit_when_default = frozenset({"data_workers"})   # dumps from before the option stay byte-identical

    def fingerprint(self) -> str:
        # (compile off is left out, so that configurations from before the option keep their fingerprints; the
        # worker count does not change a batch)
        dump = self.model_dump(mode="json", exclude={"data_workers"} | (set() if self.compile else {"compile"}))
        return sha256_json(dump)


class TrainingDiverged(RuntimeError):
    pass


@dataclass
class TrainSummary:
    steps: int
    batch_size: int
    samples_seen: int
    epochs: float
    wall_s: float
    step_s_mean: float
    precision: str
    device: str
    resumed_from_step: int | None
    final: dict[str, float] = field(default_factory=dict)
    # Per-sample decisions a method reports (e.g. COTS's AMF), scored against known noisy pairs.
    filters: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def param_groups(model: VLPModel, weight_decay: float, lr: float | None = None,
                 lr_scale: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """open_clip's rule: no decay for parameters with fewer than 2 dims (biases, norm gains, scales).

    With `lr_scale` (parameter-name prefix -> factor, longest prefix wins), parameters are further
    grouped by factor and each group gets lr x factor; the schedule multiplies every group alike.
    """
    exempt = model.no_weight_decay()
    scales = dict(lr_scale or {})
    unused = set(scales)
    groups: dict[tuple[bool, float], list[torch.nn.Parameter]] = {(True, 1.0): [], (False, 1.0): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hits = [k for k in scales if name == k or name.startswith(k + ".")]
        factor = 1.0
        if hits:
            best = max(hits, key=len)
            unused.discard(best)
            factor = scales[best]
        decay = not (p.ndim < 2 or name in exempt)
        groups.setdefault((decay, factor), []).append(p)
    if unused:
        names = sorted({n.split(".")[0] for n, _ in model.named_parameters()})
        raise ConfigError(f"recipe lr_scale: prefix(es) {sorted(unused)} match no trainable parameter of "
                          f"{type(model).__name__} (or are shadowed by longer prefixes); "
                          f"top-level names are {names}")
    out = []
    for (decay, factor), params in groups.items():
        group: dict[str, Any] = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if lr is not None:
            group["lr"] = lr * factor
        if params or factor == 1.0:
            out.append(group)
    return out


class Trainer:
    def __init__(self, model: VLPModel, data: PretrainBatches, config: TrainConfig, run_dir: Path,
                 *, progress: bool = True, job_fingerprint: str | None = None, stage: str = "pretrain",
                 step_hook: Callable[[int], None] | None = None) -> None:
        if stage not in ("pretrain", "finetune"):
            raise ValueError(f"stage must be 'pretrain' or 'finetune', got {stage!r}")
        self.stage = stage   # which objective: the model's pretrain_step or finetune_step
        self.model = model
        self.data = data
        self.config = config
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.history_path = run_dir / "history.jsonl"
        self.progress = progress
        self.step_hook = step_hook   # called with the step number after each optimizer step (e.g. a profiler's)
        self.job_fingerprint = job_fingerprint or config.fingerprint()
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        r = config.recipe
        self.optimizer = torch.optim.AdamW(param_groups(model, r.weight_decay, r.lr, r.lr_scale), lr=r.lr,
                                           betas=r.betas, eps=r.eps)
        warm = warmup_steps_for(config.steps, r.warmup_fraction, r.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, config.steps, warm, r.min_lr_ratio))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step = 0
        self.flag_counts: dict[str, dict[str, int]] = {}
        self.rank, self.world = world()
        if data.shard != (self.rank, self.world):
            raise ValueError(f"the batches are sharded {data.shard} but this process is rank {self.rank} of "
                             f"{self.world}: build PretrainBatches with shard=(rank, world size)")

    # ---- sample flags ----------------------------------------------------------------------------
    def _count_flags(self, flags: dict[str, torch.Tensor], index: torch.Tensor) -> None:
        """Accumulate each flag's confusion counts against the corpus' `noisy` ground truth, if it has one."""
        noisy_all = self.data.corpus.extras.get("noisy")
        for name, flag in flags.items():
            f = flag.detach().bool().cpu()
            c = self.flag_counts.setdefault(name, {"steps": 0, "samples": 0, "flagged": 0, "noisy": 0,
                                                   "flagged_noisy": 0})
            counts = torch.tensor([f.numel(), f.sum(), 0, 0], dtype=torch.float64)
            if noisy_all is not None:
                noisy = torch.from_numpy(np.asarray(noisy_all)[index.cpu().numpy()]).bool()
                counts[2], counts[3] = noisy.sum(), (f & noisy).sum()
            if self.world > 1:   # every process counts the whole global batch
                torch.distributed.all_reduce(counts)
            c["steps"] += 1
            c["samples"] += int(counts[0])
            c["flagged"] += int(counts[1])
            c["noisy"] += int(counts[2])
            c["flagged_noisy"] += int(counts[3])

    def filter_summary(self) -> dict[str, dict[str, float | None]]:
        """Per flag: counts over the steps it was active, and precision/recall against the noisy pairs."""
        out: dict[str, dict[str, float | None]] = {}
        has_truth = self.data.corpus.extras.get("noisy") is not None
        for name, c in self.flag_counts.items():
            row: dict[str, float | None] = dict(c)
            row["flagged_fraction"] = c["flagged"] / max(c["samples"], 1)
            if has_truth:
                row["noise_fraction"] = c["noisy"] / max(c["samples"], 1)
                row["precision"] = c["flagged_noisy"] / c["flagged"] if c["flagged"] else None
                row["recall"] = c["flagged_noisy"] / c["noisy"] if c["noisy"] else None
            out[name] = row
        return out

    # ---- state ---------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "job_fingerprint": self.job_fingerprint,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "world_size": self.world,
            "rng_per_rank": self._gather_rng() if self.world > 1 else None,
            "flag_counts": self.flag_counts,
        }

    def _gather_rng(self) -> list[Any]:
        """Every process's RNG state, in rank order (serialised with torch.save: all_gather_object cannot carry
        the tensors inside an RNG state)."""
        buf = io.BytesIO()
        torch.save(rng_state(), buf)
        mine = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(self.world)]
        torch.distributed.all_gather(sizes, torch.tensor([mine.numel()]))
        longest = int(max(s.item() for s in sizes))
        parts = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.world)]
        torch.distributed.all_gather(parts, torch.cat([mine, torch.zeros(longest - mine.numel(), dtype=torch.uint8)]))
        return [torch.load(io.BytesIO(part[:int(n.item())].numpy().tobytes()), weights_only=True)
                for part, n in zip(parts, sizes)]

    def _restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        if state.get("job_fingerprint") != self.job_fingerprint:
            raise CheckpointError(f"{path} was written by a run with another configuration; resume it with the "
                                  "same config, or start a fresh run in another output folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world:
            raise CheckpointError(f"{path} was written by a run of {saved_world} process(es); resume it with the same "
                                  f"number (this run has {self.world}) so that every process's random stream continues")
        set_rng_state(state["rng_per_rank"][self.rank] if self.world > 1 else state["rng"])
        self.flag_counts = {k: dict(v) for k, v in state.get("flag_counts", {}).items()}
        self.step = int(state["step"])
        self._truncate_history(self.step)

    def _truncate_history(self, step: int) -> None:
        if self.rank != 0 or not self.history_path.exists():
            return
        kept = [line for line in self.history_path.read_text().splitlines()
                if line and json.loads(line)["step"] <= step]
        self.history_path.write_text("".join(line + "\n" for line in kept))

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint (every process takes part in gathering the RNG states)."""
        state = self._state()
        path = save_checkpoint(self.ckpt_dir, self.step, state, self.config.keep_checkpoints) if self.rank == 0 \
            else None
        if self.world > 1:
            torch.distributed.barrier()   # nobody runs ahead of (or exits before) a checkpoint being written
        return path

    def _preemption_requested(self) -> bool:
        """Whether any process received the scheduler's warning signal (all of them then checkpoint together)."""
        flag = preemption.requested()
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def _average_gradients(self) -> None:
        if self.world == 1:
            return
        grads = []
        for p in self.model.parameters():
            if p.requires_grad:
                if p.grad is None:   # unused on this process this step: it still takes part in the mean
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
        all_reduce_mean_(grads)

    def _mean_over_processes(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        all_reduce_mean_([t])
        return dict(zip(keys, t.tolist()))

    # ---- loop ----------------------------------------------------------------------------------
    def fit(self, resume: str | None = None) -> TrainSummary:
        if not self.config.compile:
            return self._fit(resume)
        with compiled_towers(self.model):
            return self._fit(resume)

    def _fit(self, resume: str | None) -> TrainSummary:
        cfg = self.config
        make_deterministic()
        self.model.to(self.device)
        self.model.train()
        resume_path = resolve_resume(resume, self.ckpt_dir)
        resumed_from = None
        if resume_path is not None:
            self._restore(resume_path)
            resumed_from = self.step
        else:
            seed_everything(cfg.seed)
            if self.rank == 0 and self.history_path.exists():
                self.history_path.unlink()
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        spe = self.data.steps_per_epoch
        sums: dict[str, float] = defaultdict(float)
        n_in_window = 0
        t_start = time.perf_counter()
        t_window = t_start
        last: dict[str, float] = {}
        # disable=None: a bar on terminals only, so CI logs stay readable.
        bar = tqdm(total=cfg.steps, initial=self.step, disable=None if self.progress and self.rank == 0 else True,
                   desc=self.stage, dynamic_ncols=True, leave=False)
        with (self.history_path.open("a", encoding="utf-8") if self.rank == 0 else open(os.devnull, "w")) as history:
            batches = prefetched(lambda step: self.data.batch(*divmod(step, spe)), list(range(self.step, cfg.steps)),
                                 cfg.data_workers, pin=self.device.type == "cuda")
            while self.step < cfg.steps:
                epoch, in_epoch = divmod(self.step, spe)
                ctx = StepContext(step=self.step, total_steps=cfg.steps, steps_per_epoch=spe, epoch=epoch)
                batch = next(batches).to(self.device)
                with autocast(self.device, self.precision):
                    out = (self.model.pretrain_step if self.stage == "pretrain" else self.model.finetune_step)(batch, ctx)
                finite = torch.isfinite(out.total.detach()).to(torch.float64).reshape(1)
                if self.world > 1:   # every process stops together
                    torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
                if not bool(finite):
                    raise TrainingDiverged(f"non-finite loss at step {self.step + 1}: "
                                           f"{ {k: float(v) for k, v in out.losses.items()} }")
                self.scaler.scale(out.total).backward()
                self._average_gradients()
                if cfg.recipe.grad_clip_norm is not None:
                    self.scaler.unscale_(self.optimizer)
                    gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.recipe.grad_clip_norm)
                    sums["stats/grad_norm"] += float(gnorm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                self.model.after_optimizer_step(ctx)
                self.step += 1
                if self.step_hook is not None:
                    self.step_hook(self.step)
                n_in_window += 1
                sums["loss/total"] += float(out.total.detach())
                for k, v in out.losses.items():
                    sums[f"loss/{k}"] += float(v.detach())
                for k, v in out.stats.items():
                    sums[f"stats/{k}"] += float(v)
                if out.sample_flags:
                    self._count_flags(out.sample_flags, batch.index)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    now = time.perf_counter()
                    last = self._mean_over_processes({k: v / n_in_window for k, v in sums.items()})
                    record = {"step": self.step, "epoch": epoch, "lr": lr, **last,
                              "samples_per_s": n_in_window * cfg.batch_size / max(now - t_window, 1e-9)}
                    history.write(json.dumps(record) + "\n")
                    history.flush()
                    losses = {k.split("/")[-1]: f"{v:.3f}" for k, v in last.items() if k.startswith("loss/")}
                    bar.set_postfix(losses)
                    if self.progress and self.rank == 0 and bar.disable:  # no terminal: a line per logged window
                        print(f"{self.stage} step {self.step}/{cfg.steps} lr {lr:.2e} "
                              + " ".join(f"{k} {v}" for k, v in losses.items())
                              + f" ({record['samples_per_s']:.0f} samples/s)", flush=True)
                    sums.clear()
                    n_in_window = 0
                    t_window = now
                bar.update(1)
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
                if self._preemption_requested() and self.step < cfg.steps:
                    history.flush()
                    self.save()
                    bar.close()
                    preemption.hand_over(self.step)
        bar.close()
        self.save()
        wall = time.perf_counter() - t_start
        done = self.step - (resumed_from or 0)
        return TrainSummary(
            steps=self.step, batch_size=cfg.batch_size, samples_seen=self.step * cfg.batch_size,
            epochs=self.step * cfg.batch_size / len(self.data.corpus), wall_s=wall,
            step_s_mean=wall / max(done, 1), precision=self.precision, device=str(self.device),
            resumed_from_step=resumed_from, final={k: v for k, v in last.items() if math.isfinite(v)},
            filters=self.filter_summary())
