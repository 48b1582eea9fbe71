"""Typed, validated configuration shared by every method.

Configs are pydantic models with `extra="forbid"`: an unknown or mistyped option is an error
that lists the options that exist, never a silently ignored key. Presets are plain nested
dicts merged with user overrides before validation, so "which value was used" is always the
dumped, resolved config.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, field_validator,
                      model_serializer)


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the field and the fix."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())
    # Fields added after results were recorded: left out of dumps while at their default, so every configuration
    # (and job fingerprint) written before the field existed stays byte-identical; set, they are dumped as usual.
    omit_when_default: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if self.omit_when_default and isinstance(data, dict):
            fields = type(self).model_fields
            for name in self.omit_when_default:
                if name in data and getattr(self, name) == fields[name].default:
                    del data[name]
        return data


class TrainRecipe(StrictModel):
    """Optimiser hyper-parameters of a method's pretraining recipe (the budget lives in the suite)."""

    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_fraction: float = Field(0.1, ge=0, le=1, description="Linear warm-up, fraction of total steps.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warm-up in steps; overrides warmup_fraction.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Cosine floor as a fraction of lr.")
    grad_clip_norm: float | None = Field(None, gt=0)
    lr_scale: dict[str, float] = Field(
        default_factory=dict,
        description="Learning-rate multipliers by parameter-name prefix ('text', 'temp', 'visual.blocks'): the "
                    "longest matching prefix wins, every other parameter gets 1. A prefix that names no "
                    "parameter is an error.")
    init: Literal["scratch", "unimodal"] = Field(
        "scratch", description="scratch: random towers (CLIP); unimodal: towers start from unimodal pretraining "
                               "(ImageNet-supervised ViT + masked-LM BERT in the papers) - local weight files "
                               "when the method config names them, else the harness' unimodal stage.")
    source: str = Field("", description="Where these values come from (paper, code, or 'CPU-scale').")

    @field_validator("lr_scale")
    @classmethod
    def _positive_scales(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: f for k, f in v.items() if not f > 0 or not k}
        if bad:
            raise ValueError(f"lr_scale entries {bad}: use a non-empty parameter-name prefix and a factor > 0")
        return v


T = TypeVar("T", bound=BaseModel)


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge overrides into a copy of base; dotted keys ('vision.depth') are expanded."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, Mapping) and isinstance(out.get(head), Mapping):
            out[head] = deep_merge(out[head], value)
        else:
            out[head] = copy.deepcopy(value)
    return out


def _fields_at(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Option names valid at a location inside a (nested) pydantic model."""
    cls: Any = model_cls
    for part in loc:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return []
        cls = cls.model_fields[part].annotation
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return sorted(cls.model_fields)
    return []


def format_validation_error(err: ValidationError, model_cls: type[BaseModel], where: str) -> str:
    """One line per problem: 'where: field.path: message (valid options: ...)'."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            valid = _fields_at(model_cls, loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            msg = f"unknown option.{hint} Valid options here: {', '.join(valid)}"
        elif "input" in e and e["type"] != "missing":
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"{where}: {path}: {msg}")
    return "\n".join(lines)


def validate(model_cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """model_cls(**data), turning pydantic's error into a ConfigError that names each field."""
    try:
        return model_cls.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model_cls, where)) from None


def sha256_json(obj: Any) -> str:
    """The fingerprint of a JSON-serialisable value: sha256 of its JSON with sorted keys (every configuration,
    plan and stage fingerprint of the project is this, so equal contents give equal fingerprints everywhere)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
