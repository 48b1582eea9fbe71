"""`vlpbench eval`: given weights, one benchmark, no pretraining.

The weights are a harness model folder or a released checkpoint (methods/checkpoints/importer.py). The protocol
is data: every field that changes a number (split and its counts, resolution and resize, text length, prompt and
the side it applies to, scoring rule, k, tie policy, score dtype, precision, checkpoint lineage and sha256) is
stored in the record, which is written atomically (ranks first, then results.json) before it is logged to MLflow
or copied to ``--json``. Records land in ``<output>/<name>/jobs/<job>/eval/<benchmark>/`` — the layout of
`vlpbench run` — so `vlpbench report --source files` and the MLflow report show them beside trained models.

`vlpbench latency` is here too (`untrained_latency`): the stage timings of untrained models (weights do not change
them), with the suite's latency protocol, device and precision.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from vlpbench.benchmarks.data import DatasetError, open_dataset
from vlpbench.benchmarks.data.types import RetrievalSplit
from vlpbench.benchmarks.evaluation.latency import time_models
from vlpbench.benchmarks.evaluation.metrics import TiePolicy
from vlpbench.benchmarks.evaluation.retrieval import RetrievalOutcome, RetrievalProtocol, Scoring, evaluate_image_text
from vlpbench.benchmarks.evaluation.video import VideoOutcome, VideoRetrievalProtocol, evaluate_text_video
from vlpbench.benchmarks.tasks.common import describe_lineage
from vlpbench.benchmarks.runtime import Precision, fingerprint, resolve_device, resolve_precision
from vlpbench.methods import ConfigError, VLPModel, create_method, get_spec
from vlpbench.methods.checkpoints.importer import Imported, import_checkpoint
from vlpbench.methods.config import StrictModel, validate
from vlpbench.reports.store import RANKS_FILE, RESULTS_FILE, EvaluationRecord, atomic_write_json, save_ranks, write_record

if TYPE_CHECKING:
    from vlpbench.benchmarks.suite import Suite

# (images, captions) of the standard test sets; a split with other counts is not the one papers report on
# (Flickr30K Karpathy test; COCO 5K Karpathy test: 25,010 captions, CLIP_benchmark's COCO recalls are multiples of
# 1/25010).
STANDARD_COUNTS: dict[tuple[str, str], tuple[int, int]] = {
    ("flickr30k", "test"): (1000, 5000),
    ("coco", "test"): (5000, 25010),
    ("msrvtt", "1k-A"): (1000, 1000),    # JSFusion's 1k-A: one caption per video (CLIP4Clip)
}


class EvalProtocol(StrictModel):
    """What `--protocol KEY=VALUE` may set; None = the checkpoint's own value (resolution, text length)."""

    setting: Literal["zero-shot", "fine-tuned"] = Field(
        "zero-shot", description="What the number is called: zero-shot (the weights never saw this dataset's "
                                 "training split) or fine-tuned (they were fine-tuned on it).")
    resolution: int | None = Field(None, ge=16, description="Evaluate at this input size (ViT position "
                                                            "embeddings resampled bicubically).")
    text_max_length: int | None = Field(None, ge=2, description="Tokens per caption, specials included.")
    prompt: str | None = Field(None, description="Text put before every caption (the CLIP paper: 'a photo of').")
    scoring: Scoring | None = Field(None, description="itc, itm or itm+itc; default: the card's default.")
    rerank_k: int | None = Field(None, gt=0, description="k_test of top-k re-ranking (itm scoring).")
    tie_policy: TiePolicy = "pessimistic"
    precision: Precision = Field("fp32", description="Autocast of the forward passes; scores are always ranked "
                                                     "in fp32.")
    batch_size: int | None = Field(None, gt=0, description="Encoding batch (does not change results); None = 256 on "
                                                            "CUDA, 32 on CPU (measured: a 1K-image ViT-B/16 "
                                                            "evaluation took 300 s at 256, 222 s at 32 on 2 cores)")
    workers: int = Field(0, ge=0, description="Processes decoding image batches ahead of the model (results "
                                              "unchanged).")
    check_counts: bool = Field(True, description="Refuse a Flickr30K/COCO test split whose image/caption "
                                                 "counts are not the standard ones.")


@dataclass
class EvalResult:
    record_path: Path
    record: EvaluationRecord
    outcome: RetrievalOutcome | VideoOutcome


