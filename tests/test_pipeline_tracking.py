"""End to end on a micro suite: run -> records on disk -> MLflow -> report; reuse; determinism."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from vlpbench.benchmarks import cli
from vlpbench.reports import tracking
from vlpbench.reports.store import read_evaluation, read_pretrain
from tests.conftest import MICRO_CLIP, SMALL_WORLD

SUITE: dict[str, Any] = {
    "name": "micro",
    "methods": ["clip"],
    "sizes": ["tiny"],
    "dataset": {"options": SMALL_WORLD},
    "train": {"tiny": {"steps": 8, "batch_size": 32, "log_every": 2}},
    "finetune": {"budget": {"tiny": {"steps": 3, "batch_size": 16, "log_every": 1}}},
    "latency": {"protocol": {"warmup_s": 0, "min_time_s": 0, "repeats": 3}},
    "method_overrides": {"clip": MICRO_CLIP},
}


def _run(tmp: Path, name: str = "out", suite: dict[str, Any] | None = None, extra: list[str] | None = None) -> Path:
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump(suite or SUITE))
    out = tmp / name
    assert cli.main(["run", "--suite", str(path), "--output", str(out), "--no-progress", *(extra or [])]) == 0
    return out


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory, cache_root: Path) -> Path:
    return _run(tmp_path_factory.mktemp("micro"))


def test_records_report_and_printed_path(micro_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = micro_run / "micro" / "jobs" / "clip-tiny-s0"
    ev = read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json")
    pre = read_pretrain(job / "pretrain.json")
    assert ev.method == "clip" and ev.size == "tiny" and ev.benchmark == "zeroshot_retrieval"
    assert {"i2t_R1", "i2t_R5", "i2t_R10", "t2i_R1", "t2i_R5", "t2i_R10", "rsum", "i2t_medr", "t2i_meanr"} <= set(ev.metrics)
    for field in ("split", "captions_per_image", "resolution", "text_max_length", "scoring", "rerank_k", "lineage",
                  "precision", "tie_policy"):
        assert field in ev.protocol
    assert ev.protocol["scoring"] == "itc" and ev.protocol["resolution"] == 64
    assert ev.lineage[0]["stage"] == "pretrain" and ev.lineage[0]["steps"] == 8
    assert ev.dataset["split"] == "test" and len(ev.dataset["fingerprint"]) == 64
    ranks = np.load(job / "eval" / "zeroshot_retrieval" / "ranks.npz")
    assert len(ranks["i2t"]) == ev.protocol["n_images"] and len(ranks["t2i"]) == ev.protocol["n_texts"]
    assert ev.metrics["i2t_R1"] == pytest.approx(100 * np.mean(ranks["i2t"] <= 1))
    assert pre.summary["steps"] == 8 and pre.environment["git_commit"]
    report = (micro_run / "micro" / "report.md").read_text()
    assert "## Zero-shot image-text retrieval (ITC) — builtin/test" in report
    assert f"{ev.metrics['rsum']:.2f}" in report and "tie_policy" in report and ev.dataset["fingerprint"] in report
    # every benchmark of the suite gives its figure: recall bars (zero-shot, fine-tuned), latency vs RSUM and vs
    # gallery size, loss curves; the HTML embeds them, the leaderboard has a row per evaluation
    figures = sorted(p.name for p in (micro_run / "micro" / "figures").glob("*.png"))
    assert len(figures) == 5 and {"latency-vs-rsum.png", "latency-vs-gallery.png", "loss-curves.png"} <= set(figures)
    assert (micro_run / "micro" / "report.html").read_text().count('<img src="data:image/png;base64,') == 5
    board = json.loads((micro_run / "micro" / "leaderboard.json").read_text())
    assert sorted(r["benchmark"] for r in board["rows"]) == ["finetuned_retrieval", "latency", "product_retrieval",
                                                             "video_retrieval", "zeroshot_retrieval"]


def test_mlflow_holds_every_param_metric_and_artifact(micro_run: Path) -> None:
    uri = tracking.resolve_tracking_uri(None, micro_run)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("vlpbench-micro")
    runs = client.search_runs([exp.experiment_id])
    by_kind = {r.data.tags.get("vlpbench.benchmark", r.data.tags["vlpbench.kind"]): r for r in runs}
    assert set(by_kind) == {"pretrain", "zeroshot_retrieval", "finetuned_retrieval", "video_retrieval", "product_retrieval",
                            "latency"} and len(runs) == 6
    job = micro_run / "micro" / "jobs" / "clip-tiny-s0"
    ev = read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json")
    pre = read_pretrain(job / "pretrain.json")
    flat = tracking.flatten(ev.config)
    for run in runs:
        assert run.data.params == flat                       # the resolved config, every key
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        for key in ("git_commit", "vlpbench.method", "vlpbench.size", "dataset_fingerprint", "torch", "device"):
            assert tags[key], key
    e = by_kind["zeroshot_retrieval"]
    assert e.data.metrics == {**ev.metrics, **{f"time/{k}": v for k, v in ev.timings.items()}}
    assert e.data.tags["mlflow.parentRunId"] == by_kind["pretrain"].info.run_id
    assert e.data.tags["protocol.scoring"] == "itc" and e.data.tags["protocol.tie_policy"] == "pessimistic"
    assert {a.path for a in client.list_artifacts(e.info.run_id)} == {"results.json", "ranks.npz", "config.json"}
    prod = by_kind["product_retrieval"]
    pr = read_evaluation(job / "eval" / "product_retrieval" / "results.json")
    # MLflow takes no '@' or '+' in metric names: "image+text/mAP@1" is logged as "image_plus_text/mAP_at_1".
    assert prod.data.metrics == {**{tracking.metric_name(k): v for k, v in pr.metrics.items()},
                                 **{f"time/{k}": v for k, v in pr.timings.items()}}
    assert prod.data.metrics["image_plus_text/mAP_at_1"] == pr.metrics["image+text/mAP@1"]
    assert prod.data.tags["protocol.cutoff"] == "toolkit" and prod.data.tags["protocol.max_topk"] == "10"
    p = by_kind["pretrain"]
    assert {a.path for a in client.list_artifacts(p.info.run_id)} == {
        "pretrain.json", "history.jsonl", "model_config.json", "config.json"}
    history = [json.loads(x) for x in (job / "history.jsonl").read_text().splitlines()]
    curve = client.get_metric_history(p.info.run_id, "train/loss/itc")
    assert [(m.step, m.value) for m in curve] == [(h["step"], pytest.approx(h["loss/itc"])) for h in history]
    assert p.data.metrics["pretrain/steps"] == pre.summary["steps"]


def test_rerun_reuses_work_and_logs_nothing_twice(micro_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (micro_run / "micro" / "jobs" / "clip-tiny-s0" / "eval" / "zeroshot_retrieval" / "results.json").read_text()
    _run(micro_run.parent)
    out = capsys.readouterr().out
    assert "pretraining reused" in out and f"report: {micro_run / 'micro' / 'report.html'}" in out
    after = (micro_run / "micro" / "jobs" / "clip-tiny-s0" / "eval" / "zeroshot_retrieval" / "results.json").read_text()
    assert before == after
    client = MlflowClient(tracking_uri=tracking.resolve_tracking_uri(None, micro_run))
    exp = client.get_experiment_by_name("vlpbench-micro")
    assert len(client.search_runs([exp.experiment_id])) == 6


def test_same_seed_twice_gives_identical_metrics(micro_run: Path, tmp_path: Path) -> None:
    other = _run(tmp_path)
    rel = Path("micro/jobs/clip-tiny-s0/eval/zeroshot_retrieval")
    a, b = read_evaluation(micro_run / rel / "results.json"), read_evaluation(other / rel / "results.json")
    assert a.metrics == b.metrics
    assert np.array_equal(np.load(micro_run / rel / "ranks.npz")["t2i"], np.load(other / rel / "ranks.npz")["t2i"])


def test_results_are_on_disk_before_mlflow_is_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      cache_root: Path) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("tracking server down")

    monkeypatch.setattr(tracking, "log_job", boom)
    with pytest.raises(RuntimeError, match="tracking server down"):
        _run(tmp_path)
    job = tmp_path / "out" / "micro" / "jobs" / "clip-tiny-s0"
    assert read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json").metrics["rsum"] >= 0
    assert not (tmp_path / "out" / "mlflow.db").exists()


def test_resume_latest_continues_a_job(tmp_path: Path, cache_root: Path) -> None:
    suite = {**SUITE, "train": {"tiny": {"steps": 8, "batch_size": 32, "log_every": 2, "checkpoint_every": 4}}}
    first = _run(tmp_path, "a", suite)
    job = first / "micro" / "jobs" / "clip-tiny-s0"
    # Simulate a crash after step 4: drop the finished records and the final checkpoint.
    (job / "pretrain.json").unlink()
    (job / "checkpoints" / "step_00000008.pt").unlink()
    rsum = read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json").metrics
    _run(tmp_path, "a", suite, ["--resume", "latest"])
    pre = read_pretrain(job / "pretrain.json")
    assert pre.summary["resumed_from_step"] == 4 and pre.summary["steps"] == 8
    assert read_evaluation(job / "eval" / "zeroshot_retrieval" / "results.json").metrics == rsum


def test_fusion_models_get_an_itc_and_a_reranked_record(tmp_path: Path, cache_root: Path) -> None:
    from tests.test_tcl import MICRO_TCL

    suite = {**SUITE, "name": "fusion", "methods": ["tcl"], "method_overrides": {"tcl": {**MICRO_TCL, "queue_size": 32}},
             "train": {"tiny": {"steps": 3, "batch_size": 16, "log_every": 1}}, "retrieval": {"rerank_k": 10},
             "unimodal": {"tiny": {"vision_steps": 2, "text_steps": 2, "batch_size": 16}}}
    out = _run(tmp_path, suite=suite)
    job = out / "fusion" / "jobs" / "tcl-tiny-s0" / "eval"
    # TCL's recipe starts from unimodal pretraining: the stage ran, and the lineage says so.
    lineage = json.loads((job.parent / "model" / "model_config.json").read_text())["lineage"]
    assert [e["stage"] for e in lineage] == ["unimodal-init", "pretrain"]
    assert lineage[0]["vision"]["steps"] == 2 and lineage[0]["text"]["steps"] == 2
    assert lineage[1]["init"] == "unimodal-init"
    assert json.loads((job.parent / "config.json").read_text())["init"]["kind"] == "unimodal"
    itc = read_evaluation(job / "zeroshot_retrieval" / "results.json")
    rr = read_evaluation(job / "zeroshot_retrieval_rerank" / "results.json")
    assert itc.protocol["scoring"] == "itc" and itc.protocol["rerank_k"] is None
    assert rr.protocol["scoring"] == "itm" and rr.protocol["rerank_k"] == 10
    assert rr.timings["rerank_pairs"] == 10 * (rr.protocol["n_images"] + rr.protocol["n_texts"])
    assert max(np.load(job / "zeroshot_retrieval_rerank" / "ranks.npz")["t2i"]) <= 11     # censored at k + 1
    report = (out / "fusion" / "report.md").read_text()
    assert "(ITC) — builtin/test" in report and "(top-k re-ranking) — builtin/test" in report
    client = MlflowClient(tracking_uri=tracking.resolve_tracking_uri(None, out))
    runs = client.search_runs([client.get_experiment_by_name("vlpbench-fusion").experiment_id])
    assert sorted(r.data.tags.get("vlpbench.benchmark", "-") for r in runs) == [
        "-", "finetuned_retrieval", "finetuned_retrieval_rerank", "latency", "product_retrieval", "video_retrieval",
        "zeroshot_retrieval", "zeroshot_retrieval_rerank"]


def test_a_variant_runs_beside_its_method_with_its_own_overrides(tmp_path: Path, cache_root: Path) -> None:
    from tests.test_ernie_vil2 import MICRO_ERNIE

    no_tags = {"pairs": {"image_tags": {"enabled": False}, "caption_tags": {"enabled": False}}}
    suite = {**SUITE, "name": "views", "methods": ["ernie_vil2", "ernie-no-tags"],
             "method_overrides": {"ernie_vil2": MICRO_ERNIE}, "recipe_overrides": {"ernie_vil2": {"init": "scratch"}},
             "variants": {"ernie-no-tags": {"method": "ernie_vil2", "method_overrides": no_tags,
                                            "description": "tag view off"}},
             "train": {"tiny": {"steps": 2, "batch_size": 16, "log_every": 1}}}
    out = _run(tmp_path, suite=suite)
    jobs = out / "views" / "jobs"
    assert sorted(p.name for p in jobs.iterdir()) == ["ernie-no-tags-tiny-s0", "ernie_vil2-tiny-s0"]
    full, ablated = (read_pretrain(jobs / j / "pretrain.json") for j in ("ernie_vil2-tiny-s0", "ernie-no-tags-tiny-s0"))
    assert (full.method, full.variant) == ("ernie_vil2", None)
    assert (ablated.method, ablated.variant, ablated.label) == ("ernie_vil2", "ernie-no-tags", "ernie-no-tags")
    # The variant gets the suite's overrides of its method, then its own.
    assert ablated.config["method"]["vision"]["width"] == MICRO_ERNIE["vision"]["width"]
    assert ablated.config["method"]["pairs"]["image_tags"]["enabled"] is False
    assert full.config["method"]["pairs"]["image_tags"]["enabled"] is True and "variant" not in full.config["method"]
    first = [json.loads(line) for line in (jobs / "ernie-no-tags-tiny-s0" / "history.jsonl").read_text().splitlines()]
    assert "loss/image_caption" in first[0] and "loss/image_tags" not in first[0]
    report = (out / "views" / "report.md").read_text()
    assert "## Variants" in report and "| ernie-no-tags | ernie_vil2 |" in report and "tag view off" in report
    # zero-shot, fine-tuned and video retrieval rows, three product-retrieval rows (image, text, image+text),
    # a latency row and its three per-query design rows (gallery sizes), a pretraining row
    assert report.count("| ernie-no-tags | tiny | 0 |") == 11
    client = MlflowClient(tracking_uri=tracking.resolve_tracking_uri(None, out))
    runs = client.search_runs([client.get_experiment_by_name("vlpbench-views").experiment_id])
    assert {r.data.tags.get("vlpbench.variant") for r in runs} == {"", "ernie-no-tags"}


def test_a_variant_needs_its_own_name_and_a_known_method(tmp_path: Path) -> None:
    from vlpbench.benchmarks.suite import load_suite
    from vlpbench.methods import ConfigError

    with pytest.raises(ConfigError, match="variants: .*variant 'clip' has a method's name"):
        load_suite(None, {"variants": {"clip": {"method": "clip"}}})
    with pytest.raises(ConfigError, match=r"variants.x.method: .*unknown method 'clop'"):
        load_suite(None, {"variants": {"x": {"method": "clop"}}})
    suite = load_suite(None, {"variants": {"clip-wide": {"method": "clip", "method_overrides": {"embed_dim": 512}}}})
    assert suite.method_names()[-1] == "clip-wide" and suite.method_of("clip-wide") == "clip"
    assert suite.overrides_for("clip-wide", "method") == {"embed_dim": 512}


def test_the_code_version_is_read_once_so_a_commit_during_a_run_does_not_relabel_it(tmp_path: Path) -> None:
    import subprocess

    from vlpbench.benchmarks.runtime import code_version

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True,
                              env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                                   "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}).stdout.strip()

    git("init", "-q")
    (tmp_path / "f.py").write_text("a = 1\n")
    git("add", "f.py")
    git("commit", "-qm", "first")
    first = git("rev-parse", "HEAD")
    assert code_version(tmp_path) == {"git_commit": first, "git_dirty": False}
    (tmp_path / "f.py").write_text("a = 2\n")
    git("commit", "-qam", "second")
    assert git("rev-parse", "HEAD") != first
    assert code_version(tmp_path) == {"git_commit": first, "git_dirty": False}
