"""A small typed registry of methods (in the spirit of timm's): name -> spec -> model.

Each method registers one `MethodSpec`: its model class and config class, its **presets** (named
configurations: any names, each with the paper's pretraining recipe and its retrieval fine-tuning
recipe under the same name), its card (on the model class), and what the harness needs to know
about its config without guessing from field names (`unimodal_towers`, `visual_tokenizer`,
`image_preprocess`). `create_method(name, preset, tokenizer, overrides)` merges the preset with
overrides, validates the result and builds the model; `save_pretrained` / `load_pretrained`
round-trip a model with its config and tokenizer. `list_presets(name)` gives a method's presets.

Methods are an open set. The five built-in ones are registered when `methods` is imported; then
`load_plugins()` (called once by methods/__init__.py) registers the methods of installed packages
through the entry-point group ``vlpbench.methods`` (importlib.metadata). In a plugin's
``pyproject.toml``::

    [project.entry-points."vlpbench.methods"]
    toy = "vlpbench_toy"                  # a module: importing it calls register_method(MethodSpec(...))
    # toy = "vlpbench_toy.method:SPEC"    # or a MethodSpec object, registered by the loader
    # toy = "vlpbench_toy.method:spec"    # or a function of no arguments returning a MethodSpec

A plugin's method is not in the default suite unless it says `in_default_suite=True`; suites run it
by name (`methods: [toy]`, `sizes: [<its preset>]`). A plugin that fails to import, registers no
method, or registers a name already taken stops `import vlpbench.methods` with a `PluginError` naming the
entry point, its distribution and the fix. tests/plugins/vlpbench_toy is a complete example.

What the harness reads from a spec, as pure functions of a validated config (benchmarks/pipeline.py):
`unimodal_towers(name, config)` (the towers a unimodal-init stage trains, by kind),
`visual_tokenizer_config(name, config)` / `visual_tokenizer_grid(name, config)` (a masked-vision
objective's tokenizer, when on) and `image_preprocess_config(name, config)`. What a method needs from
the *data* depends on its built model (config and tokenizer) and is declared by the model itself:
`VLPModel.data_fields`, `product_fields`, `field_hints`, `derive_field`, `field_builder` and
`media_input` (methods/interface.py; made into batches by benchmarks/data/fields.py).
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vlpbench.methods.card import MethodCard
from vlpbench.methods.config import ConfigError, StrictModel, TrainRecipe, deep_merge, validate
from vlpbench.methods.interface import VLPModel
from vlpbench.methods.preprocess import ImagePreprocessConfig
from vlpbench.methods.tokenizer import TextTokenizer
from vlpbench.methods.towers import TextTowerConfig, VisionTowerConfig, WeightsError, load_weights_strict
from vlpbench.methods.visual_tokenizer import VisualTokenizerConfig

ENTRY_POINT_GROUP = "vlpbench.methods"
# Method and preset names become folder names (jobs/<method>-<preset>-s<seed>).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"

TowerKind = Literal["vision", "text"]
TOWER_CONFIGS: dict[str, type[StrictModel]] = {"vision": VisionTowerConfig, "text": TextTowerConfig}


@dataclass(frozen=True)
class VisualTokenizerSlot:
    """Where a method's config holds the visual tokenizer of its masked-vision objective (COTS's dVAE).

    The harness trains the tokenizer in a stage of its own (benchmarks/training/dvae.py) unless the config names
    its weights, and writes the stage's weights to `<field>.weights`."""

    field: str                       # config field holding a VisualTokenizerConfig
    enabled_by: str | None = None    # bool config field that switches the objective using it (None: always on)
    vision: str = "vision"           # the VisionTowerConfig field whose patch grid the codes label


@dataclass(frozen=True)
class MethodSpec:
    name: str
    model_cls: type[VLPModel]
    config_cls: type[StrictModel]
    presets: Mapping[str, Mapping[str, Any]]           # preset name -> config dict
    recipes: Mapping[str, Mapping[str, Any]]           # preset name -> TrainRecipe dict (pretraining)
    finetune_recipes: Mapping[str, Mapping[str, Any]]  # preset name -> TrainRecipe dict of retrieval fine-tuning
    # In the default suite (`vlpbench run` with no suite): opt-in, for methods calibrated to learn within that
    # suite's CPU budget at the preset it runs (tiny). Others run when a suite names them.
    in_default_suite: bool = False
    # Towers a unimodal-init stage (recipe init 'unimodal') may train: kind ('vision' | 'text') -> the config field
    # holding that tower's VisionTowerConfig / TextTowerConfig. The stage writes `<field>.weights` (vision) and
    # `<field>.pretrained_dir` (text); a tower whose config already names them is not trained.
    unimodal_towers: Mapping[TowerKind, str] = field(default_factory=dict)
    # The visual tokenizer of a masked-vision objective, if the method has one.
    visual_tokenizer: VisualTokenizerSlot | None = None
    # The config field holding the method's ImagePreprocessConfig (the crop the harness' vision stages train with);
    # None: the config has none.
    image_preprocess: str | None = "preprocess"

    @property
    def card(self) -> MethodCard:
        return self.model_cls.card


