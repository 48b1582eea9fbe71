"""CLIP behind the common interface: embeddings, logit scale, loss, gradients, video, faithfulness of sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

from vlpbench.methods import PretrainBatch, StepContext
from vlpbench.methods.clip import CLIP, PRESETS
from vlpbench.methods.towers import TextTower, TextTowerConfig, VisionTower, VisionTowerConfig

CTX = StepContext(step=0, total_steps=10, steps_per_epoch=10, epoch=0)


def _batch(model: CLIP, n: int = 6) -> PretrainBatch:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    texts = ["a red circle", "two blue squares on a gray background", "a star", "x", "a green ring above a cross",
             "a tiny orange hexagon"][:n]
    return PretrainBatch(model.preprocess.train(images, list(range(n))), model.tokenize(texts), torch.arange(n))


def test_embeddings_are_normalised(micro_clip: CLIP) -> None:
    b = _batch(micro_clip)
    img = micro_clip.encode_image(b.images)
    txt = micro_clip.encode_text(b.text)
    assert img.shape == (6, 16) and txt.shape == (6, 16)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(6))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(6))


def test_logit_scale_init_and_clamp(micro_clip: CLIP) -> None:
    assert micro_clip.logit_scale.item() == pytest.approx(math.log(1 / 0.07), rel=1e-6)
    with torch.no_grad():
        micro_clip.logit_scale.fill_(7.0)
    micro_clip.after_optimizer_step(CTX)
    assert micro_clip.logit_scale.item() == pytest.approx(math.log(100.0), rel=1e-6)
    with torch.no_grad():
        micro_clip.logit_scale.fill_(-1.0)
    micro_clip.after_optimizer_step(CTX)
    assert micro_clip.logit_scale.item() == 0.0


def test_pretrain_step_is_the_symmetric_infonce_and_every_parameter_learns(micro_clip: CLIP) -> None:
    b = _batch(micro_clip)
    out = micro_clip.pretrain_step(b, CTX)
    assert set(out.losses) == {"itc"} and out.total is out.losses["itc"]
    img, txt = micro_clip.encode_image(b.images), micro_clip.encode_text(b.text)
    logits = micro_clip.logit_scale.exp() * img @ txt.t()
    labels = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    out.total.backward()
    no_grad = [n for n, p in micro_clip.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    assert micro_clip.logit_scale.grad.abs().item() > 0


def test_text_embedding_ignores_padding(micro_clip: CLIP) -> None:
    micro_clip.eval()
    tokens = micro_clip.tokenize(["a red circle", "two blue squares on a gray background"])
    full = micro_clip.encode_text(tokens)
    trimmed = micro_clip.encode_text(tokens.trimmed())
    assert tokens.trimmed().input_ids.shape[1] < tokens.input_ids.shape[1]
    torch.testing.assert_close(full, trimmed, rtol=1e-5, atol=1e-6)


def test_encode_video_is_the_renormalised_mean_of_frames(micro_clip: CLIP) -> None:
    micro_clip.eval()
    frames = torch.randn(2, 3, 3, 64, 64)
    per_frame = micro_clip.encode_image(frames.flatten(0, 1)).view(2, 3, -1)
    torch.testing.assert_close(micro_clip.encode_video(frames), F.normalize(per_frame.mean(1), dim=-1))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    masked = micro_clip.encode_video(frames, mask)
    torch.testing.assert_close(masked[0], F.normalize(per_frame[0, :2].mean(0), dim=-1))
    torch.testing.assert_close(masked[1], per_frame[1, 0])


def test_base_vision_tower_is_vit_b16_as_in_clip() -> None:
    ours = VisionTower(VisionTowerConfig(**PRESETS["base"]["vision"]))
    ref = timm.create_model("vit_base_patch16_clip_quickgelu_224", pretrained=False, num_classes=0)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    # same parameter names and shapes as timm's CLIP ViT-B/16, so its weights load as they are
    ref_shapes = {k: v.shape for k, v in ref.state_dict().items()}
    assert {k: v.shape for k, v in ours.vit.state_dict().items()} == ref_shapes


def test_base_text_tower_matches_clip_parameter_count() -> None:
    # OpenAI CLIP ViT-B/16 text transformer: vocab 49,408, context 77, width 512, 12 layers, 8 heads.
    width, layers, vocab, ctx = 512, 12, 49408, 77
    per_layer = 4 * (width * width + width) + 2 * 2 * width + (width * 4 * width + 4 * width) + (4 * width * width + width)
    expected = layers * per_layer + vocab * width + ctx * width + 2 * width
    tower = TextTower(TextTowerConfig(**PRESETS["base"]["text"]), vocab_size=vocab, pad_id=0, cls_id=1, sep_id=2)
    assert sum(p.numel() for p in tower.parameters()) == expected == 63_165_952
