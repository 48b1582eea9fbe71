"""The registry: listing, building, overrides with clear errors, cards, save/load round trip; open presets, the
opt-in default suite, declared config facts (towers, visual tokenizer) and plugin loading."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import vlpbench.methods.registry as registry
from vlpbench.methods import (ConfigError, MethodSpec, PluginError, VisualTokenizerSlot, create_method,
                     default_suite_methods, get_spec, image_preprocess_config, list_methods, list_presets,
                     load_plugins, load_pretrained, method_config, register_method, save_pretrained, unimodal_towers,
                     visual_tokenizer_config, visual_tokenizer_grid)
from vlpbench.methods.clip import CLIPConfig
from vlpbench.methods.config import deep_merge
from vlpbench.methods.tokenizer import TextTokenizer
from tests.conftest import MICRO_CLIP


def test_clip_is_registered_with_both_presets() -> None:
    assert "clip" in list_methods()
    assert list_methods("cl*") == ["clip"]
    assert list_presets("clip") == ["tiny", "cpu", "base"]
    assert method_config("clip") == method_config("clip", "tiny")          # no preset: the method's first
    tiny = method_config("clip", "tiny")
    base = method_config("clip", "base")
    assert isinstance(tiny, CLIPConfig) and isinstance(base, CLIPConfig)
    assert (base.vision.width, base.vision.depth, base.text.width, base.embed_dim) == (768, 12, 512, 512)


def test_unknown_method_lists_what_exists(tokenizer: TextTokenizer) -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'clipp'; registered methods: .*clip"):
        create_method("clipp", tokenizer=tokenizer)


def test_unknown_preset_lists_the_methods_presets() -> None:
    with pytest.raises(ConfigError, match="unknown preset 'huge' for method 'clip'; its presets: tiny, cpu, base"):
        method_config("clip", "huge")
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        create_method("clip", "huge", tokenizer=None)  # type: ignore[arg-type]


def test_misspelled_override_names_the_field_and_suggests() -> None:
    with pytest.raises(ConfigError) as err:
        method_config("clip", "tiny", {"vision": {"dept": 2}})
    msg = str(err.value)
    assert "vision.dept" in msg and "Did you mean 'depth'" in msg and "width" in msg


def test_badly_typed_override_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"clip/tiny config: embed_dim: .*got 'big'"):
        method_config("clip", "tiny", {"embed_dim": "big"})


def test_dotted_and_nested_overrides(tokenizer: TextTokenizer) -> None:
    cfg = method_config("clip", "tiny", {"vision.depth": 2, "text": {"width": 64}})
    assert cfg.vision.depth == 2 and cfg.text.width == 64 and cfg.vision.width == method_config("clip").vision.width
    model = create_method("clip", "tiny", tokenizer=tokenizer, overrides={"vision.depth": 2})
    assert len(model.visual.vit.blocks) == 2


@pytest.mark.parametrize("method", list_methods())
def test_card_deviations_and_assumptions_name_real_options(method: str) -> None:
    """Every deviation/assumption names config fields ("a.b, c (note)"), or a suite/recipe field."""
    spec = get_spec(method)
    card = spec.card
    assert card.claimed and all(c.source and c.metrics for c in card.claimed)
    for entry in [*card.deviations, *card.assumptions]:
        for option in re.sub(r"\s*\([^)]*\)", "", entry.option).split(","):
            option = option.strip()
            if option.startswith(("suite.", "train.recipe", "recipe")):
                continue
            node: object = spec.config_cls
            for part in option.split("."):
                fields = getattr(node, "model_fields", {})
                assert part in fields, f"{method}: card option {entry.option!r}: {option!r} is not a config field"
                node = fields[part].annotation
                if getattr(node, "__args__", None):          # Optional[Model] / Model | None
                    node = next((a for a in node.__args__ if hasattr(a, "model_fields")), node)


def test_save_and_load_pretrained_round_trip(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    torch.manual_seed(0)
    model = create_method("clip", "tiny", tokenizer=tokenizer, overrides=MICRO_CLIP).eval()
    save_pretrained(model, tmp_path / "m", "clip", "tiny", lineage=[{"stage": "pretrain"}])
    loaded, meta = load_pretrained(tmp_path / "m")
    assert meta["lineage"] == [{"stage": "pretrain"}] and meta["method"] == "clip"
    tokens = model.tokenize(["a red circle above a blue square"])
    torch.testing.assert_close(loaded.encode_text(tokens), model.encode_text(tokens), rtol=0, atol=0)
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images), rtol=0, atol=0)


# ---- open presets, opt-in default suite ----------------------------------------------------------------------
@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations in a test go to a copy of the registry, dropped afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_OWNER", dict(registry._OWNER))


def _clip_like(name: str, presets: tuple[str, ...] = ("micro",), **fields: Any) -> MethodSpec:
    clip = get_spec("clip")
    tiny = ({k: clip.presets["tiny"] for k in presets}, {k: clip.recipes["tiny"] for k in presets},
            {k: clip.finetune_recipes["tiny"] for k in presets})
    return MethodSpec(name=name, model_cls=clip.model_cls, config_cls=clip.config_cls, presets=tiny[0],
                      recipes=tiny[1], finetune_recipes=tiny[2], **fields)


def test_every_builtin_is_in_the_default_suite_by_its_own_say() -> None:
    assert default_suite_methods() == list_methods() == ["clip", "cots", "ernie_vil2", "scale", "tcl"]
    assert all(get_spec(m).in_default_suite for m in list_methods())
    assert all(list_presets(m) == ["tiny", "cpu", "base"] for m in ("clip", "tcl", "cots", "ernie_vil2", "scale"))


def test_presets_are_open_and_the_default_suite_opt_in(scratch_registry: None, tokenizer: TextTokenizer) -> None:
    spec = register_method(_clip_like("clip-micro", ("micro", "wide")))
    assert spec.in_default_suite is False and "clip-micro" in list_methods()
    assert "clip-micro" not in default_suite_methods()
    assert list_presets("clip-micro") == ["micro", "wide"]
    assert method_config("clip-micro", "wide") == method_config("clip", "tiny")
    assert create_method("clip-micro", tokenizer=tokenizer, overrides=MICRO_CLIP).config.embed_dim == 16
    with pytest.raises(ConfigError, match="unknown preset 'tiny' for method 'clip-micro'; its presets: micro, wide"):
        method_config("clip-micro", "tiny")
    register_method(_clip_like("clip-calibrated", in_default_suite=True))
    assert "clip-calibrated" in default_suite_methods()


def test_presets_and_recipes_must_name_the_same_presets(scratch_registry: None) -> None:
    spec = _clip_like("clip-odd", ("micro", "wide"))
    with pytest.raises(ValueError, match=r"presets, recipes and finetune_recipes must have the same names.*"
                                         r"presets: \['micro', 'wide'\]; recipes: \['micro'\]"):
        register_method(replace(spec, recipes={"micro": spec.recipes["micro"]}))
    with pytest.raises(ValueError, match="has no presets"):
        register_method(replace(spec, presets={}, recipes={}, finetune_recipes={}))
    with pytest.raises(ValueError, match="preset names \\['a b'\\]"):
        register_method(replace(spec, presets={"a b": {}}, recipes={"a b": {}}, finetune_recipes={"a b": {}}))
    assert "clip-odd" not in list_methods()


def test_a_name_is_registered_once(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match=r"method 'clip' is registered twice \(first by vlpbench.methods.clip \(CLIP\)\)"):
        register_method(_clip_like("clip"))


# ---- declared config facts -----------------------------------------------------------------------------------
def test_declared_fields_are_checked_at_registration(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="CLIPConfig has no field 'towers'"):
        register_method(_clip_like("x1", unimodal_towers={"vision": "towers"}))
    with pytest.raises(ValueError, match="CLIPConfig.text is .*TextTowerConfig.*, not a VisionTowerConfig"):
        register_method(_clip_like("x2", unimodal_towers={"vision": "text"}))
    with pytest.raises(ValueError, match="unknown tower kind 'audio'"):
        register_method(_clip_like("x3", unimodal_towers={"audio": "text"}))  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="CLIPConfig has no field 'visual_tokenizer'"):
        register_method(_clip_like("x4", visual_tokenizer=VisualTokenizerSlot("visual_tokenizer")))
    with pytest.raises(ValueError, match="CLIPConfig has no field 'pre'"):
        register_method(_clip_like("x5", image_preprocess="pre"))
    unimodal = replace(_clip_like("x6"), recipes={"micro": {"lr": 1e-3, "weight_decay": 0.0, "init": "unimodal"}})
    with pytest.raises(ValueError, match=r"recipes \['micro'\] start from unimodal towers .*declare them in "
                                         "unimodal_towers"):
        register_method(unimodal)
    register_method(replace(unimodal, unimodal_towers={"vision": "vision"}))
    assert set(unimodal_towers("x6", method_config("x6", "micro"))) == {"vision"}


def _legacy_guesses(mcfg: Any) -> dict[str, Any]:
    """What benchmarks/pipeline.py read from a config by field name before the specs declared it."""
    vision, text = getattr(mcfg, "vision", None), getattr(mcfg, "text", None)
    vt = getattr(mcfg, "visual_tokenizer", None)
    return {"towers": {k: v for k, v in (("vision", vision), ("text", text)) if v is not None},
            "preprocess": getattr(mcfg, "preprocess", None),
            "visual_tokenizer": None if vt is None or not getattr(mcfg, "cmvm", True) else vt,
            "grid": None if vt is None else mcfg.vision.image_size // mcfg.vision.patch_size}


def _override_sets() -> list[Any]:
    """Every built-in method and preset, the shipped suites' variants, and COTS with its switch off / weights given."""
    sets = [(m, p, {}) for m in list_methods() for p in list_presets(m)]
    suites = Path(__file__).resolve().parent.parent / "benchmarks" / "suites"
    for path in sorted(suites.glob("*.yaml")):
        suite = yaml.safe_load(path.read_text()) or {}
        for v in (suite.get("variants") or {}).values():
            base = (suite.get("method_overrides") or {}).get(v["method"]) or {}
            sets += [(v["method"], p, deep_merge(base, v.get("method_overrides") or {}))
                     for p in list_presets(v["method"])]
    sets += [("cots", "tiny", {"cmvm": False}), ("cots", "tiny", {"visual_tokenizer": {"weights": "/w.safetensors"}}),
             ("clip", "tiny", {"vision": {"weights": "/v.safetensors"}, "text": {"pretrained_dir": "/t"}})]
    return [pytest.param(m, p, o, id=f"{m}-{p}-{i}") for i, (m, p, o) in enumerate(sets)]


