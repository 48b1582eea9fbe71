"""TCL: every loss against a loop-based recomputation, sampler, α ramp, EMA/queues, re-ranking, checkpoints."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.data.types import RetrievalSplit
from vlpbench.benchmarks.evaluation.metrics import retrieval_ranks
from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.methods import StepContext, TextTokenizer, create_method
from vlpbench.methods.masking import mask_tokens
from vlpbench.methods.tcl import TCL, pool_patches, sample_hard_negatives
from vlpbench.methods.checkpoints.tcl import load_official
from vlpbench.methods.tcl_checkpoint import from_official, to_official
from vlpbench.methods.towers import WeightsError
from tests.test_shared_blocks import _g2l_loop

MICRO_TCL: dict[str, Any] = {
    "vision": {"width": 32, "depth": 1, "heads": 2},
    "text": {"width": 32, "depth": 2, "heads": 2, "dropout": 0.0},
    "fusion_layer": 1, "embed_dim": 16, "queue_size": 8,
}


@pytest.fixture
def micro_tcl(tokenizer: TextTokenizer) -> TCL:
    torch.manual_seed(0)
    return create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL)  # type: ignore[return-value]


def _soft_ce_loop(logits: torch.Tensor, targets: torch.Tensor) -> float:
    total = 0.0
    for i in range(logits.shape[0]):
        z = [float(x) for x in logits[i]]
        lse = math.log(sum(math.exp(v) for v in z))
        total += -sum(float(targets[i, j]) * (z[j] - lse) for j in range(len(z)))
    return total / logits.shape[0]


def test_every_loss_matches_a_loop_based_computation(micro_tcl: TCL, small_world: BuiltinDataset,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model = micro_tcl.eval()            # dropout off: the only randomness left is sampling and masking
    batch = PretrainBatches(small_world.pretrain_corpus(), model, 4, seed=0).batch(0, 0)
    ctx = StepContext(step=3, total_steps=10, steps_per_epoch=6, epoch=0)
    ref = copy.deepcopy(model)
    sampler_weights: list[torch.Tensor] = []

    def recording_sampler(weights: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        sampler_weights.append(weights.clone())
        return sample_hard_negatives(weights, allowed)

    monkeypatch.setattr("vlpbench.methods.tcl.sample_hard_negatives", recording_sampler)
    torch.manual_seed(11)
    out = model.pretrain_step(batch, ctx)
    alpha = 0.4 * 3 / 6
    assert out.stats["alpha"] == pytest.approx(alpha)

    torch.manual_seed(11)
    b, text = 4, batch.text
    with torch.no_grad():
        ref._ema.update()
        tau = float(ref.temp)
        img_tok = ref.visual(batch.images).tokens
        img = F.normalize(ref.vision_proj(img_tok[:, 0]), dim=-1)
        txt_tok = ref.text.encode(text)
        txt = F.normalize(ref.text_proj(txt_tok[:, 0]), dim=-1)
        img_tok_m = ref.visual_m(batch.extras["image_view2"]).tokens
        img_m = F.normalize(ref.vision_proj_m(img_tok_m[:, 0]), dim=-1)
        loc_img = pool_patches(F.normalize(ref.vision_proj_m(img_tok_m[:, 1:]), dim=-1), 4)
        txt_tok_m = ref.text_m.encode(text)
        txt_m = F.normalize(ref.text_proj_m(txt_tok_m[:, 0]), dim=-1)
        loc_txt = F.normalize(ref.text_proj_m(txt_tok_m[:, 1:]), dim=-1)
        img_all = torch.cat([img_m, ref.queues.get("image")])
        txt_all = torch.cat([txt_m, ref.queues.get("text")])
    n_cand = b + 8
    hard = torch.zeros(b, n_cand)
    hard[:, :b] = torch.eye(b)

    def distilled(teacher_rows: torch.Tensor) -> torch.Tensor:
        return alpha * torch.softmax(teacher_rows, dim=1) + (1 - alpha) * hard

    expected = {
        "itc_i2t": _soft_ce_loop(img @ txt_all.t() / tau, distilled(img_m @ txt_all.t() / tau)),
        "itc_t2i": _soft_ce_loop(txt @ img_all.t() / tau, distilled(txt_m @ img_all.t() / tau)),
        "imc_i2i": _soft_ce_loop(img @ img_all.t() / tau, hard),
        "imc_t2t": _soft_ce_loop(txt @ txt_all.t() / tau, hard),
        "lmi_image": _g2l_loop(loc_img.double(), img.double(), tau, torch.ones(b, 16, dtype=torch.bool)),
        "lmi_text": _g2l_loop(loc_txt.double(), txt.double(), tau, text.attention_mask[:, 1:].bool()),
    }
    for k, v in expected.items():
        assert out.losses[k].item() == pytest.approx(v, rel=1e-4), k
    assert out.losses["ita"].item() == pytest.approx(sum(expected.values()) / 6, rel=1e-4)

    # ITM: negatives drawn ∝ softmax of the in-batch similarities of the right direction...
    with torch.no_grad():
        allowed = ~torch.eye(b, dtype=torch.bool)
        w_img_per_text = torch.softmax(txt @ img_all[:b].t() / tau, dim=1)
        w_txt_per_image = torch.softmax(img @ txt_all[:b].t() / tau, dim=1)
        assert len(sampler_weights) == 2
        torch.testing.assert_close(sampler_weights[0], w_img_per_text)
        torch.testing.assert_close(sampler_weights[1], w_txt_per_image)
        # ...the same draws, then one fusion pass per pair.
        neg_img = sample_hard_negatives(w_img_per_text, allowed)
        neg_txt = sample_hard_negatives(w_txt_per_image, allowed)
        pairs = [(t, t, 1) for t in range(b)] + [(t, int(neg_img[t]), 0) for t in range(b)] + \
                [(int(neg_txt[i]), i, 0) for i in range(b)]
        itm = 0.0
        for t, i, label in pairs:
            fused = ref.text.fuse(txt_tok[t:t + 1], text.attention_mask[t:t + 1], img_tok[i:i + 1])
            logit = ref.itm_head(fused[:, 0])[0]
            itm += -(float(logit[label]) - math.log(sum(math.exp(float(x)) for x in logit)))
    assert out.losses["itm"].item() == pytest.approx(itm / len(pairs), rel=1e-4)

    # MLM: the same masks, teacher and student one sample at a time, loops over masked positions.
    tok = ref.tokenizer
    masked = mask_tokens(text.input_ids, vocab_size=tok.vocab_size, mask_id=tok.mask_id,
                         never_mask=(tok.pad_id, tok.cls_id), probability=0.15)
    ce = kd = 0.0
    n = 0
    with torch.no_grad():
        for s in range(b):
            ids, att = masked.input_ids[s:s + 1], text.attention_mask[s:s + 1]
            student = ref.text.mlm_logits(ids, att, img_tok[s:s + 1])[0].double()
            teacher = ref.text_m.mlm_logits(ids, att, img_tok_m[s:s + 1])[0].double()
            for pos in range(ids.shape[1]):
                label = int(masked.labels[s, pos])
                if label == -100:
                    continue
                logp = torch.log_softmax(student[pos], dim=0)
                ce += -float(logp[label])
                kd += -float((torch.softmax(teacher[pos], dim=0) * logp).sum())
                n += 1
    assert n > 0
    assert out.losses["mlm"].item() == pytest.approx((1 - alpha) * ce / n + alpha * kd / n, rel=1e-4)
    assert out.total.item() == pytest.approx(out.losses["mlm"].item() + out.losses["ita"].item()
                                             + out.losses["itm"].item(), rel=1e-6)


def test_paper_weighting_is_the_unweighted_sum(tokenizer: TextTokenizer, small_world: BuiltinDataset) -> None:
    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides={**MICRO_TCL, "loss_weighting": "paper"})
    batch = PretrainBatches(small_world.pretrain_corpus(), model, 4, seed=0).batch(0, 0)
    out = model.pretrain_step(batch, StepContext(0, 10, 6, 1))
    six = sum(out.losses[k] for k in ("itc_i2t", "itc_t2i", "imc_i2i", "imc_t2t", "lmi_image", "lmi_text"))
    assert out.total.item() == pytest.approx((six / 2 + out.losses["itm"] + out.losses["mlm"]).item(), rel=1e-6)


def test_hard_negative_sampler_never_returns_a_disallowed_index() -> None:
    gen_weights = torch.tensor([[100.0, 1.0, 0.0],     # huge weight on the positive itself
                                [0.0, 0.0, 0.0],        # all zero -> uniform fallback
                                [float("nan"), 1.0, 1.0]])  # unusable -> uniform fallback
    allowed = ~torch.eye(3, dtype=torch.bool)
    torch.manual_seed(0)
    draws = torch.stack([sample_hard_negatives(gen_weights, allowed) for _ in range(3000)])
    assert not (draws == torch.arange(3)).any()
    assert set(draws[:, 0].tolist()) == {1}                    # 0 is itself, 2 has weight 0
    assert set(draws[:, 1].tolist()) == {0, 2} and set(draws[:, 2].tolist()) == {0, 1}
    freq = (draws[:, 1] == 0).float().mean().item()
    assert abs(freq - 0.5) < 0.05
    w = torch.tensor([[0.0, 0.9, 0.1]] * 3)
    draws = torch.stack([sample_hard_negatives(w, allowed) for _ in range(3000)])
    assert abs((draws[:, 0] == 1).float().mean().item() - 0.9) < 0.03   # ∝ weights
    with pytest.raises(ValueError, match="batch size >= 2"):
        sample_hard_negatives(torch.ones(1, 1), torch.zeros(1, 1, dtype=torch.bool))


def test_alpha_ramps_over_the_first_epoch(micro_tcl: TCL, tokenizer: TextTokenizer) -> None:
    assert [micro_tcl.alpha_at(StepContext(s, 100, 10, 0)) for s in (0, 5, 10)] == pytest.approx([0.0, 0.2, 0.4])
    assert micro_tcl.alpha_at(StepContext(12, 100, 10, 1)) == pytest.approx(0.4)
    flat = create_method("tcl", "tiny", tokenizer=tokenizer, overrides={**MICRO_TCL, "alpha_warmup": "none"})
    assert flat.alpha_at(StepContext(0, 100, 10, 0)) == pytest.approx(0.4)


def test_ema_update_and_queue_fill_in_a_step(micro_tcl: TCL, small_world: BuiltinDataset) -> None:
    model = micro_tcl.eval()
    with torch.no_grad():                               # make online and momentum differ
        for p in model.visual.parameters():
            p.add_(0.1)
    before_m = copy.deepcopy(model.visual_m.state_dict())
    online = copy.deepcopy(model.visual.state_dict())
    batch = PretrainBatches(small_world.pretrain_corpus(), model, 4, seed=0).batch(0, 0)
    model.pretrain_step(batch, StepContext(0, 10, 6, 0))
    m = model.config.momentum
    assert m == 0.9                                     # tiny's calibrated value (base: 0.995)
    for k, v in model.visual_m.state_dict().items():
        torch.testing.assert_close(v, m * before_m[k] + (1 - m) * online[k])
    assert int(model.queues.ptr) == 4 and int(model.queues.filled) == 4
    with torch.no_grad():
        feats = F.normalize(model.vision_proj_m(model.visual_m(batch.extras["image_view2"]).pooled), dim=-1)
    torch.testing.assert_close(model.queues.get("image")[:4], feats)
    assert torch.equal(model.queues.get("ids")[:4], batch.index) and (model.queues.get("ids")[4:] == -100).all()


def _subset(split: RetrievalSplit, n_images: int) -> RetrievalSplit:
    keep = np.flatnonzero(np.asarray(split.txt2img) < n_images)
    from vlpbench.benchmarks.data.types import ArrayImages
    images = ArrayImages(split.images.get(np.arange(n_images)))
    return RetrievalSplit(split.ref, images, [split.texts[i] for i in keep], np.asarray(split.txt2img)[keep])


def test_rerank_with_k_equal_to_the_gallery_is_exhaustive_itm(micro_tcl: TCL, small_world: BuiltinDataset) -> None:
    model = micro_tcl.eval()
    split = _subset(small_world.retrieval_split("test"), 12)
    k = max(split.n_images, split.n_texts)
    out = evaluate_image_text(model, split, RetrievalProtocol(scoring="itm", rerank_k=k), torch.device("cpu"), "fp32")
    with torch.no_grad():
        img_tok = model.rerank_image_features(model.preprocess.eval(split.images.get(np.arange(split.n_images))))
        feats = model.rerank_text_features(model.tokenize(list(split.texts)))
        full = torch.stack([model.rerank_score(img_tok[i:i + 1].expand(split.n_texts, -1, -1), feats)
                            for i in range(split.n_images)])
    i2t, t2i = retrieval_ranks(full, split.txt2img)
    np.testing.assert_array_equal(out.i2t_ranks, i2t)
    np.testing.assert_array_equal(out.t2i_ranks, t2i)
    assert out.timings["rerank_pairs"] == split.n_images * split.n_texts * 2


def test_official_checkpoint_layout_round_trip(micro_tcl: TCL, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    official = to_official(micro_tcl.state_dict(), fusion_layer=1)
    for key in ("visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder_m.pos_embed",
                "text_encoder.bert.embeddings.word_embeddings.weight",
                "text_encoder.bert.encoder.layer.0.attention.self.query.weight",
                "text_encoder.bert.encoder.layer.1.crossattention.self.key.weight",
                "text_encoder_m.cls.predictions.transform.dense.weight", "text_encoder.cls.predictions.decoder.weight",
                "vision_proj.weight", "text_proj_m.bias", "itm_head.weight", "temp", "queue_ptr"):
        assert key in official, key
    assert "text_encoder.bert.encoder.layer.0.crossattention.self.key.weight" not in official
    assert official["image_queue"].shape == (16, 8)                 # (dim, size) as ALBEF stores it
    torch.save(official, tmp_path / "official.pth")
    torch.manual_seed(99)
    other = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL)
    load_official(other, tmp_path / "official.pth", fusion_layer=1)
    mine, theirs = micro_tcl.state_dict(), other.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine if k != "queues.filled")

    extra = {**official, "text_encoder.bert.pooler.dense.weight": torch.zeros(2)}
    with pytest.raises(WeightsError, match="pooler.dense.weight"):
        from_official(extra, fusion_layer=1)
    missing = {k: v for k, v in official.items() if k != "itm_head.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="1 missing: itm_head.weight"):
        load_official(other, tmp_path / "missing.pth", fusion_layer=1)
    untied = {**official, "text_encoder.cls.predictions.decoder.weight":
              official["text_encoder.cls.predictions.decoder.weight"] + 1}
    with pytest.raises(WeightsError, match="not tied"):
        from_official(untied, fusion_layer=1)



def test_image_id_positives_spread_targets_and_skip_same_id_negatives(tokenizer: TextTokenizer,
                                                                      small_world: BuiltinDataset,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides={**MICRO_TCL, "positives": "image_id"}).eval()
    batch = PretrainBatches(small_world.pretrain_corpus(), model, 4, seed=0).batch(0, 0)
    batch.extras["image_id"] = torch.tensor([7, 7, 8, 9])          # captions 0 and 1 describe one image
    seen: dict[str, torch.Tensor] = {}

    def spy_targets(teacher: torch.Tensor, hard: torch.Tensor, alpha: float) -> torch.Tensor:
        seen["hard"] = hard.clone()
        return hard

    def spy_sampler(weights: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        seen["allowed"] = allowed.clone()
        return sample_hard_negatives(weights, allowed)

    monkeypatch.setattr("vlpbench.methods.tcl.distilled_targets", spy_targets)
    monkeypatch.setattr("vlpbench.methods.tcl.sample_hard_negatives", spy_sampler)
    model.pretrain_step(batch, StepContext(0, 10, 6, 1))
    hard = seen["hard"]
    assert hard.shape == (4, 4 + 8) and torch.allclose(hard.sum(1), torch.ones(4))
    torch.testing.assert_close(hard[0, :4], torch.tensor([0.5, 0.5, 0.0, 0.0]))   # both captions of image 7
    torch.testing.assert_close(hard[2, :4], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert hard[:, 4:].sum() == 0                                                # queue ids are -100 (empty)
    allowed = seen["allowed"]
    assert not allowed[0, 1] and not allowed[1, 0] and not allowed.diagonal().any() and allowed[0, 2]
    assert torch.equal(model.queues.get("ids")[:4], torch.tensor([7, 7, 8, 9]))


def test_fusion_reads_every_image_token_and_ignores_padded_text(micro_tcl: TCL) -> None:
    """Cross-attention sees all image tokens (each one moves the fused [CLS]); padded text positions do not."""
    micro_tcl.eval()
    torch.manual_seed(1)
    b, n_img, length, width = 2, 5, 6, micro_tcl.text.fusion.layers[0].output.dense.out_features
    text = torch.randn(b, length, width)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    image = torch.randn(b, n_img, width, requires_grad=True)
    cls = micro_tcl.text.fuse(text, mask, image)[:, 0]
    probe = torch.randn(width)                                    # not .sum(): a LayerNorm output sums to a constant
    grad = torch.autograd.grad((cls * probe).sum(), image)[0]
    assert (grad.abs().sum(-1) > 0).all()                         # every image token of every sample matters
    changed = text.clone()
    changed[0, 4:] = torch.randn(2, width) * 10                   # sample 0's padding
    again = micro_tcl.text.fuse(changed, mask, image)[:, 0]
    torch.testing.assert_close(again, cls, rtol=0, atol=1e-5)
    changed[1, 4:] = torch.randn(2, width)                        # sample 1 has no padding there: it must move
    assert (micro_tcl.text.fuse(changed, mask, image)[1, 0] - cls[1]).abs().max() > 1e-3


def test_base_keeps_the_papers_values_and_tiny_deviations_are_on_the_card() -> None:
    from vlpbench.methods import method_config, train_recipe
    base, tiny, cpu = (method_config("tcl", s) for s in ("base", "tiny", "cpu"))
    assert (base.momentum, base.queue_size, base.preprocess.train_crop_scale) == (0.995, 65536, (0.2, 1.0))
    assert train_recipe("tcl", "base").lr == 1e-4 and train_recipe("tcl", "base").lr_scale == {}
    for size, small in (("tiny", tiny), ("cpu", cpu)):
        assert (small.momentum, small.queue_size) == (0.9, 256) and train_recipe("tcl", size).lr_scale == {"temp": 0.1}
    assert (cpu.text.depth, cpu.fusion_layer) == (2, 1)
    options = {d.option for d in TCL.card.deviations}
    assert {"momentum, queue_size (tiny, cpu)", "train.recipe.lr_scale (tiny, cpu)",
            "vision, text, fusion_layer, preprocess.resolution (cpu)"} <= options


def test_set_eval_resolution_resamples_every_pos_embed_as_the_official_interpolate(
        micro_tcl: TCL, small_world: BuiltinDataset, tmp_path: Path) -> None:
    """TCL's Retrieval.py evaluates at image_res 384 after models/vit.py interpolate_pos_embed of both
    visual_encoder.pos_embed and visual_encoder_m.pos_embed: bicubic, align_corners=False, class row kept."""
    from vlpbench.methods import load_pretrained, save_pretrained

    model = micro_tcl.eval()
    with torch.no_grad():                                         # the momentum copy differs from the online one
        model.visual_m.vit.pos_embed.add_(torch.randn_like(model.visual_m.vit.pos_embed))
    before = {name: m.vit.pos_embed.detach().clone() for name, m in (("visual", model.visual),
                                                                    ("visual_m", model.visual_m))}
    change = model.set_eval_resolution(96)                        # 64 px / patch 8 -> 96 px: grid 8 -> 12
    assert change["from"] == 64 and change["to"] == 96 and change["towers"] == {"visual": 64, "visual_m": 64}
    assert model.resolution_changes == [change]
    for name, tower in (("visual", model.visual), ("visual_m", model.visual_m)):
        pos = before[name]
        grid = pos[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False)
        expected = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)
        assert torch.equal(tower.vit.pos_embed.detach(), expected), name
        assert tower.vit.pos_embed.requires_grad == (name == "visual") and tower.grid == 12
    assert model.preprocess.config.resolution == 96
    assert model.config.vision.image_size == 96 and model.config.preprocess.resolution == 96
    split = small_world.retrieval_split("test")
    images = model.preprocess.eval(split.images.get(np.arange(2)))
    assert images.shape[-2:] == (96, 96)
    with torch.no_grad():
        assert model.encode_image(images).shape == (2, 16)
        assert model.rerank_image_features(images).shape == (2, 1 + 144, 32)
    save_pretrained(model, tmp_path / "m", "tcl", "tiny")          # config and weights agree: it reloads
    again, _ = load_pretrained(tmp_path / "m")
    assert torch.equal(again.visual.vit.pos_embed, model.visual.vit.pos_embed)
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        model.set_eval_resolution(100)


def test_itm_scores_are_fp32_under_bf16_autocast(micro_tcl: TCL, small_world: BuiltinDataset) -> None:
    """The official evaluation scores in fp32. Under bf16 autocast a bf16 ITM head rounds logits to 8 significant
    bits (ties); rerank_score runs the head in fp32 on the fusion output."""
    model = micro_tcl.eval()
    split = small_world.retrieval_split("test")
    n = 24
    images = model.preprocess.eval(split.images.get(np.arange(1)))
    text = model.tokenize(list(split.texts[:n]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        img = model.rerank_image_features(images).expand(n, -1, -1)
        feats = model.rerank_text_features(text)
        scores = model.rerank_score(img, feats)
        cls = model.text.fuse(feats["embeds"], feats["mask"], img)[:, 0]
    assert scores.dtype == torch.float32
    with torch.no_grad():
        w, b = model.itm_head.weight[1].double(), model.itm_head.bias[1].double()
        exact = cls.double() @ w + b                               # the head in float64 on the same fused [CLS]
        # fp32 dot product of d terms plus a bias: |error| <= gamma_(d+1) * (sum |w_i h_i| + |b|), u = 2^-24
        d = cls.shape[1]
        bound = (d + 1) * 2.0 ** -24 / (1 - (d + 1) * 2.0 ** -24) * ((cls.double().abs() @ w.abs()) + b.abs())
    assert ((scores.double() - exact).abs() <= bound).all()
    assert (scores.to(torch.bfloat16).float() != scores).float().mean() > 0.9   # not on the bf16 grid
    assert scores.unique().numel() == n                                         # no ties


def test_finetuning_starts_with_the_id_queue_empty(tokenizer: TextTokenizer, small_world: BuiltinDataset,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretraining queues corpus indices; models/model_retrieval.py starts fine-tuning with idx_queue all -100,
    so an image id equal to an old corpus index must not make that queue row a positive. The feature queues
    and pointer stay (Retrieval.py loads them from the pretraining checkpoint)."""
    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL).eval()
    batches = PretrainBatches(small_world.pretrain_corpus(), model, 4, seed=0)
    for i in range(2):
        model.pretrain_step(batches.batch(0, i), StepContext(i, 10, 6, 1))
    old_ids = model.queues.get("ids")
    assert (old_ids >= 0).all()                                    # 8 corpus indices fill the queue
    feats, ptr = model.queues.get("image"), int(model.queues.ptr)
    model.start_finetuning()
    assert (model.queues.get("ids") == -100).all()
    assert torch.equal(model.queues.get("image"), feats) and int(model.queues.ptr) == ptr
    seen: dict[str, torch.Tensor] = {}

    def spy_targets(teacher: torch.Tensor, hard: torch.Tensor, alpha: float) -> torch.Tensor:
        seen.setdefault("hard", hard.clone())
        return hard

    monkeypatch.setattr("vlpbench.methods.tcl.distilled_targets", spy_targets)
    batch = batches.batch(1, 0)
    batch.extras["image_id"] = old_ids[:4].clone()                 # image ids that collide with queued indices
    model.finetune_step(batch, StepContext(0, 10, 6, 0))
    hard = seen["hard"]
    assert hard[:, 4:].sum() == 0 and torch.allclose(hard[:, :4].sum(1), torch.ones(4))


def test_a_tcl_without_mlm_head_fine_tunes_but_does_not_pretrain(tokenizer: TextTokenizer,
                                                                 small_world: BuiltinDataset) -> None:
    from vlpbench.methods import method_config

    assert "mlm_head" not in method_config("tcl", "tiny").model_dump()   # default left out: fingerprints unchanged
    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides={**MICRO_TCL, "mlm_head": False})
    assert model.config.model_dump()["mlm_head"] is False
    assert not any(".mlm." in k for k in model.state_dict())
    batch = PretrainBatches(small_world.pretrain_corpus(), model, 4, seed=0).batch(0, 0)
    batch.extras["image_id"] = batch.index
    out = model.finetune_step(batch, StepContext(0, 10, 6, 1))
    assert torch.isfinite(out.total) and "mlm" not in out.losses
    with pytest.raises(RuntimeError, match="cannot pretrain"):
        model.pretrain_step(batch, StepContext(0, 10, 6, 1))
