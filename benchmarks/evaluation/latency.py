"""Inference latency: what a query costs, per stage, with the cost model the COTS paper argues with.

Every operation is timed on its own, after warm-up, with the device synchronised around each call, at a fixed
batch size; a result has p50/p95/p99 per call and the throughput at p50 (items/s):

- ``encode_image`` / ``encode_text``: a batch through the tower (preprocessing and tokenisation excluded;
  tokenisation is timed as ``tokenize``);
- ``search@N``: one text query's embedding against a pre-encoded gallery of N image embeddings (scores + top-k),
  for every N in the gallery sizes; the gallery is random unit vectors of the model's embedding size (scoring
  cost does not depend on content);
- for models with a re-ranking head: ``rerank_query``: one query's top-k candidates through the cross-encoder;
  ``cross_pair``: a batch of pairs through it, whose pairs/s gives the **exhaustive** single-stream cost
  (every gallery item through the cross-encoder for one query, N / pairs-per-second) — extrapolated, and
  labelled so, because timing 25K passes per query is what the COTS paper argues nobody should do.

Per-query cost of retrieving from a gallery of N (the cost model; gallery encoding is offline):
dual encoder = text encoding of one query + search@N; re-rank = that + rerank_query; exhaustive = text
encoding + N cross-encoder passes. Their ratios stand beside COTS' claimed 10,800x.

Parameters per tower are the parameters an operation's output depends on (those reached by its gradient); FLOPs
per item come from torch.utils.flop_counter (matmul-class ops; elementwise ops are not counted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from vlpbench.benchmarks.runtime import autocast, eval_mode
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel


class LatencyProtocol(StrictModel):
    batch_size: int = Field(32, gt=0, description="Images / texts per encoding call.")
    gallery_sizes: list[int] = Field(default_factory=lambda: [1000, 5000, 25000], min_length=1)
    top_k: int = Field(10, gt=0, description="Candidates a search returns.")
    rerank_k: int = Field(16, gt=0, description="Candidates re-ranked per query (Flickr30K 128, COCO 256).")
    cross_batch: int = Field(64, gt=0, description="Pairs per cross-encoder call when timing pairs/s.")
    warmup: int = Field(3, ge=1, description="Untimed calls per operation, at least.")
    warmup_s: float = Field(0.3, ge=0, description="...and at least this long (caches, allocator, thread pool).")
    repeats: int = Field(20, ge=3, description="Timed calls per operation, at least (p99 of few calls is their max).")
    min_time_s: float = Field(0.5, ge=0, description="...and until this much time is timed, so sub-millisecond "
                                                     "operations get enough calls for a stable p50.")
    threads: int | None = Field(1, ge=1, description="torch intra-op threads while timing (single-stream latency); "
                                                     "None = the process' setting. 1 repeated within 10 % on every "
                                                     "stage on the 2-vCPU dev VM, the process' 2 threads did not.")


def percentiles(seconds: np.ndarray, items: int) -> dict[str, float]:
    """p50/p95/p99/mean in milliseconds per call and items/s at p50."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(ms.mean()),
            "items_per_call": int(items), "throughput_per_s": float(items / (p50 / 1e3)) if p50 > 0 else float("inf"),
            "calls": int(len(ms))}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int, warmup_s: float = 0.0,
               min_time_s: float = 0.0, max_calls: int = 100_000) -> np.ndarray:
    """Seconds per call of fn: after at least `warmup` untimed calls lasting at least `warmup_s`, at least
    `repeats` timed calls covering at least `min_time_s` (capped at max_calls), the device synchronised around
    each call."""
    t_end = time.perf_counter() + warmup_s
    done = 0
    while done < warmup or (time.perf_counter() < t_end and done < max_calls):
        fn()
        done += 1
    _sync(device)
    out: list[float] = []
    total = 0.0
    while len(out) < repeats or (total < min_time_s and len(out) < max_calls):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
        total += out[-1]
    return np.asarray(out)


def _used_params(fn: Callable[[], torch.Tensor], model: torch.nn.Module) -> int:
    """Parameters the output of fn depends on (reached by its gradient)."""
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = fn()
        out.float().sum().backward()
    n = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return n


def _flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