def parse_protocol(items: list[str]) -> dict[str, Any]:
    """`--protocol KEY=VALUE` items (YAML values) into a dict."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--protocol {item!r}: expected KEY=VALUE, e.g. --protocol resolution=384")
        out[key.strip()] = None if value.strip().lower() in ("none", "null") else yaml.safe_load(value)
        if key.strip() == "prompt" and isinstance(out["prompt"], str):
            out["prompt"] = value   # keep the text exactly as typed
    return out


def job_name(imported: Imported, weights: Path) -> str:
    """'clip-ViT-B-32-quickgelu-<8 hex of sha256>' (a released checkpoint) or the saved model's own name."""
    released = next((e for e in imported.lineage if e.get("stage") == "released"), None)
    tag = released["sha256"][:8] if released else weights.resolve().name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{imported.method}-{imported.size}-{tag}")


def apply_protocol(model: VLPModel, proto: EvalProtocol) -> list[str]:
    """Change the model's evaluation inputs as the protocol asks; the notes say what changed."""
    notes = []
    res = int(model.preprocess.config.resolution)
    if proto.resolution is not None and proto.resolution != res:
        model.set_eval_resolution(proto.resolution)
        notes.append(f"resolution {res} -> {proto.resolution} (position embeddings resampled bicubically)")
    if proto.text_max_length is not None and proto.text_max_length != model.text_max_length:
        text = getattr(model.config, "text", None)
        if text is None or not hasattr(text, "max_length"):
            raise ConfigError(f"{type(model).__name__} has no text.max_length to set")
        if proto.text_max_length > text.max_length and getattr(text, "arch", "") == "clip":
            raise ConfigError(f"text_max_length {proto.text_max_length} exceeds the model's {text.max_length} "
                              "position embeddings")
        notes.append(f"text length {model.text_max_length} -> {proto.text_max_length}")
        model.config = model.config.model_copy(update={"text": text.model_copy(
            update={"max_length": proto.text_max_length})})
    return notes


def retrieval_protocol(model: VLPModel, proto: EvalProtocol, dataset: str, batch_size: int = 256
                       ) -> RetrievalProtocol:
    """The ranking protocol: the card's defaults (scoring; k per dataset, e.g. TCL's k_test 128 Flickr30K / 256
    COCO) unless the protocol sets them."""
    scoring = proto.scoring or model.card.default_protocol.get("scoring", "itc")
    if scoring != "itc" and not model.supports_rerank:
        raise ConfigError(f"scoring {scoring!r} needs a re-ranking head; {type(model).__name__} has none")
    k = proto.rerank_k if scoring != "itc" else None
    if scoring != "itc" and k is None:
        k = model.card.default_protocol.get("rerank_k")
        if isinstance(k, dict):
            k = k.get(dataset)
        if k is None:
            raise ConfigError(f"scoring {scoring!r} needs --protocol rerank_k=K (k_test: 128 Flickr30K, 256 COCO)")
    return RetrievalProtocol(scoring=scoring, rerank_k=k, tie_policy=proto.tie_policy, prompt=proto.prompt,
                             batch_size=proto.batch_size or batch_size, workers=proto.workers)


def open_split(dataset: str, root: Path | None, split: str, model: VLPModel) -> tuple[RetrievalSplit, dict[str, Any]]:
    """The split, decoded with the model's own eval transform, and the fields saying how it was read."""
    cfg = model.preprocess.config
    if dataset == "builtin":
        source = open_dataset("builtin", root)
        return source.retrieval_split(split), {"image_decode": "built-in arrays, resized by the model's transform"}
    resize = getattr(cfg, "resize_mode", "squash")
    source = open_dataset(dataset, root, {"image_size": int(cfg.resolution), "image_resize": resize})
    decode = (f"Resize(({cfg.resolution}, {cfg.resolution})) bicubic, aspect not kept" if resize == "squash" else
              f"Resize({cfg.resolution}) shortest side, bicubic, CenterCrop({cfg.resolution})")
    return source.retrieval_split(split), {"image_decode": f"Pillow: {decode}", "annotation_format": source.format}


def check_counts(dataset: str, split: str, got: tuple[int, int], enforce: bool) -> str:
    """'standard', 'nonstandard (...)' or an error when the standard test set's (gallery, captions) counts are not
    met."""
    want = STANDARD_COUNTS.get((dataset, split))
    if want is None:
        return "no standard counts for this split"
    if got == want:
        return "standard"
    msg = (f"{dataset} {split}: {got[0]} images or videos / {got[1]} captions, but the standard split papers report "
           f"on has {want[0]} / {want[1]}")
    if enforce:
        raise DatasetError(f"{msg}; check the annotation file (the Karpathy split), or pass --protocol "
                           "check_counts=false to evaluate anyway (the record then says the split is nonstandard)")
    return f"nonstandard: {msg}"


