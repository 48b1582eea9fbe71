"""Text-video retrieval: metrics on hand-made rankings, meanP pooling, the benchmark on built-in and MSR-VTT data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from vlpbench.benchmarks.cli import main
from vlpbench.benchmarks.data import open_dataset
from vlpbench.benchmarks.data.types import DatasetRef, VideoRetrievalSplit
from vlpbench.benchmarks.evaluation.metrics import retrieval_ranks
from vlpbench.benchmarks.evaluation.retrieval import encode_texts
from vlpbench.benchmarks.evaluation.video import VideoRetrievalProtocol, evaluate_text_video, video_metrics
from vlpbench.reports.store import read_evaluation
from tests.conftest import MICRO_CLIP, SMALL_WORLD
from tests.real_fixtures import MSRVTT_TEST, make_msrvtt


def test_video_metrics_on_hand_made_ranks() -> None:
    # 4 captions' ground-truth video ranks 1, 3, 12, 2; 2 videos whose best caption ranks 1 and 7
    m = video_metrics(np.array([1, 7]), np.array([1, 3, 12, 2]))
    assert m["t2v_R1"] == 25.0 and m["t2v_R5"] == 75.0 and m["t2v_R10"] == 75.0
    assert m["t2v_medr"] == 2.5 and m["t2v_meanr"] == 4.5          # MdR / MnR, 1-based like CLIP4Clip's rank + 1
    assert m["v2t_R1"] == 50.0 and m["v2t_R5"] == 50.0 and m["v2t_R10"] == 100.0 and m["v2t_medr"] == 4.0
    assert m["rsum"] == 25 + 75 + 75 + 50 + 50 + 100


class _Clips:
    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.n_frames = frames.shape[1]

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, indices: np.ndarray) -> np.ndarray:
        return self.frames[np.asarray(indices)]


def test_evaluation_equals_mean_of_frame_embeddings(micro_clip) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(5, 3, 32, 32, 3), dtype=np.uint8)
    texts = ["a red star", "blue circle", "green square", "a moving dot", "red star left", "two shapes"]
    split = VideoRetrievalSplit(DatasetRef("t", "t", "0", "0"), _Clips(frames), texts, np.array([0, 1, 2, 3, 4, 0]))
    out = evaluate_text_video(micro_clip, split, VideoRetrievalProtocol(batch_size=2), torch.device("cpu"), "fp32")
    micro_clip.eval()
    with torch.no_grad():
        per_frame = micro_clip.encode_image(micro_clip.preprocess.eval(frames.reshape(15, 32, 32, 3))).view(5, 3, -1)
        vid = F.normalize(per_frame.mean(1), dim=-1)
        txt = encode_texts(micro_clip, texts, 4, torch.device("cpu"), "fp32")
        v2t, t2v = retrieval_ranks(vid @ txt.t(), split.txt2vid)
    assert out.v2t_ranks.tolist() == v2t.tolist() and out.t2v_ranks.tolist() == t2v.tolist()
    assert out.metrics == pytest.approx(video_metrics(v2t, t2v))


def test_builtin_video_split(cache_root: Path) -> None:
    ds = open_dataset("builtin", options=SMALL_WORLD, cache_root=cache_root)
    split = ds.video_split("video_test", size=32)
    assert split.n_videos == 20 and len(split.texts) == 100 and split.txt2vid.tolist()[:6] == [0] * 5 + [1]
    clips = split.videos.get([3, 0])
    assert clips.shape == (2, 8, 32, 32, 3)
    assert np.array_equal(clips[1, 0], ds.video_split("video_test", size=32).videos.get([0])[0, 0])
    assert not np.array_equal(clips[0, 0], clips[0, -1])     # things move
    assert ds.video_split(n_frames=3, size=16).videos.get([0]).shape == (1, 3, 16, 16, 3)


def test_video_benchmark_in_a_suite_with_msrvtt(tmp_path: Path, cache_root: Path) -> None:
    msrvtt = make_msrvtt(tmp_path / "msrvtt")
    suite = {"name": "vid", "methods": ["clip"], "sizes": ["tiny"], "dataset": {"options": SMALL_WORLD},
             "benchmarks": ["video_retrieval"],
             "train": {"tiny": {"steps": 4, "batch_size": 16, "log_every": 2}},
             "method_overrides": {"clip": MICRO_CLIP},
             "video": {"n_frames": 4, "datasets": [{"root": str(msrvtt)}]}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "out"
    assert main(["run", "--suite", str(path), "--output", str(out), "--no-progress"]) == 0
    job = out / "vid" / "jobs" / "clip-tiny-s0"
    builtin = read_evaluation(job / "eval" / "video_retrieval" / "results.json")
    real = read_evaluation(job / "eval" / "video_retrieval@msrvtt" / "results.json")
    assert builtin.protocol["split"] == "builtin/video_test" and builtin.protocol["frames_per_video"] == 4
    assert builtin.protocol["captions_per_video"] == {"min": 5, "max": 5, "mean": 5.0}
    assert real.protocol["split"] == "msrvtt/1k-A" and real.protocol["n_videos"] == len(MSRVTT_TEST)
    assert real.protocol["video_embedding"] == "mean of frame embeddings (meanP)"
    assert real.protocol["training_split"] == "none (no fine-tuning)" and real.protocol["post_processing"] == "none"
    assert {"t2v_R1", "t2v_medr", "t2v_meanr", "v2t_R1", "v2t_medr", "rsum"} <= set(real.metrics)
    assert 1 <= real.metrics["t2v_medr"] <= 3
    report = (out / "vid" / "report.md").read_text()
    assert "## Zero-shot text-video retrieval (MSR-VTT protocol, ITC) — msrvtt/1k-A" in report
    assert "| T→V R@1 | R@5 | R@10 | MdR | MnR |" in report