_GALLERIES: dict[tuple[int, int, str, int], torch.Tensor] = {}


def _gallery(n: int, dim: int, device: torch.device, seed: int) -> torch.Tensor:
    """A pre-encoded gallery of n random unit vectors, allocated once per process (as a deployed index is) so
    repeated measurements search the same memory."""
    key = (n, dim, str(device), seed)
    if key not in _GALLERIES:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + n)
        _GALLERIES[key] = F.normalize(torch.randn(n, dim, generator=gen), dim=-1).to(device)
    return _GALLERIES[key]


def measure_latency(model: VLPModel, texts: list[str], protocol: LatencyProtocol, device: torch.device,
                    precision: str, seed: int = 0) -> dict[str, Any]:
    """{"timings": {op: percentiles}, "per_query_ms": {...}, "ratios": {...}, "params": {...}, "flops": {...}}.
    With protocol.threads, torch runs with that many intra-op threads during the measurement (then restored)."""
    before = torch.get_num_threads()
    if protocol.threads is not None:
        torch.set_num_threads(protocol.threads)
    try:
        return _measure(model, texts, protocol, device, precision, seed)
    finally:
        torch.set_num_threads(before)


def _measure(model: VLPModel, texts: list[str], protocol: LatencyProtocol, device: torch.device,
             precision: str, seed: int) -> dict[str, Any]:
    if len(texts) < protocol.batch_size:
        raise ValueError(f"need at least {protocol.batch_size} texts for a text batch, got {len(texts)}")
    gen = torch.Generator().manual_seed(seed)
    res = int(model.preprocess.config.resolution)
    raw = torch.randint(0, 256, (protocol.batch_size, res, res, 3), dtype=torch.uint8, generator=gen)
    images = model.preprocess.eval(raw.numpy()).to(device)
    batch_texts = texts[:protocol.batch_size]
    tokens = model.tokenize(batch_texts).trimmed().to(device)
    one_text = model.tokenize(batch_texts[:1]).trimmed().to(device)
    def timed(fn: Callable[[], Any], items: int) -> dict[str, float]:
        return percentiles(time_calls(fn, device, protocol.warmup, protocol.repeats, protocol.warmup_s,
                                      protocol.min_time_s), items)

    timings: dict[str, dict[str, float]] = {}
    params: dict[str, int] = {}
    flops: dict[str, int] = {}
    with eval_mode(model):
        def enc_img(x: torch.Tensor = images) -> torch.Tensor:
            with autocast(device, precision):
                return model.encode_image(x)

        def enc_txt(t: Any = tokens) -> torch.Tensor:
            with autocast(device, precision):
                return model.encode_text(t)

        with torch.inference_mode():
            timings["encode_image"] = timed(enc_img, protocol.batch_size)
            timings["encode_text"] = timed(enc_txt, protocol.batch_size)
            timings["encode_text_1"] = timed(lambda: enc_txt(one_text), 1)
            timings["tokenize"] = timed(lambda: model.tokenize(batch_texts), protocol.batch_size)
            query = enc_txt(one_text).float()
            dim = query.shape[-1]
            for n in protocol.gallery_sizes:
                gallery = _gallery(n, dim, device, seed)
                k = min(protocol.top_k, n)
                timings[f"search@{n}"] = timed(lambda: model.similarity(gallery, query).squeeze(-1).topk(k), 1)
            if model.supports_rerank:
                feats = model.rerank_image_features(images[:1])
                txt_feats = model.rerank_text_features(one_text)
                img_b = feats.expand(protocol.cross_batch, *feats.shape[1:]).contiguous()
                txt_b = {key: v.expand(protocol.cross_batch, *v.shape[1:]).contiguous() for key, v in txt_feats.items()}
                img_k = feats.expand(protocol.rerank_k, *feats.shape[1:]).contiguous()
                txt_k = {key: v.expand(protocol.rerank_k, *v.shape[1:]).contiguous() for key, v in txt_feats.items()}

                def cross(img: torch.Tensor, txt: Mapping[str, torch.Tensor]) -> torch.Tensor:
                    with autocast(device, precision):
                        return model.rerank_score(img, txt)

                timings["cross_pair"] = timed(lambda: cross(img_b, txt_b), protocol.cross_batch)
                timings["rerank_query"] = timed(lambda: cross(img_k, txt_k), protocol.rerank_k)
        params["image_tower"] = _used_params(lambda: model.encode_image(images[:1]), model)
        params["text_tower"] = _used_params(lambda: model.encode_text(one_text), model)
        flops["image_per_item"] = _flops(lambda: model.encode_image(images[:1]))
        flops["text_per_item"] = _flops(lambda: model.encode_text(one_text))
        if model.supports_rerank:
            f_img = model.rerank_image_features(images[:1]).detach()
            f_txt = {key: v.detach() for key, v in model.rerank_text_features(one_text).items()}
            params["cross_encoder"] = _used_params(lambda: model.rerank_score(f_img, f_txt), model)
            flops["cross_per_pair"] = _flops(lambda: model.rerank_score(f_img, f_txt))
    params["total"] = sum(p.numel() for p in model.parameters())
    per_query, ratios = cost_model(timings, protocol)
    return {"timings": timings, "per_query_ms": per_query, "ratios": ratios, "params": params, "flops": flops}


