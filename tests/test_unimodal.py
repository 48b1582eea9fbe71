"""The unimodal-init stage (ViT classification + BERT masked-LM) and loading its output into methods."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.data.types import ArrayImages, LabelledImages, TextCorpus
from vlpbench.benchmarks.training.unimodal import (RECORD_FILE, UnimodalBudget, UnimodalRequest, ensure_unimodal,
                                          train_vision)
from vlpbench.methods import TextTokenizer, create_method, load_pretrained, save_pretrained
from vlpbench.methods.preprocess import ImagePreprocessConfig
from vlpbench.methods.tcl import TCL
from vlpbench.methods.towers import TextTowerConfig, VisionTower, VisionTowerConfig, WeightsError
from tests.test_tcl import MICRO_TCL

MICRO_VISION = VisionTowerConfig(image_size=32, patch_size=16, width=32, depth=1, heads=2)
MICRO_TEXT = TextTowerConfig(arch="bert", width=32, depth=2, heads=2, max_length=24, dropout=0.0)
TINY_BUDGET = UnimodalBudget(vision_steps=4, text_steps=4, batch_size=16)


def _bert_dir(tmp: Path, tokenizer: TextTokenizer, layers: int = 2, vocab: int | None = None) -> Path:
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=vocab or tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers,
                     num_attention_heads=2, intermediate_size=128, pad_token_id=tokenizer.pad_id)
    model = BertForMaskedLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)   # make every tensor distinct from a fresh init
    model.save_pretrained(str(tmp / "bert"))
    return tmp / "bert"


def test_bert_layers_split_into_text_and_fusion_with_fresh_cross_attention(tmp_path: Path,
                                                                          tokenizer: TextTokenizer) -> None:
    directory = _bert_dir(tmp_path, tokenizer)
    bert = BertForMaskedLM.from_pretrained(str(directory)).state_dict()
    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tokenizer,
                          overrides={**MICRO_TCL, "text": {**MICRO_TCL["text"], "pretrained_dir": str(directory)}})
    assert isinstance(model, TCL)
    ours = model.state_dict()
    pairs = {
        "text.tower.model.embeddings.word_embeddings.weight": "bert.embeddings.word_embeddings.weight",
        "text.tower.model.encoder.layer.0.attention.self.query.weight": "bert.encoder.layer.0.attention.self.query.weight",
        "text.fusion.layers.0.attention.self.query.weight": "bert.encoder.layer.1.attention.self.query.weight",
        "text.fusion.layers.0.output.LayerNorm.weight": "bert.encoder.layer.1.output.LayerNorm.weight",
        "text.mlm.predictions.transform.dense.weight": "cls.predictions.transform.dense.weight",
        "text.mlm.predictions.bias": "cls.predictions.bias",
    }
    for mine, theirs in pairs.items():
        assert torch.equal(ours[mine], bert[theirs]), mine
        assert torch.equal(ours[mine.replace("text.", "text_m.", 1)], bert[theirs]), "momentum copy starts equal"
    # Cross-attention has no BERT counterpart: it keeps its fresh initialisation (not any BERT tensor).
    cross = ours["text.fusion.layers.0.crossattention.self.query.weight"]
    assert not any(v.shape == cross.shape and torch.equal(v, cross) for v in bert.values())


def test_bert_init_refuses_a_vocabulary_or_depth_that_does_not_fit(tmp_path: Path, tokenizer: TextTokenizer) -> None:
    wrong_vocab = _bert_dir(tmp_path / "v", tokenizer, vocab=tokenizer.vocab_size + 3)
    with pytest.raises(WeightsError, match="vocab_size"):
        create_method("tcl", "tiny", tokenizer=tokenizer,
                      overrides={**MICRO_TCL, "text": {**MICRO_TCL["text"], "pretrained_dir": str(wrong_vocab)}})
    shallow = _bert_dir(tmp_path / "d", tokenizer, layers=1)
    with pytest.raises(WeightsError, match="fusion_layer"):
        create_method("tcl", "tiny", tokenizer=tokenizer,
                      overrides={**MICRO_TCL, "text": {**MICRO_TCL["text"], "pretrained_dir": str(shallow)}})


def _two_class_images(n: int, seed: int) -> tuple[ArrayImages, list[str]]:
    """Dark images are 'night', bright ones 'day' (plus noise): learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = ["day" if i % 2 else "night" for i in range(n)]
    base = np.array([200 if lab == "day" else 40 for lab in labels], dtype=np.float32)[:, None, None, None]
    pix = np.clip(base + rng.normal(0, 20, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return ArrayImages(pix), labels


def test_vision_stage_learns_a_separable_labelling() -> None:
    images, labels = _two_class_images(128, 0)
    held, held_labels = _two_class_images(64, 1)
    data = LabelledImages(images, labels, held, held_labels, source={"fixture": "day/night"})
    budget = UnimodalBudget(vision_steps=30, batch_size=32, vision_lr=3e-3, warmup_fraction=0.1)
    state, record = train_vision(MICRO_VISION, ImagePreprocessConfig(resolution=32), data, budget, seed=0,
                                 log=lambda _: None)
    assert record["classes"] == 2 and record["heldout_n"] == 64
    assert record["heldout_top1"] == 100.0
    tower = VisionTower(MICRO_VISION)
    tower.vit.load_state_dict(state, strict=False)     # the head is dropped; the rest fits the tower
    assert not any(k.startswith("head.") for k in state)


def _request(seed: int = 0, budget: UnimodalBudget = TINY_BUDGET) -> UnimodalRequest:
    return UnimodalRequest(vision=MICRO_VISION, preprocess=ImagePreprocessConfig(resolution=32), text=MICRO_TEXT,
                           budget=budget, seed=seed)


def test_stage_is_cached_atomic_deterministic_and_loadable(tmp_path: Path, small_world: BuiltinDataset,
                                                           tokenizer: TextTokenizer) -> None:
    def images() -> LabelledImages:
        return small_world.labelled_images()

    def texts() -> TextCorpus:
        full = small_world.text_corpus()
        return TextCorpus(full.train[:400], full.heldout[:50], full.source)

    logs: list[str] = []
    a = ensure_unimodal(_request(), tokenizer, small_world.fingerprint, images, texts, tmp_path / "a", logs.append)
    record = json.loads((a.directory / RECORD_FILE).read_text())
    assert record["vision"]["steps"] == 4 and record["text"]["steps"] == 4 and record["seed"] == 0
    assert record["vision"]["data"]["train"]["split"] == "pretrain"
    assert record["vision"]["data"]["heldout"]["split"] == "val"
    assert [p.name for p in (tmp_path / "a" / "unimodal").iterdir()] == [a.directory.name]  # no temp folder left

    def fail() -> Any:
        raise AssertionError("a cached stage must not read data again")

    again = ensure_unimodal(_request(), tokenizer, small_world.fingerprint, fail, fail, tmp_path / "a", logs.append)
    assert again.directory == a.directory and any("reused" in m for m in logs)

    b = ensure_unimodal(_request(), tokenizer, small_world.fingerprint, images, texts, tmp_path / "b", logs.append)
    from safetensors.torch import load_file
    va, vb = load_file(str(a.vision_weights)), load_file(str(b.vision_weights))
    assert all(torch.equal(va[k], vb[k]) for k in va), "same request, same seed -> identical weights"
    other = _request(seed=1).fingerprint(tokenizer, small_world.fingerprint)
    assert other != _request().fingerprint(tokenizer, small_world.fingerprint)

    # The output loads through the methods' ordinary options, and a saved model no longer needs it.
    overrides = {**MICRO_TCL, "vision": {**MICRO_TCL["vision"], "image_size": 32, "patch_size": 16,
                                         "weights": str(a.vision_weights)},
                 "preprocess": {"resolution": 32}, "text": {**MICRO_TCL["text"], "max_length": 24,
                                                            "pretrained_dir": str(a.text_dir)}}
    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=overrides)
    assert torch.equal(model.visual.vit.pos_embed, va["pos_embed"])
    saved = save_pretrained(model, tmp_path / "saved", "tcl", "tiny", lineage=[record])
    meta = json.loads((saved / "model_config.json").read_text())
    assert meta["config"]["vision"]["weights"] is None and meta["config"]["text"]["pretrained_dir"] is None
    import shutil
    shutil.rmtree(a.directory)
    loaded, meta = load_pretrained(saved)
    assert torch.equal(loaded.visual.vit.pos_embed, va["pos_embed"]) and meta["lineage"][0]["stage"] == "unimodal-init"


def test_clip_text_towers_are_not_pretrained_by_the_stage(tokenizer: TextTokenizer, small_world: BuiltinDataset,
                                                          tmp_path: Path) -> None:
    from vlpbench.methods.config import ConfigError
    req = UnimodalRequest(vision=None, preprocess=None, text=MICRO_TEXT.model_copy(update={"arch": "clip"}),
                          budget=TINY_BUDGET, seed=0)
    with pytest.raises(ConfigError, match="masked-LM"):
        ensure_unimodal(req, tokenizer, small_world.fingerprint, small_world.labelled_images,
                        small_world.text_corpus, tmp_path)
    assert not any((tmp_path / "unimodal").iterdir()), "a failed stage leaves nothing behind"


def test_vision_weights_from_another_resolution_get_resampled_position_embeddings(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    torch.manual_seed(0)
    small = VisionTower(MICRO_VISION)                                  # 32 px / 16 = 2x2 patches
    state = {k: v.contiguous() for k, v in small.vit.state_dict().items()}
    save_file(state, str(tmp_path / "vit.safetensors"))
    big = VisionTower(MICRO_VISION.model_copy(update={"image_size": 64, "weights": str(tmp_path / "vit.safetensors")}))
    assert big.vit.pos_embed.shape == (1, 1 + 16, 32)
    assert torch.equal(big.vit.pos_embed[:, :1], state["pos_embed"][:, :1])      # class token kept
    assert torch.equal(big.vit.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])
    # A constant grid stays constant under resampling: the grid is interpolated, not re-initialised.
    state["pos_embed"][:, 1:] = 0.25
    save_file(state, str(tmp_path / "vit.safetensors"))
    big = VisionTower(MICRO_VISION.model_copy(update={"image_size": 64, "weights": str(tmp_path / "vit.safetensors")}))
    assert torch.allclose(big.vit.pos_embed[:, 1:], torch.full((1, 16, 32), 0.25), atol=1e-5)
