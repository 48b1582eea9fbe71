"""A suite: which methods, sizes, seeds, dataset and benchmarks to run, and where to log.

`vlpbench run` with no file runs `Suite()`: every registered method at `tiny`, seed 0, on the
built-in dataset, pretraining then zero-shot retrieval. A YAML file may set any field; an
unknown or malformed field is an error naming the file and the field.

Example::

    name: clip-seeds
    methods: [clip]
    sizes: [tiny]
    seeds: [0, 1, 2]
    dataset: {name: builtin, options: {n_pretrain: 20000}}
    # or pretrain on a real corpus (the built-in dataset still gives the evaluation splits):
    # dataset: {corpus: {name: cc3m, root: /data/cc3m, layout: {files: ["{00000..00331}.tar"]}}}
    benchmarks: [zeroshot_retrieval]
    train: {tiny: {steps: 200, batch_size: 256}}
    method_overrides: {clip: {embed_dim: 256}}
    variants:                     # extra jobs: a method with its own overrides (ablations, options)
      clip-wide: {method: clip, method_overrides: {embed_dim: 512}, description: "512-d space"}
    tracking_uri: http://mlflow.mylab:5000
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator

from benchmarks.data.corpora import PairFilesLayout
from benchmarks.evaluation.latency import LatencyProtocol
from benchmarks.evaluation.products import ProductEvalProtocol
from benchmarks.evaluation.retrieval import RetrievalProtocol
from benchmarks.evaluation.video import VideoRetrievalProtocol
from benchmarks.runtime import Precision
from benchmarks.training.dvae import DVAEBudget
from benchmarks.training.unimodal import UnimodalBudget
from methods import SIZES, default_suite_methods, list_methods
from methods.config import ConfigError, StrictModel, deep_merge, validate

BENCHMARKS: tuple[str, ...] = ("zeroshot_retrieval", "finetuned_retrieval", "video_retrieval", "product_retrieval",
                               "latency")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"   # suite and variant names (they become folder names)


def _members(values: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; available: {list(allowed)}")
    return values


class CorpusSpec(StrictModel):
    """A real image-caption corpus to pretrain on (CSV/TSV, JSON lines, WebDataset shards or Parquet, local files)."""

    name: str = Field("pairs", pattern=NAME_PATTERN, description="What records call the corpus (e.g. cc3m).")
    root: str = Field(description="The corpus folder; layout.files are relative to it.")
    layout: PairFilesLayout = Field(default_factory=PairFilesLayout)


class DatasetSpec(StrictModel):
    name: Literal["builtin"] = "builtin"
    root: str | None = Field(None, description="A built dataset folder; None = generate into the cache.")
    options: dict[str, Any] = Field(default_factory=dict, description="Generator options (BuiltinConfig).")
    corpus: CorpusSpec | None = Field(
        None, description="Pretrain on this real corpus instead of the built-in pretrain split. The built-in "
                          "dataset still gives the evaluation and fine-tuning splits and the data of the "
                          "unimodal and visual-tokenizer stages (the ImageNet / BookCorpus analogues, as in the "
                          "papers, where those towers were trained on other data than the pair corpus); the "
                          "WordPiece tokenizer is trained on the corpus' captions and the built-in training text.")


class Budget(StrictModel):
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(0, ge=0)


class TokenizerSpec(StrictModel):
    kind: Literal["wordpiece", "pretrained"] = "wordpiece"
    vocab_size: int = Field(1000, ge=64, description="WordPiece vocabulary trained on the corpus.")
    path: str | None = Field(None, description="Local directory with tokenizer.json or vocab.txt.")


class EvalDataset(StrictModel):
    """A real image-text retrieval set read from local files (nothing is downloaded), evaluated zero-shot beside
    the suite's own split."""

    name: Literal["flickr30k", "coco"]
    root: str = Field(description="The dataset folder (annotations + images; `vlpbench data verify` checks it).")
    split: Literal["train", "val", "test"] = "test"
    options: dict[str, Any] = Field(default_factory=dict, description="Layout fields (KarpathyLayout); "
                                                                      "image_size defaults to the model's resolution.")
    rerank_k: int | None = Field(None, ge=10, description="k for re-ranking on this set; None = the method card's "
                                                         "k for it (TCL: k_test 128 Flickr30K, 256 COCO), else "
                                                         "retrieval.rerank_k.")
    label: str | None = Field(None, pattern=NAME_PATTERN, description="Record name suffix; default: the name.")
    resolution: int | None = Field(None, ge=16, description="Evaluate this set at another input size than the "
                                                            "model's (a copy of it, ViT position embeddings resampled "
                                                            "bicubically as ALBEF/TCL's interpolate_pos_embed): TCL's "
                                                            "released protocol is 384 for a 256 px model.")
    omit_when_default = frozenset({"resolution"})

    @property
    def key(self) -> str:
        return self.label or self.name


