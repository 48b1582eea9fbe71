"""Harness overhead of zero-shot evaluation — the end-to-end evaluation (image decoding and
preprocessing, tokenisation, encoding, scoring, ranks and metrics: `evaluate_image_text`, as `vlpbench run` calls
it) against the model's forward passes alone on the same inputs (images already decoded and normalised, captions
already tokenised, same batch size). Target: end-to-end ≤ 1.15 × forward.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from vlpbench.benchmarks.perf.context import needs_gpu, open_context
from vlpbench.benchmarks.runtime import autocast, eval_mode
from vlpbench.benchmarks.suite import Suite


def forward_only(model: Any, pixels: list[torch.Tensor], tokens: list[Any], device: torch.device,
                 precision: str) -> float:
    """Seconds of encode_image / encode_text over prepared batches (nothing else)."""
    t0 = time.perf_counter()
    for x in pixels:
        with autocast(device, precision):
            model.encode_image(x)
    for t in tokens:
        with autocast(device, precision):
            model.encode_text(t)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def run(methods: list[str] | None = None, size: str = "tiny", repeats: int = 3, batch_size: int = 256,
        suite: Suite | None = None) -> dict[str, Any]:
    ctx = open_context(suite)
    device, precision = ctx.device, ctx.precision
    if needs_gpu(size, device):
        return {"size": size, "skipped": f"{size} is measured on a GPU; this device is {device.type}"}
    split = ctx.dataset.retrieval_split(ctx.suite.retrieval.split)
    protocol = RetrievalProtocol(batch_size=batch_size)
    out: dict[str, Any] = {"split": f"{split.ref.dataset}/{split.ref.split}", "n_images": split.n_images,
                           "n_texts": split.n_texts, "batch_size": batch_size, "repeats": repeats,
                           "threads": torch.get_num_threads(), "precision": precision, "methods": {}}
    for name in methods or ["clip"]:
        model = ctx.model(name, size)
        texts = list(split.texts)
        with eval_mode(model), torch.no_grad():
            pixels = [model.preprocess.eval(split.images.get(np.arange(s, min(s + batch_size, split.n_images))))
                      .to(device) for s in range(0, split.n_images, batch_size)]
            tokens = [model.tokenize(texts[s:s + batch_size]).trimmed().to(device)
                      for s in range(0, len(texts), batch_size)]
            evaluate_image_text(model, split, protocol, device, precision)      # warm-up (caches, allocator)
            e2e, fwd, parts = [], [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                outcome = evaluate_image_text(model, split, protocol, device, precision)
                e2e.append(time.perf_counter() - t0)
                parts.append(outcome.timings)
                fwd.append(forward_only(model, pixels, tokens, device, precision))
        e, f = float(np.median(e2e)), float(np.median(fwd))
        out["methods"][name] = {"end_to_end_s": e2e, "forward_s": fwd, "end_to_end_s_median": e,
                                "forward_s_median": f, "overhead_ratio": e / f, "stages_s": parts[-1]}
    worst = max(m["overhead_ratio"] for m in out["methods"].values())
    out["overhead_ratio_max"] = worst
    out["targets"] = {"end-to-end <= 1.15 x forward": worst <= 1.15}
    return out
