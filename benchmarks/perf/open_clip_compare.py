"""Our CLIP against open_clip's at the same architecture and batch.

open_clip (installed with the dev extra) builds its own `CLIP` from a vision and a text config; we give it ours:
the ViT's width/depth/heads/patch/resolution, the causal text transformer's width/depth/heads/context length and
our tokenizer's vocabulary, the joint dimension, QuickGELU, and pooling at our end-of-text token ([SEP], open_clip's
`pool_type="eos"`). Parameter counts are reported for both and must agree within 1 % — otherwise the comparison
would not be at the same architecture.

Both sides get the same inputs (random pixels, the built-in captions tokenised by our tokenizer and padded to the
context length), the same plain AdamW, and one thread setting; a training step is forward + symmetric InfoNCE +
backward + optimizer step + logit-scale clamp (ours: `pretrain_step` and `after_optimizer_step`; open_clip:
`model(images, text)` and `open_clip.ClipLoss`, the clamp of its training loop). Encoding throughput is
`encode_image` / `encode_text` on one batch under inference mode. The two sides alternate `repeats` times so that
drifts of the machine hit both; reported as open_clip time / our time (≥ 1.0: ours at least as fast).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlpbench.benchmarks.evaluation.latency import _sync
from vlpbench.benchmarks.perf.context import needs_gpu, open_context
from vlpbench.benchmarks.runtime import autocast
from vlpbench.benchmarks.suite import Suite
from vlpbench.methods import PretrainBatch, StepContext


def open_clip_twin(model: Any) -> nn.Module:
    """open_clip's CLIP with our CLIP's architecture (untrained)."""
    from open_clip.model import CLIP as OpenCLIP
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    cfg, tok = model.config, model.tokenizer
    vision = CLIPVisionCfg(layers=cfg.vision.depth, width=cfg.vision.width,
                           head_width=cfg.vision.width // cfg.vision.heads, mlp_ratio=cfg.vision.mlp_ratio,
                           patch_size=cfg.vision.patch_size, image_size=cfg.vision.image_size,
                           no_ln_pre=not cfg.vision.pre_norm)
    text = CLIPTextCfg(context_length=cfg.text.max_length, vocab_size=tok.vocab_size, width=cfg.text.width,
                       heads=cfg.text.heads, layers=cfg.text.depth, mlp_ratio=cfg.text.mlp_ratio,
                       pad_id=tok.pad_id, eos_id=tok.sep_id, pool_type="eos")
    return OpenCLIP(embed_dim=cfg.embed_dim, vision_cfg=vision, text_cfg=text,
                    quick_gelu=cfg.vision.activation == "quick_gelu")


def _median_time(fn: Callable[[], Any], calls: int, device: torch.device | None = None) -> float:
    """Median wall time of fn over `calls` calls; on CUDA each call is synchronised, so the time is the GPU's."""
    times = []
    for _ in range(calls):
        if device is not None:
            _sync(device)
        t0 = time.perf_counter()
        fn()
        if device is not None:
            _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(batch_size: int = 256, steps: int = 3, repeats: int = 3, size: str = "tiny",
        suite: Suite | None = None) -> dict[str, Any]:
    import open_clip

    ctx = open_context(suite)
    device, precision = ctx.device, ctx.precision
    if needs_gpu(size, device):
        return {"size": size, "skipped": f"{size} is compared on a GPU; this device is {device.type}"}
    ours = ctx.model("clip", size).cpu()
    theirs = open_clip_twin(ours)
    ours, theirs = ours.to(device), theirs.to(device)
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    if abs(n_ours / n_theirs - 1) > 0.01:
        raise AssertionError(f"not the same architecture: {n_ours:,} parameters (ours) vs {n_theirs:,} (open_clip)")
    res = ours.config.vision.image_size
    images = torch.randn(batch_size, 3, res, res, generator=torch.Generator().manual_seed(0)).to(device)
    captions = list(ctx.dataset.retrieval_split("train").texts)[:batch_size]
    tokens = ours.tokenize(captions).to(device)         # padded to the context length, [SEP] kept
    batch = PretrainBatch(images=images, text=tokens, index=torch.arange(batch_size, device=device))
    ctx = StepContext(step=0, total_steps=1, steps_per_epoch=1, epoch=0)
    loss_fn = open_clip.ClipLoss()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_theirs = torch.optim.AdamW(theirs.parameters(), lr=1e-4)

    def step_ours() -> None:
        with autocast(device, precision):                 # both sides under the same autocast
            out = ours.pretrain_step(batch, ctx)
        out.total.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        ours.after_optimizer_step(ctx)

    def step_theirs() -> None:
        with autocast(device, precision):
            img, txt, scale = theirs(images, tokens.input_ids)
            loss = loss_fn(img, txt, scale)
        loss.backward()
        opt_theirs.step()
        opt_theirs.zero_grad(set_to_none=True)
        with torch.no_grad():
            theirs.logit_scale.clamp_(0, math.log(100))

    ours.train()
    theirs.train()
    step_ours()                                          # warm-up: allocator, thread pool, optimizer state
    step_theirs()
    train: dict[str, list[float]] = {"ours": [], "open_clip": []}
    for _ in range(repeats):
        train["ours"].append(_median_time(step_ours, steps, device))
        train["open_clip"].append(_median_time(step_theirs, steps, device))
    ours.eval()
    theirs.eval()
    enc: dict[str, dict[str, list[float]]] = {k: {"ours": [], "open_clip": []} for k in ("image", "text")}
    with torch.inference_mode():
        fns = {"image": {"ours": lambda: ours.encode_image(images), "open_clip": lambda: theirs.encode_image(images)},
               "text": {"ours": lambda: ours.encode_text(tokens),
                        "open_clip": lambda: theirs.encode_text(tokens.input_ids)}}
        for kind in fns:
            for fn in fns[kind].values():
                fn()
        for _ in range(repeats):
            for kind in fns:
                for side, fn in fns[kind].items():
                    with autocast(device, precision):
                        enc[kind][side].append(_median_time(fn, steps, device))
    out: dict[str, Any] = {"open_clip_version": open_clip.__version__, "size": size, "batch_size": batch_size,
                           "text_length": int(tokens.input_ids.shape[1]), "threads": torch.get_num_threads(),
                           "params": {"ours": n_ours, "open_clip": n_theirs}, "steps_per_repeat": steps,
                           "device": str(device), "precision": precision,
                           "repeats": repeats}
    for name, times in (("train_step", train), ("encode_image", enc["image"]), ("encode_text", enc["text"])):
        med = {side: statistics.median(t) for side, t in times.items()}
        out[name] = {"seconds": times, "seconds_median": med,
                     "samples_per_s": {side: batch_size / m for side, m in med.items()},
                     "ratio_open_clip_over_ours": med["open_clip"] / med["ours"]}
    out["targets"] = {f"{k}: ours at least as fast (ratio >= 1.0)": out[k]["ratio_open_clip_over_ours"] >= 1.0
                      for k in ("train_step", "encode_image", "encode_text")}
    return out
