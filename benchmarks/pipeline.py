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

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from vlpbench.benchmarks.data import BuiltinDataset, open_dataset
from vlpbench.benchmarks.data.corpora import PairFilesDataset
from vlpbench.benchmarks.data.types import PairCorpus
from vlpbench.benchmarks.data.builtin.build import default_cache_root
from vlpbench.benchmarks.job import Job
from vlpbench.benchmarks.registry import distributed_benchmarks, get_benchmark, list_benchmarks
from vlpbench.benchmarks.runtime import fingerprint, resolve_device, seed_everything
from vlpbench.benchmarks.suite import CorpusSpec, Suite
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.benchmarks.training.loop import Trainer
from vlpbench.benchmarks.training.dvae import DVAERequest, DVAEWeights, ensure_dvae, tokenizer_crop
from vlpbench.benchmarks.training.unimodal import UnimodalRequest, ensure_unimodal
from vlpbench.methods import (TextTokenizer, VLPModel, create_method, get_spec, image_preprocess_config, load_pretrained,
                     method_config, save_pretrained, train_recipe, unimodal_towers, visual_tokenizer_config,
                     visual_tokenizer_grid)
from vlpbench.methods.config import ConfigError, StrictModel, deep_merge, sha256_json
from vlpbench.methods.distributed import world
from vlpbench.reports.store import (PRETRAIN_FILE, RESULTS_FILE, PretrainRecord, atomic_write_json, read_evaluation,
                           read_pretrain, write_record)


@dataclass
class JobOutcome:
    job: Job
    job_dir: Path
    pretrain: Path
    results: dict[str, Path] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)


def open_corpus(spec: CorpusSpec) -> PairCorpus:
    """A real pretraining corpus; every image path is checked (CSV/JSONL) or every shard indexed (WebDataset)."""
    return PairFilesDataset(spec.name, Path(spec.root), spec.layout).pretrain_corpus()


def pretrain_corpus(suite: Suite, dataset: BuiltinDataset) -> PairCorpus:
    """What a suite pretrains on: its real corpus (dataset.corpus) or the built-in pretrain split."""
    return dataset.pretrain_corpus() if suite.dataset.corpus is None else open_corpus(suite.dataset.corpus)


def build_tokenizer(suite: Suite, dataset: BuiltinDataset, corpus: PairCorpus | None = None) -> TextTokenizer:
    """The suite's tokenizer: a local one, or WordPiece trained on the text the models train on — the built-in
    pretraining and training splits, and the real corpus' captions when the suite pretrains on one (`corpus`:
    the already opened pretrain_corpus, to avoid reading it twice). Evaluation text is never used."""
    spec = suite.tokenizer
    if spec.kind == "pretrained":
        if not spec.path:
            raise ValueError("tokenizer.kind 'pretrained' needs tokenizer.path (a local directory)")
        return TextTokenizer.from_dir(spec.path)
    real = None if suite.dataset.corpus is None else (corpus or pretrain_corpus(suite, dataset))
    key = sha256_json({"dataset": type(dataset).__name__, "fingerprint": dataset.fingerprint,
                       "corpus": None if real is None else real.ref.to_json(),
                       "tokenizer": spec.model_dump(mode="json")})
    if key not in _TRAINED_TOKENIZERS:
        text = ([] if real is None else list(real.texts)) + dataset.tokenizer_corpus()
        trained = TextTokenizer.train_wordpiece(text, vocab_size=spec.vocab_size)
        _TRAINED_TOKENIZERS[key] = (trained.backend.to_str(), trained.source)
    backend, source = _TRAINED_TOKENIZERS[key]
    return TextTokenizer(Tokenizer.from_str(backend), source)


# WordPiece vocabularies trained in this process, by what decides them (dataset and corpus fingerprints, tokenizer
# spec): training reads every pretraining and training text (~10 s for the built-in world), and `vlpbench run`
# opens the tokenizer once per job. Each call gets its own tokenizer object made from the stored JSON.
_TRAINED_TOKENIZERS: dict[str, tuple[str, str]] = {}


