"""Zero-shot text-video retrieval (MSR-VTT protocol): the built-in video split, and MSR-VTT from local files
(records `video_retrieval@msrvtt`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from vlpbench.benchmarks.data import BuiltinDataset, open_dataset
from vlpbench.benchmarks.data.types import VideoRetrievalSplit
from vlpbench.benchmarks.evaluation.video import VideoRetrievalProtocol, evaluate_text_video
from vlpbench.benchmarks.registry import BenchmarkSpec, register_benchmark
from vlpbench.benchmarks.tasks.common import describe_lineage, eval_context, write_evaluation
from vlpbench.methods import VLPModel
from vlpbench.methods.config import StrictModel
from vlpbench.reports.sections import ReportSection
from vlpbench.reports.store import RANKS_FILE, PretrainRecord, save_ranks

if TYPE_CHECKING:
    from vlpbench.benchmarks.job import Job


class VideoDataset(StrictModel):
    """MSR-VTT from local files (CLIP4Clip layout), evaluated beside the built-in video split."""

    name: Literal["msrvtt"] = "msrvtt"
    root: str = Field(description="The MSR-VTT folder (`vlpbench data verify msrvtt --root DIR` checks it).")
    split: str = Field("1k-A", description="1k-A (JSFusion test list; 'test' and 'val' are the same file).")
    options: dict[str, Any] = Field(default_factory=dict, description="Layout fields (MSRVTTLayout); frame_size "
                                                                      "defaults to the model's resolution.")


class VideoSpec(StrictModel):
    split: str = Field("video_test", description="The built-in video split (1,000 clips, 5 captions each).")
    n_frames: int | None = Field(None, ge=1, description="Frames per video; None = the built-in dataset's "
                                                         "video_frames (8) and MSR-VTT's layout (12).")
    protocol: VideoRetrievalProtocol = Field(default_factory=VideoRetrievalProtocol)
    datasets: list[VideoDataset] = Field(default_factory=list,
                                         description="Real video sets also evaluated; records "
                                                     "'video_retrieval@<name>'.")


def video_splits(job: Job, dataset: BuiltinDataset, model: VLPModel
                  ) -> dict[str, tuple[VideoRetrievalSplit, dict[str, Any]]]:
    """{record name: (split, protocol fields saying how its frames were read)}: the built-in split, then MSR-VTT."""
    spec = job.suite.video
    res = int(model.preprocess.config.resolution)
    split = dataset.video_split(spec.split, size=res, n_frames=spec.n_frames)
    out = {"video_retrieval": (split, {"frames_per_video": split.videos.n_frames,
                                       "frame_sampling": "every rendered frame (uniform over the clip)"})}
    for real in spec.datasets:
        options = dict(real.options)
        options.setdefault("frame_size", res)
        if spec.n_frames is not None:
            options.setdefault("n_frames", spec.n_frames)
        vs = open_dataset(real.name, real.root, options).video_split(real.split)
        out[f"video_retrieval@{real.name}"] = (vs, {
            "frames_per_video": vs.videos.n_frames, "frame_decode": "PyAV",
            "frame_sampling": "middle frame of n equal segments (deterministic)"})
    return out


def evaluate_video(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                    config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    suite = job.suite
    device, precision, lineage = eval_context(job, job_dir, model)
    proto = suite.video.protocol
    pooled = "mean of frame embeddings (meanP)" if type(model).encode_video is VLPModel.encode_video \
        else f"{type(model).__name__}.encode_video"
    written = {}
    for name, (split, read_as) in video_splits(job, dataset, model).items():
        outcome = evaluate_text_video(model, split, proto, device, precision)
        protocol = {
            "task": "text-video retrieval", "setting": "zero-shot", "training_split": "none (no fine-tuning)",
            "lineage": describe_lineage(lineage) + " (no fine-tuning)",
            "split": f"{split.ref.dataset}/{split.ref.split}", "n_videos": split.n_videos, "n_texts": len(split.texts),
            "captions_per_video": split.captions_per_video(),
            **read_as, "video_embedding": pooled, "resolution": int(model.preprocess.config.resolution),
            "text_max_length": model.text_max_length, "scoring": "itc", "tie_policy": proto.tie_policy,
            "post_processing": "none", "precision": precision, "metric_units": "percent", "rank_base": 1,
            "tokenizer": config["tokenizer"]["fingerprint"][:16]}
        out_dir = job_dir / "eval" / name
        save_ranks(out_dir / RANKS_FILE, v2t=outcome.v2t_ranks, t2v=outcome.t2v_ranks)
        written[name] = write_evaluation(job, out_dir, config, device, split.ref, protocol, outcome.metrics, lineage,
                               outcome.timings)
    return written


def video_headline(metrics: Mapping[str, float]) -> str:
    return (f"RSUM {metrics['rsum']:.1f}  t2v R@1 {metrics['t2v_R1']:.1f}  MdR {metrics['t2v_medr']:.0f}  "
            f"v2t R@1 {metrics['v2t_R1']:.1f}")


register_benchmark(BenchmarkSpec(
    name="video_retrieval", section="video", settings=VideoSpec, run=evaluate_video,
    records=lambda job, model: ["video_retrieval"] + [f"video_retrieval@{d.name}" for d in job.suite.video.datasets],
    headline=video_headline, describe_split=lambda suite: suite.video.split, in_default_suite=True,
    always_in_config=True, description="text-video retrieval, frames pooled by the model's encode_video",
    report=(ReportSection("video_retrieval", "Zero-shot text-video retrieval (MSR-VTT protocol, ITC)", "video", 30),
            ReportSection("finetuned_video_retrieval", "Fine-tuned text-video retrieval (MSR-VTT protocol, ITC)",
                          "video", 31))))
