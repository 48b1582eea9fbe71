"""One job of a suite: pretrain a method, then run each benchmark on the trained model.

A job folder holds everything a job produced::

    jobs/<method>-<size>-s<seed>/
      config.json         resolved configuration (what every number below was produced with)
      checkpoints/        full-state training checkpoints (resume)
      history.jsonl       training losses, lr and throughput over steps
      model/              trained weights + config + tokenizer (save_pretrained)
      pretrain.json       pretraining record, written atomically after model/
      eval/<benchmark>/results.json, ranks.npz   evaluation records, written atomically

Finished work is reused: a job whose records exist for the same job fingerprint is not run
again, so re-running a suite only does what is missing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.data import BuiltinDataset, open_dataset
from benchmarks.data.builtin.build import default_cache_root
from benchmarks.evaluation.products import evaluate_products
from benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from benchmarks.evaluation.latency import measure_latency
from benchmarks.evaluation.video import evaluate_text_video
from benchmarks.runtime import fingerprint, resolve_device, resolve_precision, seed_everything
from benchmarks.data.types import RetrievalSplit, VideoRetrievalSplit
from benchmarks.suite import EvalDataset, Suite
from benchmarks.training.batches import PretrainBatches
from benchmarks.training.loop import TrainConfig, Trainer
from benchmarks.training.dvae import DVAERequest, ensure_dvae, tokenizer_crop
from benchmarks.training.unimodal import UnimodalRequest, ensure_unimodal
from methods import (TextTokenizer, VLPModel, create_method, get_spec, load_pretrained, method_config,
                     save_pretrained, train_recipe)
from methods.config import ConfigError, StrictModel, deep_merge
from methods.media import PRODUCT_MODALITIES
from reports.store import (PRETRAIN_FILE, RANKS_FILE, RESULTS_FILE, EvaluationRecord, PretrainRecord,
                           atomic_write_json, read_evaluation, read_pretrain, save_ranks, write_record)


@dataclass(frozen=True)
class Job:
    suite: Suite
    method: str
    size: str
    seed: int
    variant: str | None = None   # a suite variant of `method` (its own overrides)

    @property
    def label(self) -> str:
        return self.variant or self.method

    @property
    def name(self) -> str:
        return f"{self.label}-{self.size}-s{self.seed}"

    @property
    def method_overrides(self) -> dict[str, Any]:
        return self.suite.overrides_for(self.label, "method")

    @property
    def recipe_overrides(self) -> dict[str, Any]:
        return self.suite.overrides_for(self.label, "recipe")


def expand_jobs(suite: Suite) -> list[Job]:
    return [Job(suite, suite.method_of(m), s, seed, m if m in suite.variants else None)
            for m in suite.method_names() for s in suite.sizes for seed in suite.seeds]


@dataclass
class JobOutcome:
    job: Job
    job_dir: Path
    pretrain: Path
    results: dict[str, Path] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)


def build_tokenizer(suite: Suite, dataset: BuiltinDataset) -> TextTokenizer:
    spec = suite.tokenizer
    if spec.kind == "pretrained":
        if not spec.path:
            raise ValueError("tokenizer.kind 'pretrained' needs tokenizer.path (a local directory)")
        return TextTokenizer.from_dir(spec.path)
    return TextTokenizer.train_wordpiece(dataset.tokenizer_corpus(), vocab_size=spec.vocab_size)


def unimodal_request(job: Job, mcfg: StrictModel) -> UnimodalRequest | None:
    """The unimodal stage a job needs: None for recipes that start from scratch. A tower whose weights
    the method config already names (vision.weights, text.pretrained_dir) is not trained."""
    recipe = train_recipe(job.method, job.size, job.recipe_overrides)
    if recipe.init != "unimodal":
        return None
    vision, text = getattr(mcfg, "vision", None), getattr(mcfg, "text", None)
    if vision is None and text is None:
        raise ConfigError(f"{job.method}: recipe init 'unimodal' needs a config with 'vision' or 'text' towers")
    return UnimodalRequest(vision=None if vision is None or vision.weights else vision,
                           preprocess=getattr(mcfg, "preprocess", None),
                           text=None if text is None or text.pretrained_dir else text,
                           budget=job.suite.unimodal_budget(job.size), seed=job.seed)


def dvae_request(job: Job, mcfg: StrictModel) -> DVAERequest | None:
    """The visual-tokenizer stage a job needs: methods with a `visual_tokenizer` whose weights the config
    does not name, and whose masked-vision objective is on (COTS's `cmvm`)."""
    vt = getattr(mcfg, "visual_tokenizer", None)
    if vt is None or vt.weights or not getattr(mcfg, "cmvm", True):
        return None
    from methods.visual_tokenizer import DOWNSAMPLE

    vision = mcfg.vision  # type: ignore[attr-defined]
    grid = vision.image_size // vision.patch_size
    return DVAERequest(tokenizer=vt, grid=grid,
                       crop=tokenizer_crop(mcfg.preprocess, grid * DOWNSAMPLE),  # type: ignore[attr-defined]
                       budget=job.suite.dvae_budget(job.size), seed=job.seed)


def _tokenizer_init(job: Job, mcfg: StrictModel, dataset: BuiltinDataset) -> dict[str, Any] | None:
    vt = getattr(mcfg, "visual_tokenizer", None)
    if vt is None or not getattr(mcfg, "cmvm", True):
        return None
    if vt.weights:
        return {"kind": "supplied", "weights": str(vt.weights)}
    req = dvae_request(job, mcfg)
    assert req is not None
    return {"kind": "stage", "fingerprint": req.fingerprint(dataset.fingerprint),
            "budget": req.budget.model_dump(mode="json")}


def _init_config(request: UnimodalRequest | None, mcfg: StrictModel, tokenizer: TextTokenizer,
                 dataset: BuiltinDataset) -> dict[str, Any]:
    if request is None:
        return {"kind": "scratch"}
    vision, text = getattr(mcfg, "vision", None), getattr(mcfg, "text", None)
    out: dict[str, Any] = {
        "kind": "unimodal",
        "vision": "supplied: " + str(vision.weights) if vision is not None and vision.weights else
                  ("stage" if request.vision is not None else None),
        "text": "supplied: " + str(text.pretrained_dir) if text is not None and text.pretrained_dir else
                ("stage" if request.text is not None else None)}
    if request.vision is not None or request.text is not None:
        out["stage"] = {"fingerprint": request.fingerprint(tokenizer, dataset.fingerprint),
                        "budget": request.budget.model_dump(mode="json")}
    return out


def resolved_config(job: Job, dataset: BuiltinDataset, tokenizer: TextTokenizer) -> dict[str, Any]:
    suite = job.suite
    mcfg = method_config(job.method, job.size, job.method_overrides)
    recipe = train_recipe(job.method, job.size, job.recipe_overrides)
    budget = suite.budget(job.size)
    init = _init_config(unimodal_request(job, mcfg), mcfg, tokenizer, dataset)
    visual_tokenizer = _tokenizer_init(job, mcfg, dataset)
    if visual_tokenizer is not None:
        init["visual_tokenizer"] = visual_tokenizer
    return {
        "init": init,
        "method": {"name": job.method, "size": job.size, **mcfg.model_dump(mode="json"),
                   **({"variant": _variant_entry(job)} if job.variant else {})},
        "train": {**budget.model_dump(mode="json"), "seed": job.seed, "precision": suite.precision,
                  "device": suite.device, "recipe": recipe.model_dump(mode="json")},
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint,
                    "options": dataset.manifest["config"]},
        "tokenizer": {**suite.tokenizer.model_dump(mode="json"), "fingerprint": tokenizer.fingerprint(),
                      "vocab_size": tokenizer.vocab_size},
        "retrieval": suite.retrieval.model_dump(mode="json"),
        "video": suite.video.model_dump(mode="json"),
        "latency": suite.latency.model_dump(mode="json"),
        "products": suite.products.model_dump(mode="json"),
    }