def unimodal_request(job: Job, mcfg: StrictModel) -> UnimodalRequest | None:
    """The unimodal stage a job needs: None for recipes that start from scratch. Its towers are those the method
    declares (MethodSpec.unimodal_towers); one whose weights the config already names (vision.weights,
    text.pretrained_dir) is not trained."""
    recipe = train_recipe(job.method, job.size, job.recipe_overrides)
    if recipe.init != "unimodal":
        return None
    towers = unimodal_towers(job.method, mcfg)
    vision, text = towers.get("vision"), towers.get("text")
    if vision is None and text is None:
        raise ConfigError(f"{job.method}: recipe init 'unimodal' needs towers to start from, and the method declares "
                          "none (MethodSpec.unimodal_towers)")
    return UnimodalRequest(vision=None if vision is None or vision.weights else vision,  # type: ignore[union-attr]
                           preprocess=image_preprocess_config(job.method, mcfg),
                           text=None if text is None or text.pretrained_dir else text,  # type: ignore[union-attr]
                           budget=job.suite.unimodal_budget(job.size), seed=job.seed)


def dvae_request(job: Job, mcfg: StrictModel) -> DVAERequest | None:
    """The visual-tokenizer stage a job needs: methods whose masked-vision objective is on (COTS's `cmvm`) and whose
    visual tokenizer (MethodSpec.visual_tokenizer) has no weights in the config."""
    vt = visual_tokenizer_config(job.method, mcfg)
    if vt is None or vt.weights:
        return None
    from vlpbench.methods.visual_tokenizer import DOWNSAMPLE

    grid = visual_tokenizer_grid(job.method, mcfg)
    preprocess = image_preprocess_config(job.method, mcfg)
    assert preprocess is not None   # register_method: a method with a visual tokenizer declares its preprocessing
    return DVAERequest(tokenizer=vt, grid=grid, crop=tokenizer_crop(preprocess, grid * DOWNSAMPLE),
                       budget=job.suite.dvae_budget(job.size), seed=job.seed)


def _tokenizer_init(job: Job, mcfg: StrictModel, dataset: BuiltinDataset) -> dict[str, Any] | None:
    vt = visual_tokenizer_config(job.method, mcfg)
    if vt is None:
        return None
    if vt.weights:
        return {"kind": "supplied", "weights": str(vt.weights)}
    req = dvae_request(job, mcfg)
    assert req is not None
    return {"kind": "stage", "fingerprint": req.fingerprint(dataset.fingerprint),
            "budget": req.budget.model_dump(mode="json")}


def _init_config(job: Job, request: UnimodalRequest | None, mcfg: StrictModel, tokenizer: TextTokenizer,
                 dataset: BuiltinDataset) -> dict[str, Any]:
    if request is None:
        return {"kind": "scratch"}
    towers = unimodal_towers(job.method, mcfg)
    vision, text = towers.get("vision"), towers.get("text")
    out: dict[str, Any] = {
        "kind": "unimodal",
        "vision": "supplied: " + str(vision.weights) if vision is not None and vision.weights else  # type: ignore[union-attr]
                  ("stage" if request.vision is not None else None),
        "text": "supplied: " + str(text.pretrained_dir) if text is not None and text.pretrained_dir else  # type: ignore[union-attr]
                ("stage" if request.text is not None else None)}
    if request.vision is not None or request.text is not None:
        out["stage"] = {"fingerprint": request.fingerprint(tokenizer, dataset.fingerprint),
                        "budget": request.budget.model_dump(mode="json")}
    return out