class PluginError(ConfigError):
    """An installed method plugin (entry-point group vlpbench.methods) could not be loaded."""


class DuplicateMethodError(ValueError):
    """A method name is registered twice."""

    def __init__(self, name: str, owner: str) -> None:
        super().__init__(f"method {name!r} is registered twice (first by {owner})")
        self.name = name
        self.owner = owner


_REGISTRY: dict[str, MethodSpec] = {}
_OWNER: dict[str, str] = {}           # name -> who registered it (the module, or the plugin entry point)
_loading_plugin: str | None = None    # the entry point being loaded (origin of what it registers)


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _field_problem(config_cls: type[StrictModel], name: str, expected: type) -> str | None:
    """Why config field `name` cannot hold an `expected` (None: it can)."""
    info = config_cls.model_fields.get(name)
    if info is None:
        return f"{config_cls.__name__} has no field {name!r}"
    if not any(isinstance(t, type) and issubclass(t, expected) for t in _union_members(info.annotation)):
        return f"{config_cls.__name__}.{name} is {info.annotation!r}, not a {expected.__name__}"
    return None


def _check_spec(spec: MethodSpec) -> None:
    where = f"method {spec.name!r}"
    if not re.fullmatch(NAME_PATTERN, spec.name):
        raise ValueError(f"{where}: a method name is letters, digits, '_', '.', '-' (it names job folders)")
    names = {"presets": list(spec.presets), "recipes": list(spec.recipes),
             "finetune_recipes": list(spec.finetune_recipes)}
    if not spec.presets:
        raise ValueError(f"{where} has no presets: give at least one named configuration (e.g. 'tiny')")
    if not set(names["presets"]) == set(names["recipes"]) == set(names["finetune_recipes"]):
        raise ValueError(f"{where}: presets, recipes and finetune_recipes must have the same names (each preset has "
                         f"its pretraining and fine-tuning recipe), got " +
                         "; ".join(f"{k}: {v}" for k, v in names.items()))
    bad = [p for p in spec.presets if not re.fullmatch(NAME_PATTERN, p)]
    if bad:
        raise ValueError(f"{where}: preset names {bad}: use letters, digits, '_', '.', '-' (they name job folders)")
    problems: list[str] = []
    for kind, fname in spec.unimodal_towers.items():
        if kind not in TOWER_CONFIGS:
            problems.append(f"unimodal_towers: unknown tower kind {kind!r} (kinds: {', '.join(TOWER_CONFIGS)})")
        else:
            problems.append(_field_problem(spec.config_cls, fname, TOWER_CONFIGS[kind]) or "")
    if spec.image_preprocess is not None:
        problems.append(_field_problem(spec.config_cls, spec.image_preprocess, ImagePreprocessConfig) or "")
    slot = spec.visual_tokenizer
    if slot is not None:
        problems.append(_field_problem(spec.config_cls, slot.field, VisualTokenizerConfig) or "")
        problems.append(_field_problem(spec.config_cls, slot.vision, VisionTowerConfig) or "")
        if slot.enabled_by is not None:
            problems.append(_field_problem(spec.config_cls, slot.enabled_by, bool) or "")
        if spec.image_preprocess is None:
            problems.append("visual_tokenizer needs image_preprocess (the tokenizer stage trains at the method's crop)")
    unimodal = [p for p, r in spec.recipes.items() if r.get("init") == "unimodal"]
    if unimodal and not spec.unimodal_towers:
        problems.append(f"recipes {unimodal} start from unimodal towers (init 'unimodal'): declare them in "
                        "unimodal_towers, e.g. {'vision': 'vision', 'text': 'text'}")
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to the registry (a method module calls this at import). Checks the spec: its presets, recipes
    and finetune_recipes name the same presets, and the config fields it declares exist with the right types."""
    if spec.name in _REGISTRY:
        raise DuplicateMethodError(spec.name, _OWNER[spec.name])
    _check_spec(spec)
    _REGISTRY[spec.name] = spec
    _OWNER[spec.name] = _loading_plugin or f"{spec.model_cls.__module__} ({spec.model_cls.__name__})"
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


def list_presets(method: str) -> list[str]:
    """The preset names of a method, in the order it declares them (built-ins: tiny, base)."""
    return list(get_spec(method).presets)


def _preset(name: str, size: str | None) -> str:
    """The preset `size` of method `name` (None: its first), or a ConfigError listing its presets."""
    presets = list_presets(name)
    if size is None:
        return presets[0]
    if size not in presets:
        raise ConfigError(f"unknown preset {size!r} for method {name!r}; its presets: {', '.join(presets)}")
    return size


def method_config(name: str, size: str | None = None, overrides: Mapping[str, Any] | None = None) -> StrictModel:
    """The validated config of `name` at preset `size` (None: its first preset; built-ins: tiny), with overrides
    (nested dicts or dotted keys)."""
    spec = get_spec(name)
    size = _preset(name, size)
    data = deep_merge(spec.presets[size], overrides or {})
    return validate(spec.config_cls, data, where=f"{name}/{size} config")


def train_recipe(name: str, size: str | None = None, overrides: Mapping[str, Any] | None = None) -> TrainRecipe:
    spec = get_spec(name)
    size = _preset(name, size)
    return validate(TrainRecipe, deep_merge(spec.recipes[size], overrides or {}),
                    where=f"{name}/{size} train recipe")


def finetune_recipe(name: str, size: str | None = None, overrides: Mapping[str, Any] | None = None) -> TrainRecipe:
    """The optimiser settings of a method's retrieval fine-tuning (its paper's where published; `source` says)."""
    spec = get_spec(name)
    size = _preset(name, size)
    return validate(TrainRecipe, deep_merge(spec.finetune_recipes[size], overrides or {}),
                    where=f"{name}/{size} fine-tuning recipe")


def create_method(name: str, size: str | None = None, *, tokenizer: TextTokenizer,
                  overrides: Mapping[str, Any] | None = None) -> VLPModel:
    spec = get_spec(name)
    config = method_config(name, size, overrides)
    return spec.model_cls.from_config(config, tokenizer)  # type: ignore[attr-defined]


# ---- what the harness reads from a config (declared on the spec, not guessed from field names) ----------------
def unimodal_towers(name: str, config: StrictModel) -> dict[TowerKind, VisionTowerConfig | TextTowerConfig]:
    """The towers of `config` a unimodal-init stage may train, by kind ('vision', 'text'): the fields the method
    declares in MethodSpec.unimodal_towers (a field left None is left out). Empty: the method declares none."""
    spec = get_spec(name)
    towers = {kind: getattr(config, fname, None) for kind, fname in spec.unimodal_towers.items()}
    return {kind: tower for kind, tower in towers.items() if tower is not None}


def image_preprocess_config(name: str, config: StrictModel) -> ImagePreprocessConfig | None:
    """The method's image preprocessing config (MethodSpec.image_preprocess), None when it declares none."""
    spec = get_spec(name)
    return None if spec.image_preprocess is None else getattr(config, spec.image_preprocess)