@pytest.mark.parametrize(("method", "preset", "overrides"), _override_sets())
def test_declared_facts_give_what_the_pipeline_guessed(method: str, preset: str, overrides: dict[str, Any]) -> None:
    mcfg = method_config(method, preset, overrides)
    legacy = _legacy_guesses(mcfg)
    assert unimodal_towers(method, mcfg) == legacy["towers"]
    assert image_preprocess_config(method, mcfg) == legacy["preprocess"]
    assert visual_tokenizer_config(method, mcfg) == legacy["visual_tokenizer"]
    if legacy["grid"] is not None:
        assert visual_tokenizer_grid(method, mcfg) == legacy["grid"]
    spec = get_spec(method)
    assert dict(spec.unimodal_towers) == {"vision": "vision", "text": "text"}
    assert spec.visual_tokenizer == (VisualTokenizerSlot("visual_tokenizer", "cmvm", "vision") if method == "cots"
                                     else None)


# ---- plugins (in this process, with stand-in entry points; tests/test_plugins.py installs real ones) -----------
CLIP2 = replace(get_spec("clip"), name="clip2", in_default_suite=False)


def make_clip3() -> MethodSpec:
    return replace(get_spec("clip"), name="clip3", in_default_suite=False)


NOT_A_SPEC = 42