class RetrievalSpec(StrictModel):
    split: str = "test"
    datasets: list[EvalDataset] = Field(default_factory=list,
                                        description="Real retrieval sets (Karpathy Flickr30K/COCO) also evaluated "
                                                    "zero-shot; records 'zeroshot_retrieval@<label>'.")

    @field_validator("datasets")
    @classmethod
    def _unique_labels(cls, v: list[EvalDataset]) -> list[EvalDataset]:
        keys = [d.key for d in v]
        if len(set(keys)) != len(keys):
            raise ValueError(f"retrieval.datasets: labels {keys} repeat; give each entry its own 'label'")
        return v
    protocol: RetrievalProtocol = Field(default_factory=RetrievalProtocol,
                                        description="The ITC evaluation every method gets.")
    rerank: bool = Field(True, description="Also evaluate models with a re-ranking head with top-k re-ranking.")
    rerank_scoring: Literal["itm", "itm+itc"] | None = Field(
        None, description="None = the method's own protocol (TCL/ALBEF: itm; LAVIS/BLIP: itm+itc).")
    # ≥ 10: ranks beyond k are censored at k + 1, so R@K is only observed for K ≤ k (R@10 is reported)
    rerank_k: int = Field(16, ge=10, description="k on the built-in 1K test split (Flickr30K: 128, COCO: 256); "
                                               "kept small so the CPU default suite stays minutes long.")


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


DEFAULT_FINETUNE: dict[str, dict[str, int]] = {
    "tiny": {"steps": 100, "batch_size": 128, "log_every": 10},
    "base": {"steps": 5000, "batch_size": 256, "log_every": 50, "checkpoint_every": 1000},
}


class FinetuneSpec(StrictModel):
    """Retrieval fine-tuning: each pretrained model is fine-tuned on a training split with its method's recipe
    (methods' FINETUNE_RECIPES) and evaluated on the test split; the lineage says so in every record."""

    train_split: str = Field("train", description="Split fine-tuned on (built-in: 5,000 images, one row per caption).")
    split: str = Field("test", description="Split evaluated after fine-tuning.")
    dataset: EvalDataset | None = Field(None, description="A real Karpathy set (Flickr30K / COCO from local files) to "
                                                          "fine-tune on (train_split) and evaluate (split) instead "
                                                          "of the built-in one; its `split` field is not used.")
    budget: dict[str, Budget] = Field(default_factory=dict, description="Steps / batch per size (defaults per size).")
    recipe_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                        description="Per method: merged over its fine-tuning recipe.")

    def budget_for(self, size: str) -> Budget:
        return self.budget[size] if size in self.budget else Budget(**DEFAULT_FINETUNE[size])


class LatencySpec(StrictModel):
    protocol: LatencyProtocol = Field(default_factory=LatencyProtocol)
    text_split: str = Field("test", description="Captions timed for text encoding (their lengths matter).")


class ProductSpec(StrictModel):
    split: str = Field("test", description="The split whose items are queries and gallery (leave-one-out).")
    protocol: ProductEvalProtocol = Field(default_factory=ProductEvalProtocol,
                                          description="M5Product's evaluator: K list, top-10 cap, cut-off rule.")