def resolved_config(job: Job, dataset: BuiltinDataset, tokenizer: TextTokenizer,
                    corpus: PairCorpus | None = None) -> dict[str, Any]:
    """`corpus`: the real pretraining corpus when the suite names one (its identity enters the job fingerprint)."""
    suite = job.suite
    mcfg = method_config(job.method, job.size, job.method_overrides)
    recipe = train_recipe(job.method, job.size, job.recipe_overrides)
    budget = suite.budget(job.size)
    init = _init_config(job, unimodal_request(job, mcfg), mcfg, tokenizer, dataset)
    visual_tokenizer = _tokenizer_init(job, mcfg, dataset)
    if visual_tokenizer is not None:
        init["visual_tokenizer"] = visual_tokenizer
    return {
        "init": init,
        "method": {"name": job.method, "size": job.size, **mcfg.model_dump(mode="json"),
                   **({"variant": _variant_entry(job)} if job.variant else {})},
        "train": {**budget.model_dump(mode="json"), "seed": job.seed, "precision": suite.precision,
                  "device": suite.device, "recipe": recipe.model_dump(mode="json"),
                  **({"compile": True} if suite.compile else {})},   # (absent when off: fingerprints kept)
        "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint,
                    "options": dataset.manifest["config"], **_corpus_entry(suite, corpus)},
        "tokenizer": {**suite.tokenizer.model_dump(mode="json"), "fingerprint": tokenizer.fingerprint(),
                      "vocab_size": tokenizer.vocab_size},
        **benchmark_settings(suite),
    }


def benchmark_settings(suite: Suite) -> dict[str, Any]:
    """The sections of the suite's benchmarks (and the built-in sections, always), as recorded in config.json."""
    specs = [get_benchmark(n) for n in list_benchmarks()]
    return {s.section: suite.section(s.section).model_dump(mode="json") for s in specs
            if s.always_in_config or s.name in suite.benchmarks}


def _corpus_entry(suite: Suite, corpus: PairCorpus | None) -> dict[str, Any]:
    spec = suite.dataset.corpus
    if spec is None:
        return {}  # (absent rather than null: configurations of built-in runs keep their fingerprints)
    if corpus is None:
        raise ValueError("the suite pretrains on dataset.corpus: pass the opened corpus")
    return {"pretrain_corpus": {**corpus.ref.to_json(), "root": spec.root, "n_pairs": len(corpus),
                                "layout": spec.layout.model_dump(mode="json")}}


def _variant_entry(job: Job) -> dict[str, Any]:
    v = job.suite.variants[job.label]
    return {"name": job.label, "description": v.description, "method_overrides": v.method_overrides,
            "recipe_overrides": v.recipe_overrides}


def job_fingerprint(config: dict[str, Any]) -> str:
    """What the trained weights depend on. A benchmark's settings do not change them, so its section stays out,
    except the fields its spec names in `fingerprinted`. (Fine-tuning is a benchmark: its own fingerprint guards
    the fine-tuned model, finetune/finetune.json.)"""
    sections = {s.section: s for s in map(get_benchmark, list_benchmarks())}
    keyed = {k: v for k, v in config.items() if k not in sections}
    keyed.update({k: {f: config[k][f] for f in sorted(sections[k].fingerprinted)} for k in config
                  if k in sections and sections[k].fingerprinted})
    if "train" in keyed:   # checkpoint spacing does not change the weights (resume is exact): hashed as 0, so the
        keyed["train"] = {**keyed["train"], "checkpoint_every": 0}   # fingerprints from before it was set stay
    return sha256_json(keyed)


