"""The registry: listing, building, overrides with clear errors, cards, save/load round trip."""

from __future__ import annotations

import re

from pathlib import Path

import pytest
import torch

from methods import ConfigError, create_method, get_spec, list_methods, load_pretrained, method_config, save_pretrained
from methods.clip import CLIPConfig
from methods.tokenizer import TextTokenizer
from tests.conftest import MICRO_CLIP


def test_clip_is_registered_with_both_sizes() -> None:
    assert "clip" in list_methods()
    assert list_methods("cl*") == ["clip"]
    tiny = method_config("clip", "tiny")
    base = method_config("clip", "base")
    assert isinstance(tiny, CLIPConfig) and isinstance(base, CLIPConfig)
    assert (base.vision.width, base.vision.depth, base.text.width, base.embed_dim) == (768, 12, 512, 512)


def test_unknown_method_lists_what_exists(tokenizer: TextTokenizer) -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'clipp'; registered methods: .*clip"):
        create_method("clipp", tokenizer=tokenizer)


def test_unknown_size_lists_sizes() -> None:
    with pytest.raises(ConfigError, match="unknown size 'huge'.*tiny, base"):
        method_config("clip", "huge")


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
