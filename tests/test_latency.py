"""Latency: percentiles and the cost model on hand-made numbers, what a measurement holds, the benchmark and CLI.

Timings themselves are never asserted (speed targets live in `vlpbench latency --twice`, not in unit tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vlpbench.benchmarks.cli import main
from vlpbench.benchmarks.evaluation.latency import LatencyProtocol, _flops, cost_model, measure_latency, percentiles, time_calls
from vlpbench.reports.store import read_evaluation
from tests.conftest import MICRO_CLIP, SMALL_WORLD
from tests.test_tcl import MICRO_TCL

TEXTS = [f"a {c} {s} next to a {c2} circle" for c in ("red", "blue", "green", "tiny") for s in ("star", "square")
         for c2 in ("red", "blue", "green", "pink")]


def test_percentiles_on_known_values() -> None:
    s = np.arange(1, 11) / 1000.0                     # 1 .. 10 ms
    p = percentiles(s, items=4)
    assert p["p50_ms"] == pytest.approx(5.5) and p["mean_ms"] == pytest.approx(5.5)
    assert p["p95_ms"] == pytest.approx(9.55) and p["p99_ms"] == pytest.approx(9.91)
    assert p["throughput_per_s"] == pytest.approx(4 / 0.0055) and p["calls"] == 10 and p["items_per_call"] == 4


def test_time_calls_warms_up_then_times_each_call() -> None:
    calls = []
    out = time_calls(lambda: calls.append(1), torch.device("cpu"), warmup=3, repeats=7)
    assert len(calls) == 10 and out.shape == (7,) and (out >= 0).all()


def test_time_calls_keeps_timing_until_enough_time_is_covered() -> None:
    import time

    out = time_calls(lambda: time.sleep(0.001), torch.device("cpu"), warmup=1, repeats=3, min_time_s=0.03)
    assert len(out) > 3 and out.sum() >= 0.03 and out[:-1].sum() < 0.03     # stops at the first call past it
    capped = time_calls(lambda: None, torch.device("cpu"), warmup=1, repeats=3, min_time_s=10.0, max_calls=50)
    assert len(capped) == 50


def test_cost_model_on_hand_made_timings() -> None:
    proto = LatencyProtocol(gallery_sizes=[1000, 25000], rerank_k=16, cross_batch=64)
    t = {"encode_text_1": {"p50_ms": 2.0}, "search@1000": {"p50_ms": 0.5}, "search@25000": {"p50_ms": 3.0},
         "cross_pair": {"p50_ms": 64.0, "items_per_call": 64}, "rerank_query": {"p50_ms": 16.0}}
    per_query, ratios = cost_model(t, proto)
    assert per_query["dual_encoder@1000"] == 2.5 and per_query["dual_encoder@25000"] == 5.0
    assert per_query["rerank_top16@25000"] == 21.0
    assert per_query["exhaustive_extrapolated@25000"] == 2.0 + 25000 * 1.0      # 1 ms per pair
    assert ratios["exhaustive_over_dual@25000"] == pytest.approx(25002 / 5.0)
    assert ratios["exhaustive_over_rerank@1000"] == pytest.approx(1002 / 18.5)
    dual_only, none = cost_model({k: v for k, v in t.items() if k not in ("cross_pair", "rerank_query")}, proto)
    assert set(dual_only) == {"dual_encoder@1000", "dual_encoder@25000"} and none == {}


def test_flops_scale_with_batch(micro_clip) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(2, 3, 64, 64)
    one, two = _flops(lambda: micro_clip.encode_image(x[:1])), _flops(lambda: micro_clip.encode_image(x))
    assert one > 0 and two == 2 * one


def test_threads_are_set_for_the_measurement_and_restored(micro_clip, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import vlpbench.benchmarks.evaluation.latency as lat

    seen = []
    monkeypatch.setattr(lat, "_measure", lambda *a: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    lat.measure_latency(micro_clip, TEXTS, LatencyProtocol(threads=1), torch.device("cpu"), "fp32")
    lat.measure_latency(micro_clip, TEXTS, LatencyProtocol(threads=None), torch.device("cpu"), "fp32")
    assert seen == [1, before] and torch.get_num_threads() == before
    g = lat._gallery(100, 8, torch.device("cpu"), 0)
    assert g is lat._gallery(100, 8, torch.device("cpu"), 0)             # one allocation per process
    assert torch.allclose(g.norm(dim=1), torch.ones(100))


def test_measure_latency_dual_encoder_params_add_up(micro_clip) -> None:  # type: ignore[no-untyped-def]
    proto = LatencyProtocol(batch_size=4, gallery_sizes=[100, 500], repeats=3, warmup=1, warmup_s=0, min_time_s=0)
    out = measure_latency(micro_clip, TEXTS, proto, torch.device("cpu"), "fp32")
    assert set(out["timings"]) == {"encode_image", "encode_text", "encode_text_1", "tokenize", "search@100",
                                   "search@500"}
    assert out["timings"]["encode_image"]["items_per_call"] == 4 and out["timings"]["search@500"]["calls"] == 3
    # CLIP: the two towers plus the logit scale are the whole model
    p = out["params"]
    assert p["image_tower"] + p["text_tower"] + micro_clip.logit_scale.numel() == p["total"]
    assert out["ratios"] == {} and set(out["per_query_ms"]) == {"dual_encoder@100", "dual_encoder@500"}
    assert not any(q.grad is not None for q in micro_clip.parameters())     # gradients used for counting are gone


def test_measure_latency_fusion_model_has_the_three_designs(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from vlpbench.methods import create_method

    tcl = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL)
    proto = LatencyProtocol(batch_size=4, gallery_sizes=[1000], rerank_k=8, cross_batch=16, repeats=3, warmup=1,
                            warmup_s=0, min_time_s=0)
    out = measure_latency(tcl, TEXTS, proto, torch.device("cpu"), "fp32")
    assert out["timings"]["rerank_query"]["items_per_call"] == 8 and out["timings"]["cross_pair"]["items_per_call"] == 16
    assert set(out["per_query_ms"]) == {"dual_encoder@1000", "rerank_top8@1000", "exhaustive_extrapolated@1000"}
    assert out["ratios"]["exhaustive_over_dual@1000"] == pytest.approx(
        out["per_query_ms"]["exhaustive_extrapolated@1000"] / out["per_query_ms"]["dual_encoder@1000"])
    assert 0 < out["params"]["cross_encoder"] < out["params"]["total"] and out["flops"]["cross_per_pair"] > 0


def test_latency_benchmark_and_cli(tmp_path: Path, cache_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite = {"name": "lat", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
             "benchmarks": ["latency"],
             "train": {"tiny": {"steps": 2, "batch_size": 16, "log_every": 1}},
             "method_overrides": {"clip": MICRO_CLIP},
             "latency": {"protocol": {"batch_size": 8, "gallery_sizes": [100, 1000], "repeats": 3, "warmup": 1,
                                      "warmup_s": 0, "min_time_s": 0}}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    assert main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    ev = read_evaluation(out / "lat" / "jobs" / "clip-tiny-s0" / "eval" / "latency" / "results.json")
    assert ev.protocol["gallery_sizes"] == [100, 1000] and ev.protocol["repeats"] == 3
    assert {"encode_image/p50_ms", "encode_image/p99_ms", "encode_text/throughput_per_s", "search@1000/p95_ms",
            "per_query_ms/dual_encoder@1000", "params/image_tower", "flops/text_per_item", "model/resolution"
            } <= set(ev.metrics)
    assert ev.environment["cpu"] and ev.environment["torch_threads"] >= 1
    report = (out / "lat" / "report.md").read_text()
    assert "## Inference latency (per stage, p50 of repeated calls after warm-up) — builtin/test" in report
    assert "| search@100 p50 ms | search@1000 p50 ms |" in report and "| clip | tiny | 0 | dual_encoder | 1000 |" in report
    capsys.readouterr()
    js = tmp_path / "lat.json"
    assert main(["latency", "--suite", str(path), "--twice", "--output", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "clip-tiny: image batch p50" in printed and "second run: p50s moved by at most" in printed
    saved = json.loads(js.read_text())
    assert saved["environment"]["torch"] == torch.__version__ and saved["protocol"]["batch_size"] == 8
    assert set(saved["methods"]["clip"]["p50_relative_change"]) >= {"encode_image", "search@1000"}