def visual_tokenizer_config(name: str, config: StrictModel) -> VisualTokenizerConfig | None:
    """The visual tokenizer the method's masked-vision objective uses under `config`: None when the method has
    none (MethodSpec.visual_tokenizer), the field is None, or the objective is switched off (its `enabled_by`)."""
    slot = get_spec(name).visual_tokenizer
    if slot is None:
        return None
    vt = getattr(config, slot.field)
    if vt is None or (slot.enabled_by is not None and not getattr(config, slot.enabled_by)):
        return None
    return vt


def visual_tokenizer_grid(name: str, config: StrictModel) -> int:
    """Tokens per side of the visual tokenizer's code grid: the patch grid of the vision tower it labels."""
    slot = get_spec(name).visual_tokenizer
    if slot is None:
        raise ConfigError(f"method {name!r} has no visual tokenizer")
    vision: VisionTowerConfig = getattr(config, slot.vision)
    return vision.image_size // vision.patch_size


# ---- plugins: methods from installed packages -----------------------------------------------------------------
_plugins_state: Literal["unloaded", "loading", "loaded"] = "unloaded"
_plugin_error: PluginError | None = None
_plugin_methods: dict[str, str] = {}   # method -> the entry point ("name = value") that registered it


def _distribution(ep: Any) -> tuple[str, str]:
    """(name, 'name version (at sys.path entry)') of the distribution an entry point comes from."""
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "<its distribution>", "an unknown distribution"
    name = dist.metadata["Name"] or "<its distribution>"
    try:
        place = f" (at {dist.locate_file('')})"
    except Exception:  # noqa: BLE001 - only a detail of the message
        place = ""
    return name, f"distribution {name} {dist.version}{place}"


