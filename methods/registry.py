"""A small typed registry of methods (in the spirit of timm's): name -> spec -> model.

Each method module registers one `MethodSpec` (model class, config class, size presets, the
paper's training recipe per size, and its card). `create_method(name, size, tokenizer,
overrides)` merges the preset with overrides, validates the result, and builds the model;
`save_pretrained` / `load_pretrained` round-trip a model with its config and tokenizer.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from methods.card import MethodCard
from methods.config import ConfigError, StrictModel, TrainRecipe, deep_merge, validate
from methods.interface import VLPModel
from methods.tokenizer import TextTokenizer
from methods.towers import WeightsError, load_weights_strict

SIZES: tuple[str, ...] = ("tiny", "base")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    model_cls: type[VLPModel]
    config_cls: type[StrictModel]
    presets: Mapping[str, Mapping[str, Any]]        # size -> config dict
    recipes: Mapping[str, Mapping[str, Any]]        # size -> TrainRecipe dict
    finetune_recipes: Mapping[str, Mapping[str, Any]]  # size -> TrainRecipe dict of retrieval fine-tuning
    # In the default suite (`vlpbench run` with no suite): only methods whose tiny preset is calibrated
    # to learn within the default CPU budget. Others run when a suite names them.
    in_default_suite: bool = True

    @property
    def card(self) -> MethodCard:
        return self.model_cls.card


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"method {spec.name!r} is registered twice")
    missing = [s for s in SIZES if s not in spec.presets or s not in spec.recipes or s not in spec.finetune_recipes]
    if missing:
        raise ValueError(f"method {spec.name!r} lacks presets/recipes for sizes {missing}")
    _REGISTRY[spec.name] = spec
    return spec


def list_methods(pattern: str = "*") -> list[str]:
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def default_suite_methods() -> list[str]:
    return [n for n in list_methods() if _REGISTRY[n].in_default_suite]


def get_spec(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(list_methods())}") from None


def _check_size(name: str, size: str) -> None:
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r} for method {name!r}; sizes: {', '.join(SIZES)}")


def method_config(name: str, size: str = "tiny", overrides: Mapping[str, Any] | None = None) -> StrictModel:
    """The validated config of `name` at `size`, with overrides (nested dicts or dotted keys)."""
    spec = get_spec(name)
    _check_size(name, size)
    data = deep_merge(spec.presets[size], overrides or {})
    return validate(spec.config_cls, data, where=f"{name}/{size} config")


def train_recipe(name: str, size: str = "tiny", overrides: Mapping[str, Any] | None = None) -> TrainRecipe:
    spec = get_spec(name)
    _check_size(name, size)
    return validate(TrainRecipe, deep_merge(spec.recipes[size], overrides or {}),
                    where=f"{name}/{size} train recipe")


def finetune_recipe(name: str, size: str = "tiny", overrides: Mapping[str, Any] | None = None) -> TrainRecipe:
    """The optimiser settings of a method's retrieval fine-tuning (its paper's where published; `source` says)."""
    spec = get_spec(name)
    _check_size(name, size)
    return validate(TrainRecipe, deep_merge(spec.finetune_recipes[size], overrides or {}),
                    where=f"{name}/{size} fine-tuning recipe")


def create_method(name: str, size: str = "tiny", *, tokenizer: TextTokenizer,
                  overrides: Mapping[str, Any] | None = None) -> VLPModel:
    spec = get_spec(name)
    config = method_config(name, size, overrides)
    return spec.model_cls.from_config(config, tokenizer)  # type: ignore[attr-defined]


MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"


def save_pretrained(model: VLPModel, directory: Path, method: str, size: str,
                    lineage: list[dict[str, Any]] | None = None) -> Path:
    """Write weights, resolved config, tokenizer and lineage to a directory."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / MODEL_FILE))
    model.tokenizer.save(directory / "tokenizer")
    meta = {"method": method, "size": size, "config": _without_init_sources(model.config.model_dump(mode="json")),
            "lineage": lineage or []}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


INIT_SOURCE_FIELDS = ("weights", "pretrained_dir")


def _without_init_sources(config: Any) -> Any:
    """The config with initial-weight sources cleared: the saved weights already contain them, and a
    saved model must load without the files it started from (they stay named in the lineage)."""
    if isinstance(config, dict):
        return {k: (None if k in INIT_SOURCE_FIELDS else _without_init_sources(v)) for k, v in config.items()}
    return config


def load_pretrained(directory: Path) -> tuple[VLPModel, dict[str, Any]]:
    """(model, metadata) from a directory written by save_pretrained; strict key checking."""
    from safetensors.torch import load_file

    meta_path = directory / CONFIG_FILE
    if not meta_path.is_file():
        raise WeightsError(f"{directory} is not a saved vlpbench model: {CONFIG_FILE} is missing")
    meta = json.loads(meta_path.read_text())
    spec = get_spec(meta["method"])
    config = validate(spec.config_cls, meta["config"], where=str(meta_path))
    tokenizer = TextTokenizer.from_dir(directory / "tokenizer")
    model = spec.model_cls.from_config(config, tokenizer)  # type: ignore[attr-defined]
    load_weights_strict(model, load_file(str(directory / MODEL_FILE)), str(directory / MODEL_FILE))
    model.eval()
    return model, meta


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
