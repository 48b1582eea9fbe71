"""A hand-made suite folder for report tests: records, per-query ranks and histories, no training.

Two CLIP seeds and one TCL model (ITC and top-k ITM re-ranking), a latency record per job, and a
CLIP run at another resolution (a different protocol that must never be merged with the others). Metrics are
computed from the saved ranks, so intervals, exports and tables can be checked against numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vlpbench.reports.store import EvaluationRecord, PretrainRecord, save_ranks, write_record

N_IMAGES, CAPTIONS = 40, 5
GALLERIES = [1000, 5000, 25000]
ENV = {"git_commit": "abc1234", "git_dirty": False, "device": "cpu", "device_name": "Test CPU", "cpu_count": 2,
       "torch_threads": 2, "torch": "2.14.1", "cuda": None, "python": "3.11.7"}
SPLIT = {"dataset": "builtin", "split": "test", "fingerprint": "f" * 64, "dataset_fingerprint": "d" * 64}


def ranks_for(seed: int, quality: float) -> dict[str, np.ndarray]:
    """Per-query 1-based ranks; higher quality puts more ground truths near the top."""
    rng = np.random.default_rng(seed)
    i2t = np.minimum(1 + rng.geometric(quality, N_IMAGES) - 1, N_IMAGES * CAPTIONS).astype(np.int64)
    t2i = np.minimum(1 + rng.geometric(quality, N_IMAGES * CAPTIONS) - 1, N_IMAGES).astype(np.int64)
    return {"i2t": i2t, "t2i": t2i}


def metrics_of(ranks: dict[str, np.ndarray]) -> dict[str, float]:
    m = {f"{d}_R{k}": float(100 * np.mean(ranks[d] <= k)) for d in ("i2t", "t2i") for k in (1, 5, 10)}
    m["rsum"] = sum(m.values())
    m["i2t_medr"], m["t2i_medr"] = float(np.median(ranks["i2t"])), float(np.median(ranks["t2i"]))
    return m


def _protocol(scoring: str = "itc", k: int | None = None, resolution: int = 64) -> dict[str, Any]:
    return {"scoring": scoring, "rerank_k": k, "resolution": resolution, "text_max_length": 32, "precision": "fp32",
            "setting": "zero-shot", "split": "builtin/test", "lineage": "pretrained on builtin/pretrain",
            "n_images": N_IMAGES, "n_texts": N_IMAGES * CAPTIONS, "tie_policy": "pessimistic"}


def _common(method: str, seed: int, job: str) -> dict[str, Any]:
    return {"suite": "fixture", "job": job, "method": method, "size": "tiny", "seed": seed, "config": {},
            "environment": ENV, "card": {}}


def _eval(job_dir: Path, rec: EvaluationRecord, ranks: dict[str, np.ndarray] | None) -> None:
    folder = job_dir / "eval" / rec.benchmark
    if ranks is not None:
        save_ranks(folder / "ranks.npz", **ranks)
    write_record(folder / "results.json", rec)


def _latency(dual_ms: float, rerank_ms: float | None) -> dict[str, float]:
    m: dict[str, float] = {}
    for i, n in enumerate(GALLERIES):
        m[f"search@{n}/p50_ms"] = 0.05 * (i + 1)
        m[f"per_query_ms/dual_encoder@{n}"] = dual_ms * (1 + i)
        if rerank_ms is not None:
            m[f"per_query_ms/rerank_top16@{n}"] = rerank_ms * (1 + i)
            m[f"per_query_ms/exhaustive_extrapolated@{n}"] = rerank_ms * 100 * (1 + i) * n / 1000
    m["encode_image/p50_ms"], m["encode_text/p50_ms"] = 3.0, 1.0
    return m


def _pretrain(job_dir: Path, common: dict[str, Any]) -> None:
    seed = common["seed"]
    history = [{"step": s, "epoch": 0, "loss/total": 5.0 / s ** 0.3 + seed, "loss/itc": 4.0 / s ** 0.3}
               for s in range(5, 55, 5)]
    (job_dir / "model").mkdir(parents=True)
    (job_dir / "model" / "model_config.json").write_text("{}\n")
    (job_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    write_record(job_dir / "pretrain.json", PretrainRecord(
        **common, job_fingerprint=f"fp-{common['job']}", dataset={**SPLIT, "split": "pretrain"}, model_dir="model",
        summary={"steps": 50, "batch_size": 32, "epochs": 1.0, "wall_s": 10.0, "step_s_mean": 0.2,
                 "precision": "fp32", "device": "cpu", "final": {"loss/total": history[-1]["loss/total"]}}))


def make_suite(root: Path) -> Path:
    """Write the fixture suite folder under root; returns it."""
    suite_dir = root / "fixture"
    jobs = [("clip", 0, 0.55, 1.0, None), ("clip", 1, 0.5, 1.2, None), ("tcl", 0, 0.35, 2.0, 9.0)]
    for method, seed, quality, dual_ms, rerank_ms in jobs:
        job = f"{method}-tiny-s{seed}"
        job_dir = suite_dir / "jobs" / job
        common = _common(method, seed, job)
        _pretrain(job_dir, common)
        ranks = ranks_for(100 + seed + 10 * len(method), quality)
        _eval(job_dir, EvaluationRecord(**common, benchmark="zeroshot_retrieval", dataset=SPLIT,
                                        protocol=_protocol(), metrics=metrics_of(ranks), lineage=[]), ranks)
        if rerank_ms is not None:
            better = ranks_for(7, quality + 0.2)
            _eval(job_dir, EvaluationRecord(**common, benchmark="zeroshot_retrieval_rerank", dataset=SPLIT,
                                            protocol=_protocol("itm", 16), metrics=metrics_of(better), lineage=[]),
                  better)
        _eval(job_dir, EvaluationRecord(**common, benchmark="latency", dataset=SPLIT, ranks_file=None,
                                        protocol={"gallery_sizes": GALLERIES, "rerank_k": 16, "precision": "fp32"},
                                        metrics=_latency(dual_ms, rerank_ms), lineage=[]), None)
    # CLIP evaluated at another resolution (a suite variant): its own protocol, so its own table and summary
    job_dir = suite_dir / "jobs" / "clip-r96-tiny-s0"
    ranks = ranks_for(3, 0.3)
    common = {**_common("clip", 0, "clip-r96-tiny-s0"), "variant": "clip-r96"}
    _pretrain(job_dir, common)
    rec = EvaluationRecord(**common,
                           benchmark="zeroshot_retrieval", dataset=SPLIT, protocol=_protocol(resolution=96),
                           metrics=metrics_of(ranks), lineage=[])
    _eval(job_dir, rec, ranks)
    return suite_dir