def _variant_entry(job: Job) -> dict[str, Any]:
    v = job.suite.variants[job.label]
    return {"name": job.label, "description": v.description, "method_overrides": v.method_overrides,
            "recipe_overrides": v.recipe_overrides}


def job_fingerprint(config: dict[str, Any]) -> str:
    # Evaluation settings do not change the trained weights, so they stay out of the fingerprint.
    keyed = {k: v for k, v in config.items() if k not in ("retrieval", "video", "products", "latency")}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def prepare_init(job: Job, dataset: BuiltinDataset, tokenizer: TextTokenizer, cache_root: Path | None,
                 log: Callable[[str], None]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(method-config overrides that load the initial weights, lineage entries describing them)."""
    mcfg = method_config(job.method, job.size, job.method_overrides)
    overrides, lineage = _prepare_towers(job, mcfg, dataset, tokenizer, cache_root, log)
    tok_request = dvae_request(job, mcfg)
    if tok_request is not None:
        weights = ensure_dvae(tok_request, dataset.fingerprint, lambda: dataset.images("pretrain"),
                              lambda: dataset.images("val"),
                              {"train": dataset.ref("pretrain").to_json(), "heldout": dataset.ref("val").to_json()},
                              cache_root or default_cache_root(), log=lambda msg: log(f"[{job.name}] {msg}"))
        overrides["visual_tokenizer"] = {"weights": str(weights.encoder)}
        lineage.append({**weights.record, "cache_dir": str(weights.directory)})
    return overrides, lineage


def _prepare_towers(job: Job, mcfg: StrictModel, dataset: BuiltinDataset, tokenizer: TextTokenizer,
                    cache_root: Path | None, log: Callable[[str], None]
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    request = unimodal_request(job, mcfg)
    if request is None:
        return {}, []
    lineage: list[dict[str, Any]] = []
    supplied = {k: v for k, v in (("vision.weights", getattr(getattr(mcfg, "vision", None), "weights", None)),
                                  ("text.pretrained_dir", getattr(getattr(mcfg, "text", None), "pretrained_dir",
                                                                  None))) if v}
    if supplied:
        lineage.append({"stage": "init", "supplied": supplied})
    if request.vision is None and request.text is None:
        return {}, lineage
    weights = ensure_unimodal(request, tokenizer, dataset.fingerprint, dataset.labelled_images,
                              dataset.text_corpus, cache_root or default_cache_root(),
                              log=lambda msg: log(f"[{job.name}] {msg}"))
    overrides: dict[str, Any] = {}
    if request.vision is not None:
        overrides["vision"] = {"weights": str(weights.vision_weights)}
    if request.text is not None:
        overrides["text"] = {"pretrained_dir": str(weights.text_dir)}
    lineage.append({**weights.record, "cache_dir": str(weights.directory)})
    return overrides, lineage


def _train(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset, config: dict[str, Any],
           fp: str, resume: str | None, progress: bool, init_lineage: list[dict[str, Any]]) -> PretrainRecord:
    suite = job.suite
    budget = suite.budget(job.size)
    tcfg = TrainConfig(steps=budget.steps, batch_size=budget.batch_size, seed=job.seed,
                       precision=suite.precision, device=suite.device, log_every=budget.log_every,
                       checkpoint_every=budget.checkpoint_every,
                       recipe=train_recipe(job.method, job.size, job.recipe_overrides))
    corpus = dataset.pretrain_corpus()
    data = PretrainBatches(corpus, model, tcfg.batch_size, job.seed)
    if resume is None and (job_dir / "checkpoints").exists():
        shutil.rmtree(job_dir / "checkpoints")  # a fresh start must not leave older steps for 'latest'
    summary = Trainer(model, data, tcfg, job_dir, progress=progress, job_fingerprint=fp).fit(resume=resume)
    init = "random" if not init_lineage else " + ".join(e["stage"] for e in init_lineage)
    lineage = [*init_lineage, {"stage": "pretrain", "dataset": corpus.ref.to_json(), "steps": summary.steps,
                               "batch_size": tcfg.batch_size, "seed": job.seed, "init": init,
                               "job_fingerprint": fp}]
    save_pretrained(model, job_dir / "model", job.method, job.size, lineage)
    record = PretrainRecord(
        suite=suite.name, job=job.name, method=job.method, variant=job.variant, size=job.size, seed=job.seed,
        config=config,
        environment=fingerprint(resolve_device(suite.device)), job_fingerprint=fp, dataset=corpus.ref.to_json(),
        summary=summary.to_json(), model_dir="model", card=get_spec(job.method).card.to_json())
    write_record(job_dir / PRETRAIN_FILE, record)
    return record


def describe_lineage(lineage: list[dict[str, Any]]) -> str:
    """One line for reports: 'init (...) -> pretrained on builtin/pretrain (250 x 256)'."""
    parts = []
    for e in lineage:
        if e["stage"] == "unimodal-init":
            bits = []
            if "vision" in e:
                bits.append(f"ViT main-object classification {e['vision']['steps']} steps")
            if "text" in e:
                bits.append(f"BERT masked-LM {e['text']['steps']} steps")
            parts.append("unimodal init (" + ", ".join(bits) + ")")
        elif e["stage"] == "visual-tokenizer":
            parts.append(f"dVAE tokenizer ({e['vocab_size']} codes, {e['steps']} steps)")
        elif e["stage"] == "init":
            parts.append("init from " + ", ".join(f"{k}={v}" for k, v in e["supplied"].items()))
        elif e["stage"] == "pretrain":
            parts.append(f"pretrained on {e['dataset']['dataset']}/{e['dataset']['split']} "
                         f"({e['steps']} x {e['batch_size']})")
    return " -> ".join(parts) or "untrained"


def _zeroshot_protocols(job: Job, model: VLPModel) -> dict[str, tuple[EvalDataset | None, RetrievalProtocol]]:
    """{record name: (real dataset or None = the suite's split, protocol)}: ITC for every model, plus top-k
    re-ranking for fusion models, on the suite's split and on every real set of retrieval.datasets."""
    spec = job.suite.retrieval
    rerank = spec.rerank and model.supports_rerank
    scoring = spec.rerank_scoring or model.card.default_protocol.get("scoring", "itm")
    out: dict[str, tuple[EvalDataset | None, RetrievalProtocol]] = {}
    for real in [None, *spec.datasets]:
        suffix = "" if real is None else f"@{real.key}"
        out["zeroshot_retrieval" + suffix] = (real, spec.protocol)
        if rerank:
            k = spec.rerank_k if real is None or real.rerank_k is None else real.rerank_k
            out["zeroshot_retrieval_rerank" + suffix] = (real, spec.protocol.model_copy(
                update={"scoring": scoring, "rerank_k": k}))
    return out


def _retrieval_split(job: Job, real: EvalDataset | None, dataset: BuiltinDataset, model: VLPModel
                     ) -> tuple[RetrievalSplit, dict[str, Any]]:
    """The split a zero-shot record is computed on, and the protocol fields saying how it was read."""
    if real is None:
        return dataset.retrieval_split(job.suite.retrieval.split), {}
    options = dict(real.options)
    options.setdefault("image_size", int(model.preprocess.config.resolution))  # decode once, at the model's size
    source = open_dataset(real.name, real.root, options)
    split = source.retrieval_split(real.split)
    return split, {"image_decode": f"Resize(({options['image_size']}, {options['image_size']})) bicubic, aspect "
                                   "not kept (ALBEF/TCL retrieval transform)",
                   "annotation_format": source.format, "captions": "raw from the annotation file"}


def _eval_context(job: Job, job_dir: Path, model: VLPModel) -> tuple[torch.device, str, list[dict[str, Any]]]:
    """(device, precision, the saved model's lineage) every evaluation of a job starts from; moves the model."""
    device = resolve_device(job.suite.device)
    model.to(device)
    lineage = json.loads((job_dir / "model" / "model_config.json").read_text())["lineage"]
    return device, resolve_precision(job.suite.precision, device), lineage


def _evaluate_zeroshot(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                       config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    suite = job.suite
    device, precision, lineage = _eval_context(job, job_dir, model)
    written = {}
    splits: dict[str, tuple[RetrievalSplit, dict[str, Any]]] = {}
    for name, (real, proto) in _zeroshot_protocols(job, model).items():
        key = "" if real is None else real.key
        if key not in splits:
            splits[key] = _retrieval_split(job, real, dataset, model)
        split, read_as = splits[key]
        outcome = evaluate_image_text(model, split, proto, device, precision)
        protocol = {
            "task": "image-text retrieval", "setting": "zero-shot",
            "lineage": describe_lineage(lineage) + " (no fine-tuning)",
            "split": f"{split.ref.dataset}/{split.ref.split}", "n_images": split.n_images, "n_texts": split.n_texts,
            "captions_per_image": split.captions_per_image(),
            "resolution": int(model.preprocess.config.resolution), "text_max_length": model.text_max_length,
            "scoring": proto.scoring, "rerank_k": proto.rerank_k, "tie_policy": proto.tie_policy,
            "prompt": proto.prompt, "precision": precision, "metric_units": "percent", "rank_base": 1,
            "tokenizer": config["tokenizer"]["fingerprint"][:16], **read_as,
        }
        if proto.rerank_k is not None:
            protocol["ranks_beyond_k"] = f"censored at {proto.rerank_k + 1}"
        out_dir = job_dir / "eval" / name
        save_ranks(out_dir / RANKS_FILE, i2t=outcome.i2t_ranks, t2i=outcome.t2i_ranks)
        record = EvaluationRecord(
            suite=suite.name, job=job.name, method=job.method, variant=job.variant, size=job.size, seed=job.seed,
        config=config,
            environment=fingerprint(device), benchmark=name, dataset=split.ref.to_json(),
            protocol=protocol, metrics=outcome.metrics, lineage=lineage, timings=outcome.timings,
            card=get_spec(job.method).card.to_json())
        written[name] = write_record(out_dir / RESULTS_FILE, record)
    return written


def _evaluate_products(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                       config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    suite = job.suite
    device, precision, lineage = _eval_context(job, job_dir, model)
    corpus = dataset.product_corpus(suite.products.split)
    proto = suite.products.protocol
    outcome = evaluate_products(model, corpus, proto, device, precision)
    labels = corpus.extras["category"]
    missing = corpus.extras.get("missing")
    protocol = {
        "task": "same-category product retrieval", "setting": "zero-shot (pretrain features)",
        "lineage": describe_lineage(lineage) + " (no fine-tuning)",
        "split": f"{corpus.ref.dataset}/{corpus.ref.split}", "n_items": len(corpus),
        "n_categories": len(set(labels)), "queries": "every item; gallery: the same items (leave-one-out)",
        "relevance": "same category label", "title": "alt_text", "similarity": "dot product",
        "feature_types": outcome.feature_types, "ks": list(proto.ks), "max_topk": proto.max_topk,
        "exclude_query": proto.exclude_query, "positives_include_query": proto.positives_include_query,
        "cutoff": proto.cutoff, "missing_fraction": None if missing is None else
        {m: round(float(v), 4) for m, v in zip(PRODUCT_MODALITIES, missing.mean(axis=0))},
        "resolution": int(model.preprocess.config.resolution), "text_max_length": model.text_max_length,
        "precision": precision, "metric_units": "percent", "tokenizer": config["tokenizer"]["fingerprint"][:16],
    }
    record = EvaluationRecord(
        suite=suite.name, job=job.name, method=job.method, variant=job.variant, size=job.size, seed=job.seed,
        config=config, environment=fingerprint(device), benchmark="product_retrieval", dataset=corpus.ref.to_json(),
        protocol=protocol, metrics=outcome.metrics, lineage=lineage, timings=outcome.timings,
        card=get_spec(job.method).card.to_json())
    return {"product_retrieval": write_record(job_dir / "eval" / "product_retrieval" / RESULTS_FILE, record)}


def _video_splits(job: Job, dataset: BuiltinDataset, model: VLPModel
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


def _evaluate_video(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                    config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    suite = job.suite
    device, precision, lineage = _eval_context(job, job_dir, model)
    proto = suite.video.protocol
    pooled = "mean of frame embeddings (meanP)" if type(model).encode_video is VLPModel.encode_video \
        else f"{type(model).__name__}.encode_video"
    written = {}
    for name, (split, read_as) in _video_splits(job, dataset, model).items():
        outcome = evaluate_text_video(model, split, proto, device, precision)
        counts = np.bincount(split.txt2vid, minlength=split.n_videos)
        protocol = {
            "task": "text-video retrieval", "setting": "zero-shot", "training_split": "none (no fine-tuning)",
            "lineage": describe_lineage(lineage) + " (no fine-tuning)",
            "split": f"{split.ref.dataset}/{split.ref.split}", "n_videos": split.n_videos, "n_texts": len(split.texts),
            "captions_per_video": {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())},
            **read_as, "video_embedding": pooled, "resolution": int(model.preprocess.config.resolution),
            "text_max_length": model.text_max_length, "scoring": "itc", "tie_policy": proto.tie_policy,
            "post_processing": "none", "precision": precision, "metric_units": "percent", "rank_base": 1,
            "tokenizer": config["tokenizer"]["fingerprint"][:16]}
        out_dir = job_dir / "eval" / name
        save_ranks(out_dir / RANKS_FILE, v2t=outcome.v2t_ranks, t2v=outcome.t2v_ranks)
        record = EvaluationRecord(
            suite=suite.name, job=job.name, method=job.method, variant=job.variant, size=job.size, seed=job.seed,
            config=config, environment=fingerprint(device), benchmark=name, dataset=split.ref.to_json(),
            protocol=protocol, metrics=outcome.metrics, lineage=lineage, timings=outcome.timings,
            card=get_spec(job.method).card.to_json())
        written[name] = write_record(out_dir / RESULTS_FILE, record)
    return written


def latency_metrics(result: dict[str, Any]) -> dict[str, float]:
    """measure_latency's nested result as flat metric names: '<op>/p50_ms', 'per_query_ms/<design>@N', ..."""
    out = {f"{op}/{k}": float(v) for op, t in result["timings"].items() for k, v in t.items()}
    for group in ("per_query_ms", "ratios", "params", "flops"):
        out.update({f"{group}/{k}": float(v) for k, v in result[group].items()})
    return out


def _evaluate_latency(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                      config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    suite = job.suite
    device, precision, lineage = _eval_context(job, job_dir, model)
    proto = suite.latency.protocol
    texts = list(dataset.retrieval_split(suite.latency.text_split).texts)
    seed_everything(job.seed)
    result = measure_latency(model, texts, proto, device, precision, seed=job.seed)
    protocol = {
        "task": "inference latency", "batch_size": proto.batch_size, "gallery_sizes": proto.gallery_sizes,
        "top_k": proto.top_k, "rerank_k (re-ranking models)": proto.rerank_k,
        "cross_batch (re-ranking models)": proto.cross_batch, "warmup": proto.warmup,
        "repeats": proto.repeats, "timed": "model forward only; tokenisation timed apart; preprocessing and data "
                                          "loading excluded; device synchronised around every call",
        "gallery": "random unit vectors of the embedding size (scoring cost does not depend on content)",
        "exhaustive": "extrapolated: text encoding + N x (cross-encoder time per pair at cross_batch)",
        "texts": f"the first {proto.batch_size} captions of {dataset.name}/{suite.latency.text_split}",
        "precision": precision, "device": str(device), "torch_threads": torch.get_num_threads(),
        "model inputs": "each model at its own resolution and text length (metrics model/*); weights do not "
                        "change timings, so lineage is not part of this protocol"}
    record = EvaluationRecord(
        suite=suite.name, job=job.name, method=job.method, variant=job.variant, size=job.size, seed=job.seed,
        config=config, environment=fingerprint(device), benchmark="latency",
        dataset=dataset.ref(suite.latency.text_split).to_json(), protocol=protocol,
        metrics={**latency_metrics(result), "model/resolution": float(model.preprocess.config.resolution),
                 "model/text_max_length": float(model.text_max_length)},
        lineage=lineage, timings={}, card=get_spec(job.method).card.to_json())
    return {"latency": write_record(job_dir / "eval" / "latency" / RESULTS_FILE, record)}


BENCHMARK_RUNNERS: dict[str, Callable[..., dict[str, Path]]] = {"zeroshot_retrieval": _evaluate_zeroshot,
                                                                 "latency": _evaluate_latency,
                                                                 "video_retrieval": _evaluate_video,
                                                                 "product_retrieval": _evaluate_products}
# The records a benchmark writes for a model (used to tell whether finished work can be reused).
BENCHMARK_RECORDS: dict[str, Callable[[Job, VLPModel], list[str]]] = {
    "zeroshot_retrieval": lambda job, model: list(_zeroshot_protocols(job, model)),
    "video_retrieval": lambda job, model: ["video_retrieval"] + [f"video_retrieval@{d.name}"
                                                                 for d in job.suite.video.datasets],
    "product_retrieval": lambda job, model: ["product_retrieval"],
    "latency": lambda job, model: ["latency"]}


def run_job(job: Job, suite_dir: Path, *, resume: str | None = None, progress: bool = True,
            cache_root: Path | None = None, log: Callable[[str], None] = print) -> JobOutcome:
    suite = job.suite
    job_dir = suite_dir / "jobs" / job.name
    dataset = open_dataset(suite.dataset.name, suite.dataset.root, suite.dataset.options, cache_root)
    tokenizer = build_tokenizer(suite, dataset)
    config = resolved_config(job, dataset, tokenizer)
    fp = job_fingerprint(config)
    outcome = JobOutcome(job, job_dir, job_dir / PRETRAIN_FILE)

    pre_path = job_dir / PRETRAIN_FILE
    pre = read_pretrain(pre_path) if pre_path.is_file() else None
    if pre is not None and pre.job_fingerprint == fp:
        model, _ = load_pretrained(job_dir / "model")
        outcome.reused.append("pretrain")
        log(f"[{job.name}] pretraining reused from {pre_path}")
    else:
        if pre is not None:
            log(f"[{job.name}] configuration changed since the last run: pretraining again")
            pre_path.unlink()
        shutil.rmtree(job_dir / "eval", ignore_errors=True)
        job_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(job_dir / "config.json", config)
        init_overrides, init_lineage = prepare_init(job, dataset, tokenizer, cache_root, log)
        seed_everything(job.seed)  # model initialisation is seeded too
        model = create_method(job.method, job.size, tokenizer=tokenizer,
                              overrides=deep_merge(job.method_overrides, init_overrides))
        log(f"[{job.name}] pretraining: {suite.budget(job.size).steps} steps × batch "
            f"{suite.budget(job.size).batch_size} on {dataset.name}/pretrain")
        pre = _train(job, job_dir, model, dataset, config, fp, resume, progress, init_lineage)
    for bench in suite.benchmarks:
        names = BENCHMARK_RECORDS[bench](job, model)
        paths = {n: job_dir / "eval" / n / RESULTS_FILE for n in names}
        if all(p.is_file() and read_evaluation(p).config == config for p in paths.values()):
            outcome.results.update(paths)
            outcome.reused.append(bench)
            continue
        split = {"product_retrieval": suite.products.split, "video_retrieval": suite.video.split,
                 "latency": suite.latency.text_split}.get(bench, suite.retrieval.split)
        log(f"[{job.name}] {bench} on {dataset.name}/{split}")
        with torch.no_grad():
            outcome.results.update(BENCHMARK_RUNNERS[bench](job, job_dir, model, dataset, config, pre))
    return outcome