def prepare_init(job: Job, dataset: BuiltinDataset, tokenizer: TextTokenizer, cache_root: Path | None,
                 log: Callable[[str], None]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(method-config overrides that load the initial weights, lineage entries describing them)."""
    mcfg = method_config(job.method, job.size, job.method_overrides)
    overrides, lineage = _prepare_towers(job, mcfg, dataset, tokenizer, cache_root, log)
    weights = ensure_job_dvae(job, dataset, cache_root, log=lambda msg: log(f"[{job.name}] {msg}"))
    if weights is not None:
        slot = get_spec(job.method).visual_tokenizer
        assert slot is not None
        overrides[slot.field] = {"weights": str(weights.encoder)}
        lineage.append({**weights.record, "cache_dir": str(weights.directory)})
    return overrides, lineage


def ensure_job_dvae(job: Job, dataset: BuiltinDataset, cache_root: Path | None,
                    log: Callable[[str], None] = print) -> DVAEWeights | None:
    """The visual tokenizer a job's masked vision modelling trains against (the cached stage, trained on the
    dataset's pretraining images when missing), or None when the job needs none."""
    request = dvae_request(job, method_config(job.method, job.size, job.method_overrides))
    if request is None:
        return None
    return ensure_dvae(request, dataset.fingerprint, lambda: dataset.images("pretrain"), lambda: dataset.images("val"),
                       {"train": dataset.ref("pretrain").to_json(), "heldout": dataset.ref("val").to_json()},
                       cache_root or default_cache_root(), log=log)


def _prepare_towers(job: Job, mcfg: StrictModel, dataset: BuiltinDataset, tokenizer: TextTokenizer,
                    cache_root: Path | None, log: Callable[[str], None]
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    request = unimodal_request(job, mcfg)
    if request is None:
        return {}, []
    lineage: list[dict[str, Any]] = []
    fields = get_spec(job.method).unimodal_towers            # tower kind -> its config field
    towers = unimodal_towers(job.method, mcfg)
    supplied: dict[str, str] = {}
    if "vision" in towers and towers["vision"].weights:  # type: ignore[union-attr]
        supplied[f"{fields['vision']}.weights"] = towers["vision"].weights  # type: ignore[union-attr]
    if "text" in towers and towers["text"].pretrained_dir:  # type: ignore[union-attr]
        supplied[f"{fields['text']}.pretrained_dir"] = towers["text"].pretrained_dir  # type: ignore[union-attr]
    if supplied:
        lineage.append({"stage": "init", "supplied": supplied})
    if request.vision is None and request.text is None:
        return {}, lineage
    weights = ensure_unimodal(request, tokenizer, dataset.fingerprint, dataset.labelled_images,
                              dataset.text_corpus, cache_root or default_cache_root(),
                              log=lambda msg: log(f"[{job.name}] {msg}"))
    overrides: dict[str, Any] = {}
    if request.vision is not None:
        overrides[fields["vision"]] = {"weights": str(weights.vision_weights)}
    if request.text is not None:
        overrides[fields["text"]] = {"pretrained_dir": str(weights.text_dir)}
    lineage.append({**weights.record, "cache_dir": str(weights.directory)})
    return overrides, lineage


def check_resumable(job_dir: Path, resume: str, fp: str, pre: PretrainRecord | None) -> None:
    """`--resume` on a job whose configuration changed is refused before anything is touched: the finished
    record, its evaluations and config.json stay as they were."""
    from vlpbench.benchmarks.training.checkpoint import CheckpointError, checkpoint_fingerprint, resolve_resume

    path = resolve_resume(resume, job_dir / "checkpoints")
    if path is not None and checkpoint_fingerprint(path) != fp:
        raise CheckpointError(f"{path} was written by a run with another configuration than this one; nothing was "
                              "changed. Resume with the configuration it was written with, or drop --resume to "
                              "pretrain again (the job's records are then replaced)")
    if path is None and pre is not None:
        raise CheckpointError(f"{job_dir}: the configuration changed since its pretraining finished and there is no "
                              "checkpoint of this configuration to resume; nothing was changed. Drop --resume to "
                              "pretrain again (the job's records are then replaced)")


def _train(job: Job, job_dir: Path, model: VLPModel, corpus: PairCorpus, config: dict[str, Any],
           fp: str, resume: str | None, progress: bool, init_lineage: list[dict[str, Any]]) -> PretrainRecord | None:
    """Pretrain and (rank 0) write the model and its record; in a distributed run every process trains its shard
    of each global batch and the others return None."""
    suite = job.suite
    budget = suite.budget(job.size)
    tcfg = suite.train_config(budget, job.seed, train_recipe(job.method, job.size, job.recipe_overrides))
    rank, size = world()
    data = PretrainBatches(corpus, model, tcfg.batch_size, job.seed, shard=(rank, size))
    if rank == 0 and resume is None and (job_dir / "checkpoints").exists():
        shutil.rmtree(job_dir / "checkpoints")  # a fresh start must not leave older steps for 'latest'
    _barrier()
    summary = Trainer(model, data, tcfg, job_dir, progress=progress, job_fingerprint=fp).fit(resume=resume)
    if rank != 0:
        return None
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


def _barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


class MissingPretraining(RuntimeError):
    """An evaluation needs a finished pretraining of the same configuration and there is none."""


def run_job(job: Job, suite_dir: Path, *, resume: str | None = None, progress: bool = True,
            cache_root: Path | None = None, log: Callable[[str], None] = print,
            benchmarks: Sequence[str] | None = None, require_pretrained: bool = False) -> JobOutcome:
    """Pretrain `job` (or reuse its pretraining) and run `benchmarks` (default: the suite's) on the model.

    require_pretrained: an evaluation task launched after its pretraining task — fail if the pretraining record is
    missing or stale instead of pretraining again (two tasks must never train the same job folder)."""
    suite = job.suite
    job_dir = suite_dir / "jobs" / job.name
    dataset = open_dataset(suite.dataset.name, suite.dataset.root, suite.dataset.options, cache_root)
    corpus = pretrain_corpus(suite, dataset)
    tokenizer = build_tokenizer(suite, dataset, corpus)
    config = resolved_config(job, dataset, tokenizer, corpus if suite.dataset.corpus else None)
    fp = job_fingerprint(config)
    outcome = JobOutcome(job, job_dir, job_dir / PRETRAIN_FILE)

    pre_path = job_dir / PRETRAIN_FILE
    pre = read_pretrain(pre_path) if pre_path.is_file() else None
    rank, size = world()
    _barrier()   # every process decided on the same files before any is removed
    if pre is not None and pre.job_fingerprint == fp:
        model, _ = load_pretrained(job_dir / "model")
        outcome.reused.append("pretrain")
        log(f"[{job.name}] pretraining reused from {pre_path}")
    else:
        if require_pretrained:
            state = "is missing" if pre is None else "was made with another configuration"
            raise MissingPretraining(f"[{job.name}] the pretraining record {pre_path} {state}: its pretraining did "
                                     "not finish (`vlpbench status` shows a submitted task's state; re-submit that "
                                     "task, or pretrain with `vlpbench run` and the same suite and --set options)")
        if resume is not None:
            check_resumable(job_dir, resume, fp, pre)   # before anything is removed: a refusal changes nothing
        if rank == 0:
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
            f"{suite.budget(job.size).batch_size} on {corpus.ref.dataset}/{corpus.ref.split} ({len(corpus):,} pairs)")
        pre = _train(job, job_dir, model, corpus, config, fp, resume, progress, init_lineage)
        if pre is None:   # a distributed run's other processes: rank 0 wrote the model; evaluation is one process's
            return outcome
    assert pre is not None
    specs = [get_benchmark(b) for b in (suite.benchmarks if benchmarks is None else benchmarks)]
    unsupported = [s.name for s in specs if not s.distributed]
    if size > 1 and unsupported:
        raise RuntimeError(f"[{job.name}] {unsupported} run in one process (only {sorted(distributed_benchmarks())} "
                           f"evaluate in a process group); this process is rank {rank} of {size}")
    for spec in specs:
        paths = {n: job_dir / "eval" / n / RESULTS_FILE for n in spec.records(job, model)}
        if all(p.is_file() and read_evaluation(p).config == config for p in paths.values()):
            outcome.results.update(paths)
            outcome.reused.append(spec.name)
            continue
        log(f"[{job.name}] {spec.name} on {dataset.name}/{spec.describe_split(suite)}")
        with torch.no_grad():
            outcome.results.update(spec.run(job, job_dir, model, dataset, config, pre))
    return outcome
