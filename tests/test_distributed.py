"""Distributed data parallel on CPU (gloo, 2 processes) against one process holding the global batch: the same
losses step by step, the same weights, the same retrieval metrics; queues filled from every process."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlpbench.benchmarks.job import expand_jobs
from vlpbench.benchmarks.pipeline import run_job
from vlpbench.benchmarks.suite import load_suite
from vlpbench.methods import load_pretrained
from vlpbench.methods.momentum import FeatureQueues
from vlpbench.reports.store import read_evaluation, read_pretrain
from tests.conftest import MICRO_CLIP, SMALL_WORLD
from tests.test_tcl import MICRO_TCL

SUITE: dict[str, Any] = {
    "name": "ddp", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
    "benchmarks": ["zeroshot_retrieval"],
    "train": {"tiny": {"steps": 6, "batch_size": 32, "log_every": 1, "checkpoint_every": 3}},
    "method_overrides": {"clip": MICRO_CLIP},
}


def _init(rank: int, world: int, workdir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{workdir}/store", rank=rank, world_size=world)


def _pretrain_worker(rank: int, world: int, workdir: str, cache: str) -> None:
    os.environ["VLPBENCH_CACHE"] = cache
    _init(rank, world, workdir)
    try:
        job = expand_jobs(load_suite(None, SUITE))[0]
        run_job(job, Path(workdir) / "suite", progress=False, benchmarks=(), log=lambda _: None)
    finally:
        dist.destroy_process_group()


def _history(job_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (job_dir / "history.jsonl").read_text().splitlines()]


def test_two_gloo_processes_train_as_one_process_on_the_global_batch(tmp_path: Path, cache_root: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLPBENCH_CACHE", str(cache_root))
    suite = load_suite(None, SUITE)
    job = expand_jobs(suite)[0]
    one = run_job(job, tmp_path / "one", progress=False, log=lambda _: None)       # pretrain + zero-shot, 1 process
    mp.spawn(_pretrain_worker, args=(2, str(tmp_path), str(cache_root)), nprocs=2, join=True)
    two_dir = tmp_path / "suite" / "jobs" / job.name

    h1, h2 = _history(one.job_dir), _history(two_dir)
    assert [h["step"] for h in h2] == list(range(1, 7))
    for a, b in zip(h1, h2):      # the logged loss is the mean over processes = the global-batch loss
        assert b["loss/total"] == pytest.approx(a["loss/total"], rel=1e-5, abs=1e-6)
        assert b["stats/logit_scale"] == pytest.approx(a["stats/logit_scale"], rel=1e-6)
        # (stats/itc_acc is image->text only when the columns are global: contrastive_accuracy's docstring)
    m1, _ = load_pretrained(one.job_dir / "model")
    m2, _ = load_pretrained(two_dir / "model")
    for (name, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-5, msg=name)
    pre = read_pretrain(two_dir / "pretrain.json")
    assert pre.summary["samples_seen"] == 6 * 32 and pre.summary["batch_size"] == 32

    # evaluating the two-process model (one process) gives the one-process metrics
    two = run_job(job, tmp_path / "suite", progress=False, log=lambda _: None, require_pretrained=True)
    assert two.reused == ["pretrain"]
    ev1 = read_evaluation(one.results["zeroshot_retrieval"])
    ev2 = read_evaluation(two.results["zeroshot_retrieval"])
    for k in ("i2t_R1", "i2t_R5", "t2i_R1", "t2i_R5", "rsum"):
        assert ev2.metrics[k] == pytest.approx(ev1.metrics[k], abs=0.2), k


def _resume_worker(rank: int, world: int, workdir: str, cache: str, stop_at: int | None, resume: str | None) -> None:
    """Pretrain the 6-step job on 2 processes; stop_at: interrupt the run right after that step's checkpoint."""
    import vlpbench.benchmarks.pipeline as pipeline

    os.environ["VLPBENCH_CACHE"] = cache
    _init(rank, world, f"{workdir}/{stop_at or 'end'}-{resume}")
    try:
        if stop_at is not None:
            pipeline.Trainer = _stop_after(pipeline.Trainer, stop_at)   # type: ignore[misc]
        job = expand_jobs(load_suite(None, SUITE))[0]
        run_job(job, Path(workdir) / "suite", progress=False, benchmarks=(), log=lambda _: None, resume=resume)
    except _Stopped:
        pass
    finally:
        dist.destroy_process_group()


class _Stopped(Exception):
    pass


def _stop_after(cls: Any, steps: int) -> Any:
    class Stopping(cls):  # type: ignore[misc, valid-type]
        def save(self) -> Any:
            path = super().save()
            if self.step >= steps:
                raise _Stopped
            return path
    return Stopping


