"""Re-ranking throughput — cross-encoder pairs per second, candidates of many queries batched
into one forward (the harness: `RetrievalProtocol.rerank_batch` pairs per call) against one query's k candidates
per forward (the loop of ALBEF/TCL's evaluation code).

Both sides run the harness' own re-ranker (`benchmarks.evaluation.retrieval._Reranker`) on the same queries of a
real split: the built-in test split's images and captions, each query's top-k ITC candidates from the model.
Only the cross-encoder scoring is timed (the re-ranker's own clock); candidate features are computed once per
side before. The scores of both sides are compared first: batching must not change what is computed.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, _Reranker, encode_images, encode_texts
from vlpbench.benchmarks.perf.context import needs_gpu, open_context
from vlpbench.benchmarks.runtime import eval_mode
from vlpbench.benchmarks.suite import Suite


def run(method: str = "tcl", size: str = "tiny", n_queries: int = 256, k: int = 16, rerank_batch: int = 512,
        repeats: int = 3, suite: Suite | None = None) -> dict[str, Any]:
    """pairs/s batched across queries vs one query per forward; text→image queries of the suite's test split."""
    ctx = open_context(suite)
    device, precision = ctx.device, ctx.precision
    if needs_gpu(size, device):
        return {"size": size, "skipped": f"{size} is measured on a GPU; this device is {device.type}"}
    model = ctx.model(method, size)
    if not model.supports_rerank:
        raise ValueError(f"{method} has no re-ranking head; choose a fusion model (tcl)")
    split = ctx.dataset.retrieval_split(ctx.suite.retrieval.split)
    texts = list(split.texts)
    n_queries = min(n_queries, len(texts))
    out: dict[str, Any] = {"method": method, "size": size, "queries": n_queries, "k": k, "pairs": n_queries * k,
                           "n_images": split.n_images, "threads": torch.get_num_threads(), "precision": precision,
                           "repeats": repeats}
    with eval_mode(model), torch.no_grad():
        img = encode_images(model, split.images, 256, device, precision)
        txt = encode_texts(model, texts[:n_queries], 256, device, precision)
        itc_rows = model.similarity(img, txt).t()          # (queries, images)
        sides = {"batched": rerank_batch, "per_query": k}
        rerankers = {name: _Reranker(model, split, texts, RetrievalProtocol(scoring="itm", rerank_k=k,
                                                                            rerank_batch=b), device, precision)
                     for name, b in sides.items()}
        rows = torch.arange(n_queries)
        scores = {name: r.rerank_rows(itc_rows, rows, rows_are_images=False) for name, r in rerankers.items()}
        finite = torch.isfinite(scores["batched"])
        diff = float((scores["batched"][finite] - scores["per_query"][finite]).abs().max())
        if not torch.equal(finite, torch.isfinite(scores["per_query"])) or diff > 1e-4:
            raise AssertionError(f"batched and per-query re-ranking disagree (max |diff| {diff:.2e})")
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(repeats):                     # alternated, so drifts of the machine hit both sides
            for name, r in rerankers.items():
                r.seconds = 0.0
                t0 = time.perf_counter()
                r.rerank_rows(itc_rows, rows, rows_are_images=False)
                seconds[name].append(min(r.seconds, time.perf_counter() - t0))
    for name, b in sides.items():
        med = float(np.median(seconds[name]))
        out[name] = {"pairs_per_forward": b, "seconds": seconds[name], "seconds_median": med,
                     "pairs_per_s": n_queries * k / med}
    out["max_abs_score_diff"] = diff
    out["speedup"] = out["batched"]["pairs_per_s"] / out["per_query"]["pairs_per_s"]
    out["targets"] = {"speedup >= 2": out["speedup"] >= 2.0}
    return out
