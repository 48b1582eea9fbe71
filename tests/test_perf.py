"""Performance sections compute the same thing as what they are compared with (timings are not asserted here)."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.evaluation.metrics import retrieval_ranks
from benchmarks.perf import metrics_scale


def test_chunked_ranks_and_the_full_matrix_baseline_agree_with_the_metrics_module() -> None:
    img, txt, txt2img = metrics_scale.make_embeddings(60, 5, 16, seed=3)
    ours = metrics_scale.ours(img, txt, txt2img, chunk=7)
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
