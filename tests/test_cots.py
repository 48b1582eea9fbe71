"""COTS: KL alignment, aligned queues, AMF, CMVM targets, gradients, the visual tokenizer and its stage."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.benchmarks.training.dvae import DVAEBudget, DVAERequest, ensure_dvae, kl_to_uniform, tokenizer_crop
from vlpbench.methods import StepContext, TextTokenizer, create_method, load_pretrained, save_pretrained
from vlpbench.methods.amf import amf_filter, pair_similarities
from vlpbench.methods.cots import COTS
from vlpbench.methods.losses import kl_alignment
from vlpbench.methods.masking import block_mask, block_masks
from vlpbench.methods.momentum import FeatureQueues
from vlpbench.methods.preprocess import ImagePreprocessConfig
from vlpbench.methods.towers import WeightsError
from vlpbench.methods.visual_tokenizer import DVAEEncoder, VisualTokenizer, VisualTokenizerConfig, map_pixels

MICRO_COTS: dict[str, Any] = {
    "vision": {"width": 32, "depth": 1, "heads": 2},
    "text": {"width": 32, "depth": 1, "heads": 2, "dropout": 0.0},
    "embed_dim": 16, "queue_size": 8,
    "visual_tokenizer": {"n_hid": 4, "blocks_per_group": 1, "vocab_size": 16},
}
CTX = StepContext(step=0, total_steps=10, steps_per_epoch=10, epoch=0)


@pytest.fixture
def micro_cots(tokenizer: TextTokenizer) -> COTS:
    torch.manual_seed(0)
    return create_method("cots", "tiny", tokenizer=tokenizer, overrides=MICRO_COTS)  # type: ignore[return-value]


@pytest.fixture
def batch(micro_cots: COTS, small_world: BuiltinDataset):  # type: ignore[no-untyped-def]
    return PretrainBatches(small_world.pretrain_corpus(), micro_cots, 4, seed=0).batch(0, 0)


# ---- task level: KL alignment ------------------------------------------------------------------------------
def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q))


def _softmax(z: list[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def test_kl_alignment_on_a_hand_built_queue_matches_a_direct_computation() -> None:
    tau = 0.5
    # Two pairs in the batch, a queue of three aligned pairs (row k of both queues = one pair).
    f_i = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    f_t = F.normalize(torch.tensor([[0.8, 0.6], [0.0, 1.0]]), dim=-1)
    f_i_m = F.normalize(torch.tensor([[1.0, 0.1], [0.5, 0.9]]), dim=-1)
    f_t_m = F.normalize(torch.tensor([[0.9, 0.5], [0.1, 1.0]]), dim=-1)
    q_i = F.normalize(torch.tensor([[1.0, 1.0], [-1.0, 0.2], [0.3, -1.0]]), dim=-1)
    q_t = F.normalize(torch.tensor([[0.7, 1.0], [-1.0, -0.5], [0.0, -1.0]]), dim=-1)
    a = torch.cat([(f_i * f_t_m).sum(-1, keepdim=True), f_i @ q_t.t()], 1) / tau
    b = torch.cat([(f_t * f_i_m).sum(-1, keepdim=True), f_t @ q_i.t()], 1) / tau
    expect_ab, expect_ba = 0.0, 0.0
    for i in range(2):
        za = [float(f_i[i] @ f_t_m[i]) / tau] + [float(f_i[i] @ q_t[k]) / tau for k in range(3)]
        zb = [float(f_t[i] @ f_i_m[i]) / tau] + [float(f_t[i] @ q_i[k]) / tau for k in range(3)]
        expect_ab += _kl(_softmax(za), _softmax(zb)) / 2
        expect_ba += _kl(_softmax(zb), _softmax(za)) / 2
    assert float(kl_alignment(a, b, "a_to_b")) == pytest.approx(expect_ab, rel=1e-5)
    assert float(kl_alignment(a, b, "b_to_a")) == pytest.approx(expect_ba, rel=1e-5)
    assert float(kl_alignment(a, b, "symmetric")) == pytest.approx(expect_ab + expect_ba, rel=1e-5)
    assert expect_ab > 0.01 and float(kl_alignment(a, a)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="same candidates"):
        kl_alignment(a, b[:, :3])


def test_cots_task_loss_is_the_kl_over_current_pair_and_queued_pairs(micro_cots: COTS, batch) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.eval()
    model.config = model.config.model_copy(update={"instance": False, "cmlm": False, "cmvm": False,
                                                   "instance_negatives": "queue"})
    q_i, q_t = model.queues.get("image"), model.queues.get("text")
    out = model.pretrain_step(batch, CTX)
    assert set(out.losses) == {"task_kl"}
    with torch.no_grad():
        f_i = model.encode_image(batch.images)
        f_t = model.encode_text(batch.text)
        f_i_m = F.normalize(model.vision_proj_m(model.visual_m(batch.images).pooled), dim=-1)
        f_t_m = F.normalize(model.text_proj_m(model.text_m(batch.text.input_ids, batch.text.attention_mask).pooled),
                            dim=-1)
    tau = 0.07
    total = 0.0
    for i in range(4):
        za = [float(f_i[i] @ f_t_m[i]) / tau] + [float(f_i[i] @ q_t[k]) / tau for k in range(8)]
        zb = [float(f_t[i] @ f_i_m[i]) / tau] + [float(f_t[i] @ q_i[k]) / tau for k in range(8)]
        total += (_kl(_softmax(za), _softmax(zb)) + _kl(_softmax(zb), _softmax(za))) / 4
    assert out.losses["task_kl"].item() == pytest.approx(total, rel=1e-4)


# ---- instance level and queues ---------------------------------------------------------------------------
def test_instance_loss_positive_is_the_momentum_pair_and_negatives_the_other_queue(micro_cots: COTS, batch) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.eval()
    model.config = model.config.model_copy(update={"task": False, "cmlm": False, "cmvm": False,
                                                   "instance_negatives": "queue"})
    q_t = model.queues.get("text")
    out = model.pretrain_step(batch, CTX)
    with torch.no_grad():
        f_i = model.encode_image(batch.images)
        f_t_m = F.normalize(model.text_proj_m(model.text_m(batch.text.input_ids, batch.text.attention_mask).pooled),
                            dim=-1)
    expect = 0.0
    for i in range(4):
        z = [float(f_i[i] @ f_t_m[i]) / 0.07] + [float(f_i[i] @ q_t[k]) / 0.07 for k in range(8)]
        expect += -(z[0] - math.log(sum(math.exp(v) for v in z))) / 4
    assert out.losses["inst_i2t"].item() == pytest.approx(expect, rel=1e-4)


def test_batch_and_queue_negatives_add_the_other_pairs_of_the_batch_to_both_levels(micro_cots: COTS, batch
                                                                                    ) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.eval()
    model.config = model.config.model_copy(update={"instance_negatives": "batch_and_queue", "cmlm": False,
                                                   "cmvm": False})
    q_i, q_t = model.queues.get("image"), model.queues.get("text")
    out = model.pretrain_step(batch, CTX)
    with torch.no_grad():
        f_i, f_t = model.encode_image(batch.images), model.encode_text(batch.text)
        f_i_m = F.normalize(model.vision_proj_m(model.visual_m(batch.images).pooled), dim=-1)
        f_t_m = F.normalize(model.text_proj_m(model.text_m(batch.text.input_ids, batch.text.attention_mask).pooled),
                            dim=-1)
    tau, inst_i2t, inst_t2i, kl = 0.07, 0.0, 0.0, 0.0
    for i in range(4):
        # Columns: the 4 pairs of the batch, then the 8 queued pairs; row i's positive is column i.
        za = [float(f_i[i] @ f_t_m[j]) / tau for j in range(4)] + [float(f_i[i] @ q_t[k]) / tau for k in range(8)]
        zb = [float(f_t[i] @ f_i_m[j]) / tau for j in range(4)] + [float(f_t[i] @ q_i[k]) / tau for k in range(8)]
        inst_i2t += -math.log(_softmax(za)[i]) / 4
        inst_t2i += -math.log(_softmax(zb)[i]) / 4
        kl += (_kl(_softmax(za), _softmax(zb)) + _kl(_softmax(zb), _softmax(za))) / 4
    assert out.losses["inst_i2t"].item() == pytest.approx(inst_i2t, rel=1e-4)
    assert out.losses["inst_t2i"].item() == pytest.approx(inst_t2i, rel=1e-4)
    assert out.losses["task_kl"].item() == pytest.approx(kl, rel=1e-4)
    # A dropped row keeps the others' positives at their own columns.
    logits_i2t, _, target = model._retrieval_logits(f_i, f_t, f_i_m, f_t_m, q_i, q_t,
                                                    torch.tensor([True, False, True, True]))
    assert target.tolist() == [0, 2, 3] and logits_i2t.shape == (3, 12)


def test_both_queues_are_written_together_so_row_k_is_one_pair(micro_cots: COTS, batch) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.eval()
    model.config = model.config.model_copy(update={"cmlm": False, "cmvm": False})
    model.pretrain_step(batch, CTX)            # 4 pairs -> rows 0-3
    with torch.no_grad():
        f_i_m = F.normalize(model.vision_proj_m(model.visual_m(batch.images).pooled), dim=-1)
        f_t_m = F.normalize(model.text_proj_m(model.text_m(batch.text.input_ids, batch.text.attention_mask).pooled),
                            dim=-1)
    torch.testing.assert_close(model.queues.get("image")[:4], f_i_m)
    torch.testing.assert_close(model.queues.get("text")[:4], f_t_m)
    assert int(model.queues.ptr) == 4 and int(model.queues.filled) == 4
    # A bare pair of aligned queues wraps around together.
    q = FeatureQueues(3, {"image": 2, "text": 2})
    for k in range(4):
        q.enqueue(image=torch.full((1, 2), float(k)), text=torch.full((1, 2), 10.0 + k))
    assert q.get("image")[:, 0].tolist() == [3.0, 1.0, 2.0]
    assert q.get("text")[:, 0].tolist() == [13.0, 11.0, 12.0]


# ---- AMF -----------------------------------------------------------------------------------------------------
def test_amf_threshold_and_mask_on_a_hand_made_similarity_queue() -> None:
    queue = torch.tensor([0.2, 0.4, 0.6, 0.8])           # μ 0.5, population σ sqrt(0.05)
    sigma = math.sqrt(0.05)
    d = amf_filter(torch.tensor([0.0, 0.1, 0.2, 0.9]), queue, lam=1.0)
    assert d.mean == pytest.approx(0.5) and d.std == pytest.approx(sigma)
    assert d.threshold == pytest.approx(0.5 - sigma)     # 0.2764
    assert d.keep.tolist() == [False, False, False, True]
    d2 = amf_filter(torch.tensor([0.0, 0.1, 0.2, 0.9]), queue, lam=2.0)   # θ = 0.0528
    assert d2.threshold == pytest.approx(0.5 - 2 * sigma)
    assert d2.keep.tolist() == [False, True, True, True]
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert pair_similarities(img, torch.tensor([[0.6, 0.8], [0.6, 0.8]])).tolist() == pytest.approx([0.6, 0.8])


def test_amf_drops_low_similarity_pairs_from_the_loss_but_enqueues_the_whole_batch(micro_cots: COTS, batch
                                                                                   ) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.eval()
    model.config = model.config.model_copy(update={"cmlm": False, "cmvm": False, "task": False})
    ctx = StepContext(step=5, total_steps=10, steps_per_epoch=10, epoch=0)
    assert not model.amf_ready(ctx)                      # the queue still holds random init
    model.pretrain_step(batch, ctx)
    model.pretrain_step(batch, ctx)                      # 8 real pairs: the queue is full
    assert model.amf_ready(ctx)
    model.config = model.config.model_copy(update={"amf": model.config.amf.model_copy(update={"lam": 0.0})})
    with torch.no_grad():   # untrained: the momentum encoders equal the online ones, so the EMA step is a no-op
        f_i = model.encode_image(batch.images)
        f_i_m = F.normalize(model.vision_proj_m(model.visual_m(batch.images).pooled), dim=-1)
        f_t_m = F.normalize(model.text_proj_m(model.text_m(batch.text.input_ids, batch.text.attention_mask).pooled),
                            dim=-1)
        sims = (f_i_m * f_t_m).sum(-1)
        # Queued pairs with exactly these similarities (twice): θ = μ − 0·σ = their mean.
        e0, e1 = torch.eye(16)[0], torch.eye(16)[1]
        s_k = torch.cat([sims, sims])
        model.queues.queue_image.copy_(e0.expand(8, 16))
        model.queues.queue_text.copy_(s_k[:, None] * e0 + (1 - s_k[:, None] ** 2).sqrt() * e1)
    q_t = model.queues.get("text")
    out = model.pretrain_step(batch, ctx)
    dropped = out.sample_flags["amf_dropped"]
    assert out.stats["amf_threshold"] == pytest.approx(float(sims.mean()), abs=1e-5)
    assert dropped.tolist() == (sims < sims.mean()).tolist()
    assert 0 < int(dropped.sum()) < 4
    kept = (~dropped).nonzero().flatten().tolist()
    expect = 0.0
    assert model.config.instance_negatives == "batch_and_queue"       # the tiny preset
    for i in kept:     # dropped pairs leave the rows; they stay candidates (columns) for the kept ones
        z = [float(f_i[i] @ f_t_m[j]) / 0.07 for j in range(4)] + [float(f_i[i] @ q_t[k]) / 0.07 for k in range(8)]
        expect += -(z[i] - math.log(sum(math.exp(v) for v in z))) / len(kept)
    assert out.losses["inst_i2t"].item() == pytest.approx(expect, rel=1e-4)
    # ...and all four pairs were enqueued (ptr went 0 -> 4 after the 9th..12th rows).
    torch.testing.assert_close(model.queues.get("image")[:4], f_i_m)
    assert out.stats["amf_kept"] == pytest.approx(len(kept) / 4)


def test_amf_off_never_flags(micro_cots: COTS, batch) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.eval()
    model.config = model.config.model_copy(update={"cmlm": False, "cmvm": False,
                                                   "amf": model.config.amf.model_copy(update={"enabled": False})})
    for _ in range(3):
        out = model.pretrain_step(batch, CTX)
    assert out.sample_flags == {} and "amf_threshold" not in out.stats


# ---- token level ---------------------------------------------------------------------------------------------
def test_cmvm_targets_are_the_tokens_of_the_unmasked_image(micro_cots: COTS, batch,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.eval()
    seen: dict[str, torch.Tensor] = {}
    tokenizer_forward = type(model.image_tokenizer).forward

    def spy_tokenizer(self: VisualTokenizer, images: torch.Tensor) -> torch.Tensor:
        seen["tokenizer_input"] = images.clone()
        return tokenizer_forward(self, images)

    ce = F.cross_entropy

    def spy_ce(logits: torch.Tensor, labels: torch.Tensor, **kw: Any) -> torch.Tensor:
        if logits.shape[-1] == model.image_tokenizer.vocab_size:
            seen["labels"] = labels.clone()
        return ce(logits, labels, **kw)

    monkeypatch.setattr(VisualTokenizer, "forward", spy_tokenizer)
    monkeypatch.setattr("vlpbench.methods.cots.F.cross_entropy", spy_ce)
    model.config = model.config.model_copy(update={"instance": False, "task": False, "cmlm": False})
    model.pretrain_step(batch, CTX)
    torch.testing.assert_close(seen["tokenizer_input"], batch.images)        # unmasked, the ViT's own crop
    expected = tokenizer_forward(model.image_tokenizer, batch.images)
    labels = seen["labels"].view(4, -1)
    chosen = labels != -100
    assert 0 < int(chosen.sum()) < labels.numel()
    assert torch.equal(labels[chosen], expected[chosen])
    # The tokenizer itself is DALL-E's argmax of its logits on mapped pixels.
    pix = model.image_tokenizer.pixels(batch.images)
    direct = model.image_tokenizer.encoder(map_pixels(pix)).argmax(1).flatten(1)
    assert torch.equal(direct, expected)


def test_block_mask_covers_about_the_ratio_in_rectangles() -> None:
    g = torch.Generator().manual_seed(0)
    counts = [int(block_mask(14, 75, min_block=16, generator=g).sum()) for _ in range(20)]
    assert all(60 <= c <= 75 for c in counts) and np.mean(counts) > 70
    m = block_masks(3, 8, 0.4, min_block=4, generator=g)
    assert m.shape == (3, 64) and m.dtype == torch.bool
    with pytest.raises(ValueError):
        block_mask(4, 17)


# ---- gradients -----------------------------------------------------------------------------------------------
def _grads(model: COTS) -> dict[str, bool]:
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}


@pytest.mark.parametrize("loss, trains, spares", [
    # Image->text: the image is the query, its keys are momentum texts and the text queue.
    ("inst_i2t", ["visual.", "vision_proj."], ["text.", "text_proj.", "cmvm_head."]),
    ("inst_t2i", ["text.tower.", "text_proj."], ["visual.", "vision_proj.", "text.mlm.", "cmvm_head."]),
    ("task_kl", ["visual.", "vision_proj.", "text.tower.", "text_proj."], ["text.mlm.", "cmvm_head."]),
    ("cmlm", ["text.tower.", "text.mlm.", "visual."], ["vision_proj.", "text_proj.", "cmvm_head.",
                                                         "mask_embedding"]),
    ("cmvm", ["visual.", "cmvm_head.", "mask_embedding", "text.tower."], ["vision_proj.", "text_proj.",
                                                                          "text.mlm."]),
])
def test_each_loss_trains_its_parts_and_never_momentum_or_tokenizer(micro_cots: COTS, batch, loss: str,
                                                                    trains: list[str], spares: list[str]) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.train()
    out = model.pretrain_step(batch, CTX)
    out.losses[loss].backward()
    got = _grads(model)
    for prefix in trains:
        assert any(v for n, v in got.items() if n.startswith(prefix)), f"{loss} does not train {prefix}"
    for prefix in spares:
        assert not any(v for n, v in got.items() if n.startswith(prefix)), f"{loss} trains {prefix}"
    frozen = [n for n, p in model.named_parameters()
              if n.startswith(("visual_m.", "vision_proj_m.", "text_m.", "text_proj_m.", "image_tokenizer."))]
    assert frozen and all(not model.get_parameter(n).requires_grad and model.get_parameter(n).grad is None
                          for n in frozen)
    assert not model.temp.requires_grad and model.image_tokenizer.training is False


def test_base_keeps_the_papers_reading_and_every_tiny_departure_is_on_the_card() -> None:
    from vlpbench.methods.cots import CARD
    from vlpbench.methods.registry import method_config
    base, tiny, cpu = (method_config("cots", s) for s in ("base", "tiny", "cpu"))
    assert (base.instance_negatives, base.momentum, base.queue_size) == ("queue", 0.995, 65536)
    for small in (tiny, cpu):
        assert (small.instance_negatives, small.momentum, small.queue_size) == ("batch_and_queue", 0.9, 256)
    assert (cpu.vision.depth, cpu.text.depth, cpu.mvm_min_block) == (4, 4, 2)
    options = " ".join(d.option for d in CARD.deviations)
    assert "instance_negatives (tiny, cpu)" in options and "queue_size (tiny, cpu)" in options
    assert "vision, text, preprocess.resolution, mvm_min_block (cpu)" in options


def test_total_is_the_weighted_sum_and_switches_remove_terms(micro_cots: COTS, batch) -> None:  # type: ignore[no-untyped-def]
    model = micro_cots.eval()
    model.config = model.config.model_copy(update={"weight_task": 0.5, "weight_mvlm": 2.0})
    torch.manual_seed(3)
    out = model.pretrain_step(batch, CTX)
    l = {k: v.item() for k, v in out.losses.items()}
    assert out.total.item() == pytest.approx(l["inst_i2t"] + l["inst_t2i"] + 0.5 * l["task_kl"]
                                             + 2.0 * (l["cmlm"] + l["cmvm"]), rel=1e-5)
    off = create_method("cots", "tiny", tokenizer=model.tokenizer, overrides={**MICRO_COTS, "cmvm": False, "cmlm": False})
    assert off.image_tokenizer is None
    assert set(off.pretrain_step(batch, CTX).losses) == {"inst_i2t", "inst_t2i", "task_kl"}


# ---- visual tokenizer -------------------------------------------------------------------------------------
def test_tokenizer_has_dalle_layout_and_loads_a_state_dict_strictly(tmp_path: Path) -> None:
    enc = DVAEEncoder(VisualTokenizerConfig())
    assert sum(p.numel() for p in enc.parameters()) == 53_786_240        # DALL-E's encoder.pkl
    keys = set(enc.state_dict())
    assert {"blocks.input.w", "blocks.group_1.block_1.res_path.conv_1.w", "blocks.group_2.block_1.id_path.w",
            "blocks.group_4.block_2.res_path.conv_4.b", "blocks.output.conv.w"} <= keys
    cfg = VisualTokenizerConfig(n_hid=4, blocks_per_group=1, vocab_size=16)
    torch.manual_seed(1)
    src = DVAEEncoder(cfg)
    path = tmp_path / "enc.pt"
    torch.save(src.state_dict(), path)
    tok = VisualTokenizer(cfg.model_copy(update={"weights": str(path)}), 8, (0.5,) * 3, (0.25,) * 3)
    for a, b in zip(src.parameters(), tok.encoder.parameters()):
        assert torch.equal(a, b)
    assert tok(torch.zeros(2, 3, 64, 64)).shape == (2, 64)
    torch.save({k: v for k, v in src.state_dict().items() if k != "blocks.input.w"}, path)
    with pytest.raises(WeightsError, match="1 missing: blocks.input.w"):
        VisualTokenizer(cfg.model_copy(update={"weights": str(path)}), 8, (0.5,) * 3, (0.25,) * 3)


def test_kl_to_uniform_is_zero_for_flat_codes_and_log_v_for_one_hot() -> None:
    assert float(kl_to_uniform(torch.zeros(2, 8, 3, 3))) == pytest.approx(0.0, abs=1e-6)
    sharp = torch.full((1, 8, 1, 1), -1e4)
    sharp[0, 2] = 0.0
    assert float(kl_to_uniform(sharp)) == pytest.approx(math.log(8), rel=1e-5)


def test_dvae_stage_trains_caches_and_is_reused(small_world: BuiltinDataset, tmp_path: Path) -> None:
    req = DVAERequest(VisualTokenizerConfig(n_hid=4, blocks_per_group=1, vocab_size=16), 8,
                      tokenizer_crop(ImagePreprocessConfig(resolution=64), 64), DVAEBudget(steps=4, batch_size=8), 0)
    logs: list[str] = []
    imgs = lambda: small_world.images("pretrain")  # noqa: E731
    first = ensure_dvae(req, small_world.fingerprint, imgs, lambda: small_world.images("val"), {}, tmp_path,
                        log=logs.append)
    assert first.encoder.is_file() and first.record["steps"] == 4 and first.record["heldout_n"] == 60
    assert 1 <= first.record["heldout_codes_used"] <= 16 and first.record["heldout_mse"] > 0
    again = ensure_dvae(req, small_world.fingerprint, imgs, lambda: small_world.images("val"), {}, tmp_path,
                        log=logs.append)
    assert again.directory == first.directory and any("reused" in m for m in logs)
    assert [p.name for p in (tmp_path / "dvae").iterdir()] == [first.directory.name]   # no temp folder left
    other = DVAERequest(req.tokenizer, 8, req.crop, DVAEBudget(steps=5, batch_size=8), 0)
    assert other.fingerprint(small_world.fingerprint) != req.fingerprint(small_world.fingerprint)


def test_saved_cots_reloads_without_the_tokenizer_file(micro_cots: COTS, tmp_path: Path, batch) -> None:  # type: ignore[no-untyped-def]
    enc = tmp_path / "enc.safetensors"
    from safetensors.torch import save_file
    save_file(micro_cots.image_tokenizer.encoder.state_dict(), str(enc))
    model = create_method("cots", "tiny", tokenizer=micro_cots.tokenizer,
                          overrides={**MICRO_COTS, "visual_tokenizer": {**MICRO_COTS["visual_tokenizer"],
                                                                        "weights": str(enc)}})
    save_pretrained(model, tmp_path / "m", "cots", "tiny")
    enc.unlink()
    loaded, meta = load_pretrained(tmp_path / "m")
    assert meta["config"]["visual_tokenizer"]["weights"] is None
    with torch.no_grad():
        torch.testing.assert_close(loaded.image_tokenizer(batch.images), model.image_tokenizer(batch.images))
        torch.testing.assert_close(loaded.encode_image(batch.images), model.eval().encode_image(batch.images))


def test_pipeline_job_trains_the_tokenizer_records_lineage_and_scores_the_filter(
        small_world: BuiltinDataset, cache_root: Path, tmp_path: Path) -> None:
    from vlpbench.benchmarks.job import Job
    from vlpbench.benchmarks.pipeline import run_job
    from vlpbench.benchmarks.tasks.common import describe_lineage
    from vlpbench.benchmarks.suite import Suite
    from vlpbench.reports.store import read_evaluation, read_pretrain

    suite = Suite(name="cots-micro", methods=["cots"], sizes=["tiny"],
                  dataset={"options": small_world.manifest["config"]},
                  method_overrides={"cots": {**MICRO_COTS, "queue_size": 16, "amf": {"lam": 0.5}}},
                  train={"tiny": {"steps": 4, "batch_size": 8, "log_every": 2}},
                  unimodal={"tiny": {"vision_steps": 2, "text_steps": 2, "batch_size": 8}},
                  dvae={"tiny": {"steps": 2, "batch_size": 8}}, retrieval={"split": "val"},
                  finetune={"budget": {"tiny": {"steps": 2, "batch_size": 8}}})
    out = run_job(Job(suite, "cots", "tiny", 0), tmp_path, progress=False, cache_root=cache_root, log=lambda m: None)
    pre = read_pretrain(out.pretrain)
    assert pre.config["init"]["visual_tokenizer"]["kind"] == "stage"
    f = pre.summary["filters"]["amf_dropped"]
    assert f["steps"] == 2 and f["samples"] == 16 and 0 <= f["flagged"] <= 16   # queue full after 2 steps
    assert set(out.results) == {"zeroshot_retrieval", "finetuned_retrieval", "video_retrieval", "product_retrieval",
                                "latency"}                                       # two streams: no re-ranking
    ev = read_evaluation(out.results["zeroshot_retrieval"])
    assert [e["stage"] for e in ev.lineage] == ["unimodal-init", "visual-tokenizer", "pretrain"]
    assert "dVAE tokenizer (16 codes, 2 steps)" in describe_lineage(ev.lineage)
    assert ev.protocol["scoring"] == "itc"


def test_dvae_train_command(small_world: BuiltinDataset, cache_root: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    import json as _json

    from vlpbench.benchmarks import cli

    opts = _json.dumps(small_world.manifest["config"])
    tok = _json.dumps(MICRO_COTS["visual_tokenizer"])
    args = ["dvae", "train", "--cache", str(cache_root), "--set", f"dataset={{options: {opts}}}",
            "--set", "dvae={tiny: {steps: 3, batch_size: 8}}"]
    assert cli.main([*args, "--set", f"method_overrides={{cots: {{visual_tokenizer: {tok}}}}}"]) == 0
    out = capsys.readouterr().out
    assert "16 codes, 8x8 tokens at 64 px" in out and "encoder.safetensors" in out
    assert cli.main([*args, "--set", "method_overrides={cots: {cmvm: false}}"]) == 2
    assert "needs no trained visual tokenizer" in capsys.readouterr().err