def _load_entry_point(ep: Any) -> list[str]:
    """Load one entry point of the group; the names of the methods it registered."""
    global _loading_plugin
    dist_name, dist = _distribution(ep)
    where = f"method plugin entry point '{ep.name} = {ep.value}' (group {ENTRY_POINT_GROUP}) of {dist}"
    before = set(_REGISTRY)
    preloaded = ep.module in sys.modules   # imported before (e.g. it imported `methods` itself): nothing runs again
    _loading_plugin = f"plugin entry point '{ep.name} = {ep.value}' of {dist}"
    try:
        obj = ep.load()
        if isinstance(obj, types.ModuleType):
            spec = None                                  # importing it registered its method(s)
        elif isinstance(obj, MethodSpec):
            spec = obj
        elif callable(obj):
            spec = obj()                                 # a function returning a MethodSpec (or registering one)
        else:
            raise PluginError(f"{where} names a {type(obj).__name__}; it must name a module that registers its "
                              "method, a MethodSpec, or a function returning one")
        if spec is not None:
            if not isinstance(spec, MethodSpec):
                raise PluginError(f"{where}: the function returned a {type(spec).__name__}, not a MethodSpec")
            register_method(spec)
    except DuplicateMethodError as err:
        raise PluginError(f"{where} registers method {err.name!r}, which {err.owner} registered already. Fix: give "
                          f"the plugin's method another name (MethodSpec.name), or uninstall the plugin (pip uninstall "
                          f"{dist_name})") from err
    except PluginError:
        raise
    except Exception as err:
        raise PluginError(f"{where} failed to load: {type(err).__name__}: {err}. Fix the plugin (`python -c "
                          f"'import {ep.module}'` shows the traceback), or uninstall it (pip uninstall "
                          f"{dist_name})") from err
    finally:
        _loading_plugin = None
    added = sorted(set(_REGISTRY) - before)
    if not added and not preloaded:
        raise PluginError(f"{where} registered no method. Fix: the module must call register_method(MethodSpec(...)) "
                          "when imported, or the entry point must name a MethodSpec (module:ATTRIBUTE)")
    return added


def load_plugins() -> list[str]:
    """Register the methods of every installed plugin (entry-point group `vlpbench.methods`), once; returns the
    names of the methods plugins registered. methods/__init__.py calls it after registering the built-ins, so
    calling it again does nothing (and a load that failed raises its PluginError again)."""
    global _plugins_state, _plugin_error
    if _plugin_error is not None:
        raise _plugin_error
    if _plugins_state != "unloaded":   # loaded, or loading (a plugin that imports `methods` comes back here)
        return sorted(_plugin_methods)
    from importlib.metadata import entry_points

    _plugins_state = "loading"
    try:
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)):
            for name in _load_entry_point(ep):
                _plugin_methods[name] = f"{ep.name} = {ep.value}"
    except PluginError as err:
        _plugin_error = err
        raise
    finally:
        _plugins_state = "loaded"
    return sorted(_plugin_methods)


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


def read_model_meta(directory: Path) -> dict[str, Any]:
    """The metadata save_pretrained wrote beside a model: method, size, config and lineage."""
    meta_path = directory / CONFIG_FILE
    if not meta_path.is_file():
        raise WeightsError(f"{directory} is not a saved vlpbench model: {CONFIG_FILE} is missing")
    return json.loads(meta_path.read_text())


def load_pretrained(directory: Path) -> tuple[VLPModel, dict[str, Any]]:
    """(model, metadata) from a directory written by save_pretrained; strict key checking."""
    from safetensors.torch import load_file

    meta = read_model_meta(directory)
    spec = get_spec(meta["method"])
    config = validate(spec.config_cls, meta["config"], where=str(directory / CONFIG_FILE))
    tokenizer = TextTokenizer.from_dir(directory / "tokenizer")
    model = spec.model_cls.from_config(config, tokenizer)  # type: ignore[attr-defined]
    load_weights_strict(model, load_file(str(directory / MODEL_FILE)), str(directory / MODEL_FILE))
    model.eval()
    return model, meta


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