@pytest.mark.integration   # multi-process: make test-integration (CI)
def test_a_two_process_run_resumes_exactly_from_its_checkpoint(tmp_path: Path, cache_root: Path) -> None:
    """Interrupted after the step-3 checkpoint, resumed with 'latest': the same final weights as uninterrupted."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for d in (straight / "end-None", resumed / "3-None", resumed / "end-latest"):
        d.mkdir(parents=True)
    mp.spawn(_resume_worker, args=(2, str(straight), str(cache_root), None, None), nprocs=2, join=True)
    mp.spawn(_resume_worker, args=(2, str(resumed), str(cache_root), 3, None), nprocs=2, join=True)
    job_dir = resumed / "suite" / "jobs" / "clip-tiny-s0"
    assert not (job_dir / "pretrain.json").exists() and (job_dir / "checkpoints" / "step_00000003.pt").is_file()
    mp.spawn(_resume_worker, args=(2, str(resumed), str(cache_root), None, "latest"), nprocs=2, join=True)
    assert read_pretrain(job_dir / "pretrain.json").summary["resumed_from_step"] == 3
    a, _ = load_pretrained(straight / "suite" / "jobs" / "clip-tiny-s0" / "model")
    b, _ = load_pretrained(job_dir / "model")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def _queue_worker(rank: int, world: int, workdir: str) -> None:
    _init(rank, world, workdir)
    try:
        rows = torch.load(Path(workdir) / "rows.pt", weights_only=True)
        n = 6 // world
        q = FeatureQueues(16, {"image": 4, "ids": 0}, fill={"ids": -1.0}, dtype={"ids": torch.long},
                          generator=torch.Generator().manual_seed(0))
        for step in range(3):   # three steps of a global batch of 6, three rows per process
            sl = slice(step * 6 + rank * n, step * 6 + (rank + 1) * n)
            q.enqueue(image=rows["image"][sl], ids=rows["ids"][sl])
        torch.save({"image": q.get("image"), "ids": q.get("ids"), "ptr": int(q.ptr)}, Path(workdir) / f"q{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_momentum_queues_are_filled_from_every_process(tmp_path: Path) -> None:
    rows = {"image": F.normalize(torch.randn(18, 4), dim=-1), "ids": torch.arange(18)}
    torch.save(rows, tmp_path / "rows.pt")
    mp.spawn(_queue_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single = FeatureQueues(16, {"image": 4, "ids": 0}, fill={"ids": -1.0}, dtype={"ids": torch.long},
                           generator=torch.Generator().manual_seed(0))
    for step in range(3):
        single.enqueue(image=rows["image"][step * 6:(step + 1) * 6], ids=rows["ids"][step * 6:(step + 1) * 6])
    for r in range(2):
        got = torch.load(tmp_path / f"q{r}.pt", weights_only=True)
        assert torch.equal(got["ids"], single.get("ids")) and got["ptr"] == int(single.ptr) == 2
        assert torch.equal(got["image"], single.get("image"))
    assert single.get("ids").tolist()[:2] == [16, 17]     # wrapped around: the oldest rows were overwritten


def _eval_worker(rank: int, world: int, workdir: str, method: str, scoring: str) -> None:
    from vlpbench.benchmarks.data import open_dataset
    from vlpbench.benchmarks.evaluation.retrieval import evaluate_image_text
    from vlpbench.methods import TextTokenizer, create_method

    _init(rank, world, f"{workdir}/{method}-{world}")
    try:
        tok = TextTokenizer.from_dir(Path(workdir) / "tokenizer")
        model = create_method(method, "tiny", tokenizer=tok, overrides=_EVAL_OVERRIDES[method])
        model.load_state_dict(torch.load(Path(workdir) / f"{method}.pt", weights_only=True))
        split = open_dataset("builtin", options=SMALL_WORLD, cache_root=Path(workdir) / "cache").retrieval_split("test")
        out = evaluate_image_text(model, split, _protocol(scoring), torch.device("cpu"), "fp32")
        torch.save({"i2t": torch.from_numpy(out.i2t_ranks), "t2i": torch.from_numpy(out.t2i_ranks),
                    "metrics": out.metrics}, Path(workdir) / f"{method}-{world}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _protocol(scoring: str) -> Any:
    from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol

    # small batches, chunks and tiles: the 100 images and ~530 captions make uneven blocks over the processes
    return RetrievalProtocol(scoring=scoring, rerank_k=10 if scoring != "itc" else None, batch_size=16, chunk=48,
                             text_tile=100,
                             rerank_batch=64)


_EVAL_OVERRIDES: dict[str, dict[str, Any]] = {"clip": MICRO_CLIP, "tcl": MICRO_TCL}


@pytest.mark.parametrize(("method", "scoring", "world"), [("clip", "itc", 3), ("tcl", "itm", 2)])
def test_sharded_evaluation_gives_the_one_process_ranks(method: str, scoring: str, world: int, tmp_path: Path,
                                                        cache_root: Path, tokenizer: Any, small_world: Any) -> None:
    """Each process encodes a block of whole batches and ranks a block of whole query chunks (TCL re-ranks its
    queries' top-k with every candidate's features): gathered, the ranks are exactly the one-process ranks."""
    from vlpbench.benchmarks.evaluation.retrieval import evaluate_image_text
    from vlpbench.methods import create_method

    torch.manual_seed(0)
    model = create_method(method, "tiny", tokenizer=tokenizer, overrides=_EVAL_OVERRIDES[method])
    torch.save(model.state_dict(), tmp_path / f"{method}.pt")
    tokenizer.save(tmp_path / "tokenizer")
    (tmp_path / "cache").symlink_to(cache_root)
    (tmp_path / f"{method}-{world}").mkdir()
    mp.spawn(_eval_worker, args=(world, str(tmp_path), method, scoring), nprocs=world, join=True)
    one = evaluate_image_text(model, small_world.retrieval_split("test"), _protocol(scoring), torch.device("cpu"),
                              "fp32")
    assert one.metrics["rsum"] > 0
    for r in range(world):
        got = torch.load(tmp_path / f"{method}-{world}-rank{r}.pt", weights_only=True)
        assert np.array_equal(got["i2t"].numpy(), one.i2t_ranks) and np.array_equal(got["t2i"].numpy(), one.t2i_ranks)
        assert got["metrics"] == one.metrics
