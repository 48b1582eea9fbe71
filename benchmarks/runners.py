"""Benchmark runners: each turns a trained model into evaluation records (results.json + ranks), written
atomically, with the protocol that says how every number was obtained.

    zeroshot_retrieval   image-text retrieval (ITC; top-k re-ranking for fusion models) on the suite's split and
                         on real Karpathy sets (`zeroshot_retrieval@<label>`)
    finetuned_retrieval  the pretrained model fine-tuned with its method's recipe (finetune_step), then evaluated
                         like zero-shot (its own model folder: jobs/<job>/finetune/)
    video_retrieval      text-video retrieval on the built-in video split and MSR-VTT (`video_retrieval@msrvtt`)
    product_retrieval    M5Product same-category retrieval per feature type
    latency              per-stage inference latency and the per-query cost model

`BENCHMARK_RECORDS` names the records a benchmark writes for a model, so finished work can be reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.data import BuiltinDataset, open_dataset
from benchmarks.data.types import RetrievalSplit, VideoRetrievalSplit
from benchmarks.evaluation.latency import measure_latency
from benchmarks.evaluation.products import evaluate_products
from benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from benchmarks.evaluation.video import evaluate_text_video
from benchmarks.runtime import fingerprint, resolve_device, resolve_precision, seed_everything
from benchmarks.suite import EvalDataset
from benchmarks.training.batches import PretrainBatches
from benchmarks.training.loop import TrainConfig, Trainer
from methods.distributed import world
from methods import VLPModel, finetune_recipe, get_spec, load_pretrained, save_pretrained
from methods.media import PRODUCT_MODALITIES
from reports.store import (RANKS_FILE, RESULTS_FILE, EvaluationRecord, PretrainRecord, atomic_write_json, save_ranks,
                           write_record)

if TYPE_CHECKING:
    from benchmarks.pipeline import Job


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
        elif e["stage"] == "released":
            parts.append(f"released weights {e['checkpoint']} ({e['format']}, sha256 {e['sha256'][:12]})")
        elif e["stage"] == "pretrain":
            parts.append(f"pretrained on {e['dataset']['dataset']}/{e['dataset']['split']} "
                         f"({e['steps']} x {e['batch_size']})")
        elif e["stage"] == "finetune":
            parts.append(f"fine-tuned on {e['dataset']['dataset']}/{e['dataset']['split']} "
                         f"({e['steps']} x {e['batch_size']})")
    return " -> ".join(parts) or "untrained"


def _zeroshot_protocols(job: Job, model: VLPModel, prefix: str = "zeroshot_retrieval"
                        ) -> dict[str, tuple[EvalDataset | None, RetrievalProtocol]]:
    """{record name: (real dataset or None = the suite's split, protocol)}: ITC for every model, plus top-k
    re-ranking for fusion models, on the suite's split and on every real set of retrieval.datasets."""
    spec = job.suite.retrieval
    rerank = spec.rerank and model.supports_rerank
    scoring = spec.rerank_scoring or model.card.default_protocol.get("scoring", "itm")
    out: dict[str, tuple[EvalDataset | None, RetrievalProtocol]] = {}
    for real in [None, *spec.datasets]:
        suffix = "" if real is None else f"@{real.key}"
        out[prefix + suffix] = (real, spec.protocol)
        if rerank:
            k = spec.rerank_k if real is None else real.rerank_k or _card_k(model, real.name) or spec.rerank_k
            out[prefix + "_rerank" + suffix] = (real, spec.protocol.model_copy(
                update={"scoring": scoring, "rerank_k": k}))
    return out


def _card_k(model: VLPModel, dataset: str) -> int | None:
    """The re-ranking k a method's card gives for a real dataset (TCL: k_test 128 Flickr30K, 256 COCO)."""
    k = model.card.default_protocol.get("rerank_k")
    return k.get(dataset) if isinstance(k, dict) else k


def _retrieval_split(job: Job, real: EvalDataset | None, dataset: BuiltinDataset, model: VLPModel
                     ) -> tuple[RetrievalSplit, dict[str, Any]]:
    """The split a zero-shot record is computed on, and the protocol fields saying how it was read."""
    if real is None:
        return dataset.retrieval_split(job.suite.retrieval.split), {}
    options = dict(real.options)
    options.setdefault("image_size", int(model.preprocess.config.resolution))  # decode once, at the model's size
    options.setdefault("image_resize", model.preprocess.config.resize_mode)
    source = open_dataset(real.name, real.root, options)
    split = source.retrieval_split(real.split)
    size = options["image_size"]
    decode = (f"Resize(({size}, {size})) bicubic, aspect not kept (ALBEF/TCL retrieval transform)"
              if options["image_resize"] == "squash" else f"Resize({size}) shortest side, bicubic, CenterCrop({size})")
    return split, {"image_decode": decode, "annotation_format": source.format,
                   "captions": "raw from the annotation file"}


def at_resolution(model: VLPModel, real: EvalDataset | None) -> VLPModel:
    """The model a real set is evaluated with: itself, or a copy at the set's `resolution` (position embeddings
    resampled; the copy's `resolution_changes` say from what)."""
    if real is None or real.resolution is None or real.resolution == model.preprocess.config.resolution:
        return model
    import copy

    resized = copy.deepcopy(model)
    resized.set_eval_resolution(real.resolution)
    return resized


def _eval_context(job: Job, job_dir: Path, model: VLPModel) -> tuple[torch.device, str, list[dict[str, Any]]]:
    """(device, precision, the saved model's lineage) every evaluation of a job starts from; moves the model."""
    device = resolve_device(job.suite.device)
    model.to(device)
    lineage = json.loads((job_dir / "model" / "model_config.json").read_text())["lineage"]
    return device, resolve_precision(job.suite.precision, device), lineage


def _image_text_record(job: Job, out_dir: Path, model: VLPModel, split: RetrievalSplit, proto: RetrievalProtocol,
                       setting: str, lineage: list[dict[str, Any]], lineage_note: str, read_as: dict[str, Any],
                       config: dict[str, Any], device: torch.device, precision: str) -> Path:
    """Evaluate image-text retrieval on a split and write its record (ranks first, then results.json)."""
    outcome = evaluate_image_text(model, split, proto, device, precision)
    protocol = {
        "task": "image-text retrieval", "setting": setting, "lineage": describe_lineage(lineage) + lineage_note,
        "split": f"{split.ref.dataset}/{split.ref.split}", "n_images": split.n_images, "n_texts": split.n_texts,
        "captions_per_image": split.captions_per_image(),
        "resolution": int(model.preprocess.config.resolution), "text_max_length": model.text_max_length,
        **({"resolution_changes": model.resolution_changes} if getattr(model, "resolution_changes", None) else {}),
        "scoring": proto.scoring, "rerank_k": proto.rerank_k, "tie_policy": proto.tie_policy,
        "prompt": proto.prompt, "precision": precision, "metric_units": "percent", "rank_base": 1,
        "tokenizer": config["tokenizer"]["fingerprint"][:16], **read_as,
    }
    if proto.rerank_k is not None:
        protocol["ranks_beyond_k"] = f"censored at {proto.rerank_k + 1}"
    rank, size = world()
    protocol["eval_processes"] = size
    if rank != 0:   # a process group evaluates together; rank 0 writes what every process computed
        return out_dir / RESULTS_FILE
    save_ranks(out_dir / RANKS_FILE, i2t=outcome.i2t_ranks, t2i=outcome.t2i_ranks)
    return _write(job, out_dir, config, device, split.ref, protocol, outcome.metrics, lineage, outcome.timings)


def _write(job: Job, out_dir: Path, config: dict[str, Any], device: torch.device, ref: Any, protocol: dict[str, Any],
           metrics: dict[str, float], lineage: list[dict[str, Any]], timings: dict[str, float]) -> Path:
    """One evaluation record (benchmark = the folder's name), written atomically under out_dir."""
    record = EvaluationRecord(
        suite=job.suite.name, job=job.name, method=job.method, variant=job.variant, size=job.size, seed=job.seed,
        config=config, environment=fingerprint(device), benchmark=out_dir.name, dataset=ref.to_json(),
        protocol=protocol, metrics=metrics, lineage=lineage, timings=timings, card=get_spec(job.method).card.to_json())
    return write_record(out_dir / RESULTS_FILE, record)


def _evaluate_zeroshot(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                       config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    device, precision, lineage = _eval_context(job, job_dir, model)
    written = {}
    splits: dict[str, tuple[RetrievalSplit, dict[str, Any]]] = {}
    models: dict[str, VLPModel] = {}
    for name, (real, proto) in _zeroshot_protocols(job, model).items():
        key = "" if real is None else real.key
        if key not in splits:
            models[key] = at_resolution(model, real)
            splits[key] = _retrieval_split(job, real, dataset, models[key])
        split, read_as = splits[key]
        written[name] = _image_text_record(job, job_dir / "eval" / name, models[key], split, proto, "zero-shot",
                                           lineage, " (no fine-tuning)", read_as, config, device, precision)
    return written


def _finetune(job: Job, job_dir: Path, dataset: BuiltinDataset, pre: PretrainRecord, device: torch.device
              ) -> tuple[VLPModel, list[dict[str, Any]]]:
    """The job's model fine-tuned for retrieval (reused when finetune/finetune.json matches), and its lineage."""
    suite, spec = job.suite, job.suite.finetune
    budget = spec.budget_for(job.size)
    recipe = finetune_recipe(job.method, job.size, spec.recipe_overrides.get(job.label))
    corpus = _finetune_source(job, dataset, pre)[0].pretrain_corpus(spec.train_split) if spec.dataset \
        else dataset.finetune_corpus(spec.train_split)
    plan = {"from_pretrain": pre.job_fingerprint, "dataset": corpus.ref.to_json(), "seed": job.seed,
            "budget": budget.model_dump(mode="json"), "recipe": recipe.model_dump(mode="json"),
            "objective": "the method's finetune_step",
            "precision": suite.precision, "device": suite.device, **({"compile": True} if suite.compile else {})}
    fp = sha256_json(plan)
    ft_dir = job_dir / "finetune"
    record_path = ft_dir / "finetune.json"
    if record_path.is_file() and json.loads(record_path.read_text()).get("fingerprint") == fp:
        model, _ = load_pretrained(ft_dir / "model")
        return model.to(device), json.loads((ft_dir / "model" / "model_config.json").read_text())["lineage"]
    shutil.rmtree(ft_dir, ignore_errors=True)
    model, _ = load_pretrained(job_dir / "model")          # a fresh copy: the zero-shot model stays as it was
    model.start_finetuning()   # e.g. TCL's id queue starts at -100, as the official model_retrieval.py
    lineage = json.loads((job_dir / "model" / "model_config.json").read_text())["lineage"]
    data = PretrainBatches(corpus, model, budget.batch_size, job.seed, fields=model.finetune_fields)
    tcfg = TrainConfig(steps=budget.steps, batch_size=budget.batch_size, seed=job.seed, precision=suite.precision,
                       device=suite.device, log_every=budget.log_every, checkpoint_every=budget.checkpoint_every,
                       recipe=recipe, compile=suite.compile, data_workers=suite.data_workers)
    with torch.enable_grad():
        summary = Trainer(model, data, tcfg, ft_dir, progress=False, job_fingerprint=fp, stage="finetune").fit()
    lineage = [*lineage, {"stage": "finetune", "dataset": corpus.ref.to_json(), "steps": summary.steps,
                          "batch_size": budget.batch_size, "seed": job.seed, "from": "pretrain",
                          "recipe_source": recipe.source, "fingerprint": fp}]
    save_pretrained(model, ft_dir / "model", job.method, job.size, lineage)
    atomic_write_json(record_path, {"fingerprint": fp, "plan": plan, "summary": summary.to_json()})
    return model.to(device), lineage


def _finetune_source(job: Job, dataset: BuiltinDataset, pre: PretrainRecord) -> tuple[Any, dict[str, Any]]:
    """The dataset fine-tuned on and evaluated (built-in, or a real Karpathy set decoded at the model's
    resolution), and the protocol fields saying how it was read."""
    real = job.suite.finetune.dataset
    if real is None:
        return dataset, {}
    res = int(pre.config["method"]["preprocess"]["resolution"])
    options = {"image_size": res, **real.options}
    source = open_dataset(real.name, real.root, options)
    return source, {"image_decode": f"Resize(({options['image_size']}, {options['image_size']})) bicubic, aspect "
                                    "not kept (ALBEF/TCL retrieval transform)", "annotation_format": source.format}


def _evaluate_finetuned(job: Job, job_dir: Path, model: VLPModel, dataset: BuiltinDataset,
                        config: dict[str, Any], pre: PretrainRecord) -> dict[str, Path]:
    device = resolve_device(job.suite.device)
    precision = resolve_precision(job.suite.precision, device)
    tuned, lineage = _finetune(job, job_dir, dataset, pre, device)
    source, read_as = _finetune_source(job, dataset, pre)
    tuned_on = lineage[-1]["dataset"]
    recipe = {"finetune_recipe": tuned_recipe_source(lineage)}
    own = (source.retrieval_split(job.suite.finetune.split), {**read_as, **recipe})
    written = {}
    for name, (real, proto) in _zeroshot_protocols(job, tuned, "finetuned_retrieval").items():
        # the suite's real sets too: a model fine-tuned on one set evaluated on another is ALBEF/TCL's
        # "zero-shot Flickr30K" (the COCO-fine-tuned model) — labelled as a transfer, never as zero-shot
        evaluated = at_resolution(tuned, real)
        split, how = own if real is None else _retrieval_split(job, real, dataset, evaluated)
        same = split.ref.dataset == tuned_on["dataset"]
        setting = "fine-tuned" if same else f"transfer: fine-tuned on {tuned_on['dataset']}/{tuned_on['split']}"
        written[name] = _image_text_record(job, job_dir / "eval" / name, evaluated, split, proto, setting, lineage,
                                           "", {**how, **recipe}, config, device, precision)
    return written


def tuned_recipe_source(lineage: list[dict[str, Any]]) -> str:
    return next((e.get("recipe_source", "") for e in reversed(lineage) if e["stage"] == "finetune"), "")


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


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
        **({"resolution_changes": model.resolution_changes} if getattr(model, "resolution_changes", None) else {}),
        "precision": precision, "metric_units": "percent", "tokenizer": config["tokenizer"]["fingerprint"][:16],
    }
    return {"product_retrieval": _write(job, job_dir / "eval" / "product_retrieval", config, device, corpus.ref,
                                        protocol, outcome.metrics, lineage, outcome.timings)}


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
        written[name] = _write(job, out_dir, config, device, split.ref, protocol, outcome.metrics, lineage,
                               outcome.timings)
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
        "precision": precision, "device": str(device), "torch_threads": proto.threads or torch.get_num_threads(),
        "model inputs": "each model at its own resolution and text length (metrics model/*); weights do not "
                        "change timings, so lineage is not part of this protocol"}
    metrics = {**latency_metrics(result), "model/resolution": float(model.preprocess.config.resolution),
               "model/text_max_length": float(model.text_max_length)}
    return {"latency": _write(job, job_dir / "eval" / "latency", config, device, dataset.ref(suite.latency.text_split),
                              protocol, metrics, lineage, {})}


BENCHMARK_RUNNERS: dict[str, Callable[..., dict[str, Path]]] = {"zeroshot_retrieval": _evaluate_zeroshot,
                                                                 "finetuned_retrieval": _evaluate_finetuned,
                                                                 "latency": _evaluate_latency,
                                                                 "video_retrieval": _evaluate_video,
                                                                 "product_retrieval": _evaluate_products}
# The records a benchmark writes for a model (used to tell whether finished work can be reused).
BENCHMARK_RECORDS: dict[str, Callable[[Job, VLPModel], list[str]]] = {
    "zeroshot_retrieval": lambda job, model: list(_zeroshot_protocols(job, model)),
    "video_retrieval": lambda job, model: ["video_retrieval"] + [f"video_retrieval@{d.name}"
                                                                 for d in job.suite.video.datasets],
    "product_retrieval": lambda job, model: ["product_retrieval"],
    "latency": lambda job, model: ["latency"],
    "finetuned_retrieval": lambda job, model: list(_zeroshot_protocols(job, model, "finetuned_retrieval"))}
