"""A suite: which methods, sizes, seeds, dataset and benchmarks to run, and where to log.

`vlpbench run` with no file runs `Suite()`: every method of the default suite at `cpu` (the size
calibrated to finish in minutes on two CPU cores), seed 0, on the built-in dataset, pretraining
then every default benchmark. `benchmarks/suites/tiny.yaml` is the larger calibrated tiny suite. A YAML file may set any field; an
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
from pydantic import Field, ValidationInfo, field_validator, model_validator

from pydantic.fields import FieldInfo

from vlpbench.benchmarks.data.corpora import PairFilesLayout
from vlpbench.benchmarks.registry import BenchmarkSpec, default_benchmarks, list_benchmarks, subscribe
from vlpbench.benchmarks.runtime import Precision
from vlpbench.benchmarks.training.dvae import DVAEBudget
from vlpbench.benchmarks.training.loop import TrainConfig
from vlpbench.benchmarks.training.unimodal import UnimodalBudget
from vlpbench.methods import TrainRecipe, default_suite_methods, list_methods, list_presets
from vlpbench.methods.config import ConfigError, StrictModel, deep_merge, validate

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


DEFAULT_BUDGETS: dict[str, dict[str, int]] = {
    "tiny": {"steps": 250, "batch_size": 256, "log_every": 10, "checkpoint_every": 25},  # a kill loses <= 3 min
    "cpu": {"steps": 270, "batch_size": 256, "log_every": 10, "checkpoint_every": 90},
    "base": {"steps": 20000, "batch_size": 256, "log_every": 50, "checkpoint_every": 2000},
}


DEFAULT_UNIMODAL: dict[str, dict[str, int]] = {
    "tiny": {"vision_steps": 300, "text_steps": 300, "batch_size": 256},
    "cpu": {"vision_steps": 150, "text_steps": 150, "batch_size": 256},
    "base": {"vision_steps": 50000, "text_steps": 50000, "batch_size": 256},
}


DEFAULT_DVAE: dict[str, dict[str, int]] = {
    "tiny": {"steps": 300, "batch_size": 64},
    "cpu": {"steps": 100, "batch_size": 64},
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
    sizes: list[str] = Field(default_factory=lambda: ["cpu"], min_length=1,
                             description="Model presets (each method's: cpu, tiny, base, ...).")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    benchmarks: list[str] = Field(default_factory=default_benchmarks, min_length=1,
                                  description="Benchmarks run on every job (registered ones: benchmarks/tasks/).")
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
                                             "compilation (docs/performance.md); for GPU runs, measure first "
                                             "with `vlpbench perf --only compile`.")
    method_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    recipe_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tracking_uri: str | None = None
    # + one section per registered benchmark (its settings, e.g. `retrieval`, `video`), added by _benchmark_section

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
    def _known_sizes(cls, v: list[str], info: ValidationInfo) -> list[str]:
        """Each size is a preset of every method the suite runs (presets are named per method)."""
        methods = info.data.get("methods", "all")
        variants = info.data.get("variants") or {}
        names = default_suite_methods() + list(variants) if methods == "all" else list(methods)
        for name in names:
            method = variants[name].method if name in variants else name
            missing = [s for s in v if s not in list_presets(method)]
            if missing:
                raise ValueError(f"unknown size(s) {missing} for {name}; its presets: {list_presets(method)}")
        return v

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, v: list[str]) -> list[str]:
        return _members(v, tuple(list_benchmarks()), "benchmark")

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
        allowed = _all_presets() if info.field_name in ("train", "unimodal", "dvae") else tuple(list_methods())
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

    @model_validator(mode="after")
    def _budgets_known(self) -> "Suite":
        """Every size run has a pretraining budget: its default, or one the suite sets (presets of methods from
        other packages have no defaults here)."""
        missing = [s for s in self.sizes if s not in self.train and s not in DEFAULT_BUDGETS]
        if missing:
            raise ValueError(f"size(s) {missing} have no default budget: set train.<size>: {{steps: N, batch_size: B}}"
                             f" (e.g. --set train.{missing[0]}.steps=100 --set train.{missing[0]}.batch_size=32)")
        return self

    def budget(self, size: str) -> Budget:
        return self.train[size] if size in self.train else Budget(**default_budget(DEFAULT_BUDGETS, size, "train"))

    def dvae_budget(self, size: str) -> DVAEBudget:
        return self.dvae[size] if size in self.dvae else DVAEBudget(**default_budget(DEFAULT_DVAE, size, "dvae"))

    def unimodal_budget(self, size: str) -> UnimodalBudget:
        return self.unimodal[size] if size in self.unimodal else \
            UnimodalBudget(**default_budget(DEFAULT_UNIMODAL, size, "unimodal"))


    def train_config(self, budget: Budget, seed: int, recipe: TrainRecipe) -> TrainConfig:
        """The training loop's settings for a stage of this suite (pretraining, fine-tuning) at `budget`."""
        return TrainConfig(steps=budget.steps, batch_size=budget.batch_size, seed=seed, precision=self.precision,
                           device=self.device, log_every=budget.log_every, checkpoint_every=budget.checkpoint_every,
                           compile=self.compile, data_workers=self.data_workers, recipe=recipe)

    def section(self, name: str) -> StrictModel:
        """The settings of a registered benchmark's section (e.g. `suite.section("video")` = `suite.video`)."""
        return getattr(self, name)


def _all_presets() -> tuple[str, ...]:
    return tuple(sorted({p for m in list_methods() for p in list_presets(m)}))


def default_budget(defaults: dict[str, dict[str, int]], size: str, section: str) -> dict[str, int]:
    """The default budget of `size` in a suite section, or a ConfigError saying how to set one."""
    if size not in defaults:
        raise ConfigError(f"size {size!r} has no default {section} budget (defaults exist for {sorted(defaults)}): "
                          f"set {section}.{size} in the suite")
    return defaults[size]



def _benchmark_section(spec: BenchmarkSpec, registered: bool) -> None:
    """Add (or remove) a benchmark's section to the suite schema: a field named spec.section of type spec.settings,
    defaulting to the settings' defaults. (pydantic has no public call to add a field to a defined model: the
    field is set in the model's field table and the schema rebuilt — tests/test_benchmark_registry.py checks that
    a registered section validates, dumps and is refused once unregistered.)"""
    fields = Suite.__pydantic_fields__
    if registered:
        if spec.section in fields and spec.section not in _SECTIONS:
            raise ValueError(f"benchmark {spec.name!r}: section {spec.section!r} is a suite field already")
        fields[spec.section] = FieldInfo.from_annotated_attribute(
            spec.settings, Field(default_factory=spec.settings, description=spec.description or spec.name))
        Suite.__annotations__[spec.section] = spec.settings
        _SECTIONS.add(spec.section)
    else:
        fields.pop(spec.section, None)
        Suite.__annotations__.pop(spec.section, None)
        _SECTIONS.discard(spec.section)
    Suite.model_rebuild(force=True)


_SECTIONS: set[str] = set()
subscribe(_benchmark_section)


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
