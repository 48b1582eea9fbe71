"""Performance sections compute the same thing as what they are compared with (timings are not asserted here)."""

from __future__ import annotations

import numpy as np
import torch

from vlpbench.benchmarks.evaluation.metrics import retrieval_ranks
from vlpbench.benchmarks.perf import metrics_scale


def test_one_pass_ranks_and_the_full_matrix_baseline_agree_with_the_metrics_module() -> None:
    img, txt, txt2img = metrics_scale.make_embeddings(60, 5, 16, seed=3)
    ours = metrics_scale.ours(img, txt, txt2img, chunk=7, text_tile=11)
    base = metrics_scale.baseline(img, txt, txt2img)
    ref = retrieval_ranks(img @ txt.T, txt2img)
    for a, b, c in zip(ours, base, ref):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    # a hand-made case (captions 0, 1 of image 0; 2 of image 1; 3 of image 2): image 1 ranks caption 0 above its
    # own; caption 0 ranks image 1 above its own; image 0's best ground truth (caption 1) is first
    img = torch.eye(3)
    txt = torch.tensor([[0.2, 1.0, 0.0], [0.9, 0.0, 0.1], [0.0, 0.8, 0.1], [0.0, 0.0, 1.0]])
    t2i = np.array([0, 0, 1, 2])
    for ranks in (metrics_scale.ours(img, txt, t2i), metrics_scale.baseline(img, txt, t2i)):
        assert ranks[0].tolist() == [1, 2, 1]
        assert ranks[1].tolist() == [2, 1, 1, 1]


def test_measured_run_reports_both_sides_and_checks_the_ranks() -> None:
    out = metrics_scale.run(n_images=200, captions=5, dim=32, repeats=1, threads=1)
    assert out["n_texts"] == 1000 and out["similarity_matrix_fp32_mib"] == 200 * 1000 * 4 / 2 ** 20
    for side in ("ours", "baseline"):
        assert out[side]["wall_s_median"] > 0 and out[side]["peak_extra_mib_max"] >= 0
    assert out["speedup"] == out["baseline"]["wall_s_median"] / out["ours"]["wall_s_median"]
    assert set(out["targets"]) == {"speedup >= 5", "ours peak < one fp32 similarity matrix"}


def _micro_suite():  # type: ignore[no-untyped-def]
    from vlpbench.benchmarks.suite import load_suite
    from tests.conftest import MICRO_CLIP, SMALL_WORLD
    from tests.test_tcl import MICRO_TCL

    return load_suite(None, {"methods": ["clip", "tcl"], "dataset": {"options": SMALL_WORLD},
                             "method_overrides": {"clip": MICRO_CLIP, "tcl": MICRO_TCL}})


def test_matmul_rate_is_two_n_cubed_per_call_and_the_peak_is_the_best_size() -> None:
    from vlpbench.benchmarks.perf import machine

    r = machine.matmul_flops(64, torch.float32, torch.device("cpu"), min_time_s=0.01)
    assert r["flops_per_s"] == 2 * 64 ** 3 * r["calls"] / r["seconds"] and r["calls"] >= 4
    out = machine.run(sizes=(32, 64), min_time_s=0.01)
    assert out["fp32"]["peak_flops_per_s"] == max(p["flops_per_s"] for p in out["fp32"]["per_size"])
    assert out["bf16"]["supported"] and out["bf16"]["peak_at_n"] in (32, 64)


def test_step_flops_count_forward_and_backward(micro_clip) -> None:  # type: ignore[no-untyped-def]
    """A step's count lies between 2x and 3x the forward's: every matmul's backward costs two of its forward
    (input and weight gradients) except where the input needs no gradient (the patch embedding's pixels)."""
    from torch.utils.flop_counter import FlopCounterMode

    from vlpbench.benchmarks.perf.train_step import step_flops
    from vlpbench.methods import PretrainBatch, StepContext

    torch.manual_seed(0)
    batch = PretrainBatch(images=torch.randn(4, 3, 64, 64), text=micro_clip.tokenize(["a red star"] * 4),
                          index=torch.arange(4))
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        micro_clip.pretrain_step(batch, StepContext(step=0, total_steps=1, steps_per_epoch=1, epoch=0))
    forward = fwd.get_total_flops()
    step = step_flops(micro_clip, batch, steps_per_epoch=1)
    assert forward > 0 and 2 * forward < step <= 3 * forward
    assert all(p.grad is None for p in micro_clip.parameters())