def evaluate_weights(weights: Path, *, fmt: str = "auto", arch: str | None = None, tokenizer: Path | None = None,
                     dataset: str, root: Path | None, split: str = "test", protocol: dict[str, Any] | None = None,
                     device: str = "auto", output: Path = Path("outputs"), name: str = "eval",
                     imported: Imported | None = None, extra_protocol: dict[str, Any] | None = None
                     ) -> EvalResult:
    """Import (or take) the weights, evaluate image-text (Flickr30K, COCO, built-in) or text-video (MSR-VTT)
    retrieval under the protocol, write the record atomically; returns it."""
    proto = validate(EvalProtocol, protocol or {}, where="--protocol")
    imported = imported or import_checkpoint(weights, fmt, arch, tokenizer)
    model = imported.model
    notes = apply_protocol(model, proto)
    dev = resolve_device(device)
    precision = resolve_precision(proto.precision, dev)
    model.to(dev)
    common = {"lineage": describe_lineage(imported.lineage) or "released weights",
              "resolution": int(model.preprocess.config.resolution),
              "resize": getattr(model.preprocess.config, "resize_mode", "squash"),
              "mean_std": [list(model.preprocess.config.mean), list(model.preprocess.config.std)],
              "text_max_length": model.text_max_length, "tokenizer_source": model.tokenizer.source,
              "tokenizer": model.tokenizer.fingerprint()[:16], "checkpoint_format": imported.format,
              "score_dtype": "float32", "precision": precision, "metric_units": "percent", "rank_base": 1,
              "eval_changes": notes, "resolution_changes": list(getattr(model, "resolution_changes", [])),
              "setting": proto.setting}
    if dataset == "msrvtt":
        outcome, ref, fields, bench = _video(model, root, split, proto, dev, precision)
    else:
        data, read_as = open_split(dataset, root, split, model)
        counts = check_counts(dataset, split, (data.n_images, data.n_texts), proto.check_counts)
        rproto = retrieval_protocol(model, proto, dataset, 256 if dev.type == "cuda" else 32)
        outcome = evaluate_image_text(model, data, rproto, dev, precision)
        ref = data.ref
        bench = ("zeroshot_retrieval" if proto.setting == "zero-shot" else "finetuned_retrieval") \
            + ("" if rproto.scoring == "itc" else "_rerank") + ("" if dataset == "builtin" else f"@{dataset}")
        fields = {
            "task": "image-text retrieval", "split": f"{data.ref.dataset}/{data.ref.split}",
            "n_images": data.n_images, "n_texts": data.n_texts, "captions_per_image": data.captions_per_image(),
            "split_counts": counts, "scoring": rproto.scoring, "rerank_k": rproto.rerank_k,
            "tie_policy": rproto.tie_policy, "prompt": rproto.prompt,
            "prompt_side": "text (before every caption)" if rproto.prompt else None, **read_as}
        if rproto.rerank_k is not None:
            fields["ranks_beyond_k"] = f"censored at {rproto.rerank_k + 1}"
    fields = {**common, **fields, **(extra_protocol or {})}
    job = job_name(imported, weights)
    out_dir = output / name / "jobs" / job / "eval" / bench
    config = {"eval": {"weights": str(weights), "format": imported.format, "arch": arch, "dataset": dataset,
                       "root": None if root is None else str(root), "split": split,
                       "protocol": proto.model_dump(mode="json")},
              "method": {"name": imported.method, "size": imported.size,
                         **model.config.model_dump(mode="json")},
              "tokenizer": {"fingerprint": model.tokenizer.fingerprint(), "source": model.tokenizer.source,
                            "vocab_size": model.tokenizer.vocab_size}}
    record = EvaluationRecord(
        suite=name, job=job, method=imported.method, size=imported.size, seed=0, config=config,
        environment=fingerprint(dev), benchmark=bench, dataset=ref.to_json(), protocol=fields,
        metrics=outcome.metrics, lineage=imported.lineage, timings=outcome.timings,
        card=get_spec(imported.method).card.to_json())
    if isinstance(outcome, VideoOutcome):
        save_ranks(out_dir / RANKS_FILE, v2t=outcome.v2t_ranks, t2v=outcome.t2v_ranks)
    else:
        save_ranks(out_dir / RANKS_FILE, i2t=outcome.i2t_ranks, t2i=outcome.t2i_ranks)
    path = write_record(out_dir / RESULTS_FILE, record)
    return EvalResult(path, record, outcome)