@pytest.fixture
def fresh_plugins(scratch_registry: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(registry, "_plugins_state", "unloaded")
    monkeypatch.setattr(registry, "_plugin_error", None)
    monkeypatch.setattr(registry, "_plugin_methods", {})

    def install(*values: str) -> None:
        eps = [importlib.metadata.EntryPoint(f"ep{i}", v, registry.ENTRY_POINT_GROUP) for i, v in enumerate(values)]
        monkeypatch.setattr(importlib.metadata, "entry_points",
                            lambda group=None: [e for e in eps if group in (None, e.group)])
    return install


def test_plugins_load_once_from_a_spec_or_a_function(fresh_plugins: Any) -> None:
    fresh_plugins(f"{__name__}:CLIP2", f"{__name__}:make_clip3")
    assert load_plugins() == ["clip2", "clip3"]
    assert load_plugins() == ["clip2", "clip3"]            # idempotent: nothing registered twice
    assert {"clip2", "clip3"} <= set(list_methods()) and "clip2" not in default_suite_methods()
    assert registry._OWNER["clip2"].startswith(f"plugin entry point 'ep0 = {__name__}:CLIP2'")


@pytest.mark.parametrize(("value", "message"), [
    ("vlpbench_no_such_plugin", "failed to load: ModuleNotFoundError: No module named 'vlpbench_no_such_plugin'. "
                                "Fix the plugin"),
    (f"{__name__}:NOT_A_SPEC", "names a int; it must name a module that registers its method, a MethodSpec"),
    ("vlpbench_empty_plugin", "registered no method. Fix: the module must call register_method"),
])
def test_a_bad_plugin_is_an_error_naming_its_entry_point(fresh_plugins: Any, value: str, message: str,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "vlpbench_empty_plugin.py").write_text("VALUE = 1   # a module that registers nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vlpbench_empty_plugin", raising=False)
    fresh_plugins(value)
    with pytest.raises(PluginError, match=re.escape(f"entry point 'ep0 = {value}' (group vlpbench.methods)")) as err:
        load_plugins()
    assert message in str(err.value)
    with pytest.raises(PluginError) as again:           # the failure stays: a second call raises it again
        load_plugins()
    assert again.value is err.value