DEFAULT_BUDGETS: dict[str, dict[str, int]] = {
    "tiny": {"steps": 250, "batch_size": 256, "log_every": 10, "checkpoint_every": 25},  # a kill loses <= 3 min
    "base": {"steps": 20000, "batch_size": 256, "log_every": 50, "checkpoint_every": 2000},
}


DEFAULT_UNIMODAL: dict[str, dict[str, int]] = {
    "tiny": {"vision_steps": 300, "text_steps": 300, "batch_size": 256},
    "base": {"vision_steps": 50000, "text_steps": 50000, "batch_size": 256},
}


DEFAULT_DVAE: dict[str, dict[str, int]] = {
    "tiny": {"steps": 300, "batch_size": 64},
    "base": {"steps": 20000, "batch_size": 128},
}


class Variant(StrictModel):
    """A method run under its own name with its own overrides, beside the plain method (an ablation row)."""

    method: str
    method_overrides: dict[str, Any] = Field(default_factory=dict,
                                             description="Merged over the suite's method_overrides of `method`.")
    recipe_overrides: dict[str, Any] = Field(default_factory=dict,
                                             description="Merged over the suite's recipe_overrides of `method`.")
    description: str = ""

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in list_methods():
            raise ValueError(f"unknown method {v!r}; registered: {list_methods()}")
        return v