def _video(model: VLPModel, root: Path | None, split: str, proto: EvalProtocol, dev: Any, precision: str
           ) -> tuple[VideoOutcome, Any, dict[str, Any], str]:
    """MSR-VTT text-video retrieval (1k-A by default): frames decoded at the model's resolution, meanP."""
    if proto.scoring not in (None, "itc") or proto.prompt:
        raise ConfigError("MSR-VTT is scored by ITC without a prompt here (CLIP4Clip's zero-shot protocol)")
    split = "1k-A" if split == "test" else split
    res = int(model.preprocess.config.resolution)
    source = open_dataset("msrvtt", root, {"frame_size": res})
    data = source.video_split(split)
    counts = check_counts("msrvtt", source.canonical_split(split), (data.n_videos, len(data.texts)),
                          proto.check_counts)
    outcome = evaluate_text_video(model, data, VideoRetrievalProtocol(tie_policy=proto.tie_policy), dev, precision)
    bench = ("video_retrieval" if proto.setting == "zero-shot" else "finetuned_video_retrieval") + "@msrvtt"
    fields = {"task": "text-video retrieval", "split": f"{data.ref.dataset}/{data.ref.split}",
              "n_videos": data.n_videos, "n_texts": len(data.texts), "captions_per_video": data.captions_per_video(),
              "split_counts": counts, "frames_per_video": data.videos.n_frames, "frame_decode": f"PyAV, frames resized to {res} x {res}",
              "frame_sampling": "middle frame of n equal segments (deterministic)",
              "video_embedding": "mean of frame embeddings (meanP)" if type(model).encode_video is
              VLPModel.encode_video else f"{type(model).__name__}.encode_video",
              "scoring": "itc", "tie_policy": proto.tie_policy, "post_processing": "none"}
    return outcome, data.ref, fields, bench


def write_summary_json(path: Path, record: EvaluationRecord, extra: dict[str, Any] | None = None) -> Path:
    """`--json`: the metrics under the names records use (i2t_R1 ... rsum), the protocol, and where the record is."""
    payload = {"metrics": record.metrics, "protocol": record.protocol, "dataset": record.dataset,
               "method": record.method, "arch": record.size, "job": record.job, "benchmark": record.benchmark,
               "lineage": record.lineage, **(extra or {})}
    return atomic_write_json(path, payload)


def untrained_latency(suite: Suite, methods: Sequence[str] | None, size: str, *, repeats: int | None = None,
                      twice: bool = False, on_model: Callable[[str, dict[str, Any]], None] | None = None
                      ) -> dict[str, Any]:
    """`vlpbench latency`: each method (default: the suite's) timed untrained at `size` with the suite's latency
    protocol (`repeats` overrides its repeats), device and precision, on the captions the suite's `latency`
    benchmark times; {"environment", "precision", "protocol", "methods": time_models' entries}."""
    from vlpbench.benchmarks.pipeline import build_tokenizer

    dataset = open_dataset(suite.dataset.name, suite.dataset.root, suite.dataset.options)
    tokenizer = build_tokenizer(suite, dataset)
    texts = list(dataset.retrieval_split(suite.latency.text_split).texts)
    device = resolve_device(suite.device)
    precision = resolve_precision(suite.precision, device)
    proto = suite.latency.protocol
    if repeats:
        proto = proto.model_copy(update={"repeats": repeats})

    def build(name: str) -> Callable[[], VLPModel]:
        return lambda: create_method(suite.method_of(name), size, tokenizer=tokenizer,
                                     overrides=suite.overrides_for(name, "method")).to(device)

    models = {name: build(name) for name in (methods or suite.method_names())}
    return {"environment": fingerprint(device), "precision": precision, "protocol": proto.model_dump(mode="json"),
            "methods": time_models(models, texts, proto, device, precision, twice=twice, on_model=on_model)}


def standalone_tracking_uri(output: Path, uri: str | None) -> str:
    """The MLflow store of `vlpbench eval`/`reproduce` (`uri`, else $MLFLOW_TRACKING_URI, else <output>/mlflow.db),
    checked before anything is evaluated."""
    from vlpbench.reports import tracking

    return tracking.check_tracking_uri(tracking.resolve_tracking_uri(uri, output))


def log_standalone(record_path: Path, output: Path, name: str, uri: str | None) -> str:
    """Log a record of `vlpbench eval`/`reproduce` (already written) to MLflow, experiment vlpbench-<name>; returns
    the run id."""
    from vlpbench.reports import tracking

    resolved = tracking.resolve_tracking_uri(uri, output)
    artifact_root = output / "mlartifacts" if tracking.is_embedded(resolved) else None
    return tracking.log_evaluation(record_path, output / name, resolved, f"vlpbench-{name}", artifact_root)