def test_train_section_times_the_trainer_and_derives_mfu(cache_root) -> None:  # type: ignore[no-untyped-def]
    from vlpbench.benchmarks.perf import train_step

    out = train_step.run(["clip"], steps=2, warmup=1, batch_size=8, peak_flops=1e12, suite=_micro_suite())
    r = out["methods"]["clip"]
    assert len(r["step_s"]) == 2 and r["step_s_median"] == float(np.median(r["step_s"]))
    assert r["samples_per_s"] == 8 / r["step_s_median"]
    assert r["mfu"] == r["flops_per_step"] / r["step_s_median"] / 1e12
    assert train_step.run(["clip"], size="base", suite=_micro_suite())["skipped"].startswith("base is measured")


def test_batched_and_per_query_reranking_score_the_same_pairs(cache_root) -> None:  # type: ignore[no-untyped-def]
    from vlpbench.benchmarks.perf import rerank

    out = rerank.run("tcl", n_queries=12, k=4, rerank_batch=32, repeats=1, suite=_micro_suite())
    assert out["pairs"] == 48 and out["max_abs_score_diff"] <= 1e-4
    assert out["batched"]["pairs_per_forward"] == 32 and out["per_query"]["pairs_per_forward"] == 4
    assert out["speedup"] == out["batched"]["pairs_per_s"] / out["per_query"]["pairs_per_s"]


def test_overhead_section_compares_evaluation_with_forward_passes(cache_root) -> None:  # type: ignore[no-untyped-def]
    from vlpbench.benchmarks.perf import overhead

    out = overhead.run(["clip"], repeats=1, batch_size=64, suite=_micro_suite())
    r = out["methods"]["clip"]
    assert out["n_images"] == 100 and r["overhead_ratio"] == r["end_to_end_s_median"] / r["forward_s_median"]
    assert {"encode_images_s", "encode_texts_s", "rank_s"} <= set(r["stages_s"])


def test_perf_cli_writes_the_sections_with_the_fingerprint(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from vlpbench.benchmarks.cli import main

    out = tmp_path / "perf.json"
    assert main(["perf", "--only", "metrics", "--n-images", "60", "--repeats", "1", "--output", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["sections"]) == {"metrics"} and data["environment"]["torch"] == torch.__version__
    assert data["sections"]["metrics"]["n_texts"] == 300 and "speedup" in capsys.readouterr().out
    assert main(["perf", "--only", "gpu", "--output", str(out)]) == 2
    assert "unknown section(s) ['gpu']" in capsys.readouterr().err


def test_open_clip_twin_has_our_architecture_and_both_sides_train(cache_root) -> None:  # type: ignore[no-untyped-def]
    from vlpbench.benchmarks.perf import open_clip_compare

    out = open_clip_compare.run(batch_size=8, steps=1, repeats=1, suite=_micro_suite())
    assert out["params"]["ours"] == out["params"]["open_clip"]
    for name in ("train_step", "encode_image", "encode_text"):
        med = out[name]["seconds_median"]
        assert out[name]["ratio_open_clip_over_ours"] == med["open_clip"] / med["ours"]
    assert out["text_length"] == 32 and out["open_clip_version"].startswith("3.")


def test_profile_section_records_only_the_steps_after_warmup(cache_root) -> None:  # type: ignore[no-untyped-def]
    from vlpbench.benchmarks.perf import profile

    out = profile.run(["clip"], steps=2, warmup=1, top=60, suite=_micro_suite())
    r = out["methods"]["clip"]
    shares = r["share_of_aten_self"]
    assert set(shares) == {"dense", "elementwise", "other"} and abs(sum(shares.values()) - 1) < 1e-9
    assert shares["dense"] > 0 and r["profiled_steps"] == 2 and 0 < r["aten_self_s"] <= r["wall_s"]
    assert 10 < len(r["top_ops"]) <= 60 and r["top_ops"][0]["self_s"] >= r["top_ops"][-1]["self_s"]
    # exactly the recorded steps: one step has half of two steps' matrix-multiply calls (none from the warm-up)
    one = profile.run(["clip"], steps=1, warmup=1, top=60, suite=_micro_suite())["methods"]["clip"]
    calls = {n: {op["op"]: op["calls"] for op in x["top_ops"]} for n, x in (("one", one), ("two", r))}
    assert calls["two"]["aten::addmm"] == 2 * calls["one"]["aten::addmm"] > 0
    assert profile.group_of("aten::gelu") == "elementwise" and profile.group_of("aten::index") == "other"


def test_perf_measures_both_cpu_presets_on_a_cpu_and_leaves_base_to_a_gpu() -> None:
    import torch

    from vlpbench.benchmarks.perf.context import needs_gpu

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not needs_gpu("cpu", cpu) and not needs_gpu("tiny", cpu)
    assert needs_gpu("base", cpu) and not needs_gpu("base", cuda)