class Suite(StrictModel):
    name: str = Field("default", pattern=NAME_PATTERN)
    # Declared before `methods`, whose check reads it.
    variants: dict[str, Variant] = Field(
        default_factory=dict, description="Named variants of methods (own overrides), run as extra jobs; 'methods' "
                                          "may list them by name, and 'all' includes every one.")
    methods: list[str] | Literal["all"] = "all"
    sizes: list[str] = Field(default_factory=lambda: ["tiny"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    benchmarks: list[str] = Field(default_factory=lambda: list(BENCHMARKS), min_length=1)
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    train: dict[str, Budget] = Field(default_factory=dict, description="Budget per size (defaults per size).")
    unimodal: dict[str, UnimodalBudget] = Field(
        default_factory=dict, description="Unimodal-init stage per size, for methods whose recipe has init "
                                          "'unimodal' and no local weights (defaults per size).")
    dvae: dict[str, DVAEBudget] = Field(
        default_factory=dict, description="Visual-tokenizer stage per size, for methods with masked vision "
                                          "modelling and no tokenizer weights (defaults per size).")
    precision: Precision = "auto"
    device: str = "auto"
    data_workers: int = Field(0, ge=0, description="Processes that build training batches ahead of the model "
                                                   "(decoding, augmentation, pinned for CUDA); the batches are "
                                                   "identical with any number. 0 = in the training process (on 2 "
                                                   "CPU cores batch assembly is 1.4-5 % of a step; on a GPU node "
                                                   "use a few).")
    omit_when_default = frozenset({"data_workers"})
    compile: bool = Field(False, description="Train (pretraining, fine-tuning) with the vision and text towers "
                                             "torch.compile'd: fused elementwise kernels, float rounding unlike "
                                             "eager's, so the job fingerprint changes. Off: on this project's "
                                             "2-core CPU it measured 0.91-1.01x eager per step after 28-113 s of "
                                             "compilation (README, Performance); for GPU runs, measure first "
                                             "with `vlpbench perf --only compile`.")
    method_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    recipe_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retrieval: RetrievalSpec = Field(default_factory=RetrievalSpec)
    video: VideoSpec = Field(default_factory=VideoSpec, description="Text-to-video retrieval (MSR-VTT protocol).")
    latency: LatencySpec = Field(default_factory=LatencySpec, description="Inference latency per stage.")
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec, description="Fine-tuned image-text retrieval.")
    products: ProductSpec = Field(default_factory=ProductSpec, description="Same-category product retrieval "
                                                                          "(benchmark product_retrieval).")
    tracking_uri: str | None = None

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, Variant]) -> dict[str, Variant]:
        for name in v:
            if name in list_methods():
                raise ValueError(f"variant {name!r} has a method's name: give it its own (e.g. {name}-ablation)")
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"variant name {name!r}: use letters, digits, '_', '.', '-'")
        return v

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str] | str, info: ValidationInfo) -> list[str] | str:
        if isinstance(v, list):
            if not v:
                raise ValueError("list at least one method, or 'all'")
            variants = info.data.get("variants") or {}
            unknown = [m for m in v if m not in list_methods() and m not in variants]
            if unknown:
                extra = f", variants: {sorted(variants)}" if variants else ""
                raise ValueError(f"unknown method(s) {unknown}; registered: {list_methods()}{extra}")
        return v

    @field_validator("sizes")
    @classmethod
    def _known_sizes(cls, v: list[str]) -> list[str]:
        return _members(v, SIZES, "size")

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, v: list[str]) -> list[str]:
        return _members(v, BENCHMARKS, "benchmark")

    @field_validator("train", mode="before")
    @classmethod
    def _partial_budgets(cls, v: Any) -> Any:
        """A budget that names only some fields (`--set train.tiny.steps=2`) keeps the size's defaults for the rest."""
        if not isinstance(v, dict):
            return v
        return {size: {**DEFAULT_BUDGETS[size], **b} if isinstance(b, dict) and size in DEFAULT_BUDGETS else b
                for size, b in v.items()}

    @field_validator("train", "unimodal", "dvae", "method_overrides", "recipe_overrides")
    @classmethod
    def _keys_known(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        allowed = SIZES if info.field_name in ("train", "unimodal", "dvae") else tuple(list_methods())
        bad = [k for k in v if k not in allowed]
        if bad:
            raise ValueError(f"unknown key(s) {bad}; expected one of {list(allowed)}")
        return v

    def method_names(self) -> list[str]:
        """Methods and variants to run: 'all' = every method calibrated for the default suite (see
        MethodSpec.in_default_suite) and then every variant."""
        return default_suite_methods() + list(self.variants) if self.methods == "all" else list(self.methods)

    def method_of(self, name: str) -> str:
        """The registered method behind a method or variant name."""
        return self.variants[name].method if name in self.variants else name

    def overrides_for(self, name: str, kind: Literal["method", "recipe"]) -> dict[str, Any]:
        """Method-config (or recipe) overrides of a method or variant: the suite's for the method, then the variant's."""
        method = self.method_of(name)
        base = (self.method_overrides if kind == "method" else self.recipe_overrides).get(method) or {}
        if name not in self.variants:
            return dict(base)
        v = self.variants[name]
        return deep_merge(base, v.method_overrides if kind == "method" else v.recipe_overrides)

    def budget(self, size: str) -> Budget:
        if size in self.train:
            return self.train[size]
        return Budget(**DEFAULT_BUDGETS[size])

    def dvae_budget(self, size: str) -> DVAEBudget:
        if size in self.dvae:
            return self.dvae[size]
        return DVAEBudget(**DEFAULT_DVAE[size])

    def unimodal_budget(self, size: str) -> UnimodalBudget:
        if size in self.unimodal:
            return self.unimodal[size]
        return UnimodalBudget(**DEFAULT_UNIMODAL[size])


def load_suite(path: Path | None, overrides: dict[str, Any] | None = None) -> Suite:
    """The suite in a YAML file (or the default suite), with optional top-level overrides."""
    data: dict[str, Any] = {}
    where = "default suite"
    if path is not None:
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"suite file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            pos = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError(f"{path}: not valid YAML{pos}: {getattr(err, 'problem', err)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the suite must be a mapping of fields (name, methods, sizes, ...), "
                              f"not a {type(loaded).__name__}")
        data = loaded
    data = deep_merge(data, overrides or {})   # nested and dotted overrides change one field, not a section
    return validate(Suite, data, where=where if not overrides else f"{where} with --set {overrides}")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)