def latency_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """measure_latency's nested result as flat metric names: '<op>/p50_ms', 'per_query_ms/<design>@N', ..."""
    out = {f"{op}/{k}": float(v) for op, t in result["timings"].items() for k, v in t.items()}
    for group in ("per_query_ms", "ratios", "params", "flops"):
        out.update({f"{group}/{k}": float(v) for k, v in result[group].items()})
    return out


def p50_changes(first: Mapping[str, float], second: Mapping[str, float]) -> dict[str, float]:
    """How far each operation's p50 moved between two measurements (relative; operations timed at 0 left out)."""
    return {k.split("/")[0]: abs(second[k] / first[k] - 1) for k in first if k.endswith("/p50_ms") and first[k] > 0}


def time_models(models: Mapping[str, Callable[[], VLPModel]], texts: list[str], protocol: LatencyProtocol,
                device: torch.device, precision: str, *, twice: bool = False,
                on_model: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """{name: {"metrics": latency_metrics}} for each model in turn, built by its factory when its turn comes. A
    process's first measurement runs slow, so an untimed one comes before the first model's; with `twice` each model
    is measured twice back to back and its entry adds "second_run" and "p50_relative_change" (repeatability).
    on_model(name, entry) is called as each model is done."""
    out: dict[str, dict[str, Any]] = {}
    for name, build in models.items():
        model = build()
        if not out:   # process warm-up
            measure_latency(model, texts, protocol, device, precision)
        runs = [latency_metrics(measure_latency(model, texts, protocol, device, precision))
                for _ in range(2 if twice else 1)]
        entry: dict[str, Any] = {"metrics": runs[0]}
        if twice:
            entry["second_run"] = runs[1]
            entry["p50_relative_change"] = p50_changes(runs[0], runs[1])
        out[name] = entry
        if on_model is not None:
            on_model(name, entry)
    return out


def cost_model(timings: Mapping[str, Mapping[str, float]], protocol: LatencyProtocol
               ) -> tuple[dict[str, float], dict[str, float]]:
    """Per-query milliseconds of each retrieval design at each gallery size, and their ratios (p50s)."""
    text_ms = timings["encode_text_1"]["p50_ms"]
    per_query: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for n in protocol.gallery_sizes:
        dual = text_ms + timings[f"search@{n}"]["p50_ms"]
        per_query[f"dual_encoder@{n}"] = dual
        if "cross_pair" in timings:
            pair_ms = timings["cross_pair"]["p50_ms"] / timings["cross_pair"]["items_per_call"]
            rerank = dual + timings["rerank_query"]["p50_ms"]
            exhaustive = text_ms + n * pair_ms
            per_query[f"rerank_top{protocol.rerank_k}@{n}"] = rerank
            per_query[f"exhaustive_extrapolated@{n}"] = exhaustive
            ratios[f"exhaustive_over_dual@{n}"] = exhaustive / dual
            ratios[f"rerank_over_dual@{n}"] = rerank / dual
            ratios[f"exhaustive_over_rerank@{n}"] = exhaustive / rerank
    return per_query, ratios
