"""SCALE: the self-harmonized graph and SIMCL against hand computations, masking, missing modalities, the ablation
switches, media inputs and product retrieval through the harness."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.data.builtin.media import BuiltinMedia
from vlpbench.benchmarks.data.fields import field_builder
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.methods import (ConfigError, PretrainBatch, StepContext, TextTokenizer, create_method, load_pretrained,
                     method_config, save_pretrained)
from vlpbench.methods.losses import pairwise_infonce, self_harmonized_weights
from vlpbench.methods.masking import IGNORE_INDEX
from vlpbench.methods.media import frame_descriptors
from vlpbench.methods.scale import MODALITIES, SCALE
from vlpbench.methods.scale_blocks import EncoderLayer, SequenceFeatures, quick_gelu

MICRO_SCALE: dict[str, Any] = {
    "vision": {"width": 32, "depth": 1, "heads": 2, "patch_size": 16},
    "text": {"width": 32, "depth": 1, "heads": 2, "dropout": 0.0},
    "video": {"frames": 2, "frame_size": 8},
    "audio": {"mel": {"n_mels": 8, "hop_length": 2048}},
    "video_encoder": {"depth": 1, "heads": 2},
    "audio_encoder": {"depth": 1, "heads": 2},
    "joint": {"depth": 1, "heads": 2},
    "simcl": {"proj_dim": 16, "form": "code", "stop_gradient": False, "negatives": "simclr"},   # SCALE_code's
    "table_max_length": 16,
}
CTX = StepContext(step=0, total_steps=10, steps_per_epoch=10, epoch=0)


def _micro(tokenizer: TextTokenizer, **overrides: Any) -> SCALE:
    torch.manual_seed(0)
    return create_method("scale", "tiny", tokenizer=tokenizer, overrides={**MICRO_SCALE, **overrides})  # type: ignore[return-value]


def _batch(model: SCALE, world: BuiltinDataset, n: int = 8) -> PretrainBatch:
    return PretrainBatches(world.pretrain_corpus(), model, n, seed=0).batch(0, 0)


@pytest.fixture
def model(tokenizer: TextTokenizer) -> SCALE:
    return _micro(tokenizer)


def _sprime_by_hand(s: np.ndarray) -> np.ndarray:
    """SCALE_code's per-sample graph: S ⊙ softmax_row(S), diagonal included, each row L2-normalised."""
    e = np.exp(s)
    w = s * e / e.sum(axis=1, keepdims=True)
    return w / np.linalg.norm(w, axis=1, keepdims=True)


@pytest.mark.parametrize("norm_first, activation", [(True, "quick_gelu"), (False, "gelu"), (True, "gelu")])
def test_encoder_layer_matches_pytorchs_in_outputs_gradients_and_state_dict(norm_first: bool, activation: str) -> None:
    """EncoderLayer is nn.TransformerEncoderLayer with its own self-attention path: same initial weights (same
    seed), same keys, and the same outputs and gradients in a 2-layer encoder with padded keys."""
    act = quick_gelu if activation == "quick_gelu" else "gelu"
    stacks = []
    for cls in (nn.TransformerEncoderLayer, EncoderLayer):
        torch.manual_seed(3)
        layer = cls(16, 4, 40, 0.0, activation=act, batch_first=True, norm_first=norm_first)
        stacks.append(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False))
    ref, ours = stacks
    assert ref.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ours.state_dict().values()))
    x = torch.randn(3, 7, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True
    pad[2, 1:] = True               # one valid key only
    outs, grads = [], []
    for stack in stacks:
        xi = x.clone().requires_grad_(True)
        out = stack(xi, src_key_padding_mask=pad)
        (out * torch.linspace(-1, 1, 16)).sum().backward()
        outs.append(out.detach())
        grads.append([xi.grad] + [p.grad for p in stack.parameters()])
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    for g_ours, g_ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-4)
    # a boolean mask passed to one layer directly means the same as the encoder's canonical float mask
    layer = ours.layers[0].eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x, src_key_padding_mask=pad), ref.layers[0].eval()(x, src_key_padding_mask=pad),
                                   atol=1e-5, rtol=1e-5)


def test_modality_graph_on_hand_made_features(model: SCALE) -> None:
    # Three unit vectors 0°, 60°, 90° apart: S = [[1, .5, 0], [.5, 1, cos 30°], [0, cos 30°, 1]].
    feats = {"text": torch.tensor([[1.0, 0.0]]), "image": torch.tensor([[0.5, math.sqrt(3) / 2]]),
             "table": torch.tensor([[0.0, 2.0]])}   # length does not matter: cosine
    present = torch.tensor([[True, True, True, False, False]])
    s = np.array([[1, 0.5, 0], [0.5, 1, math.sqrt(3) / 2], [0, math.sqrt(3) / 2, 1]])
    graph = model.modality_graph(feats, present, code_form=True, stop_gradient=True)
    assert graph.shape == (1, 5, 5)
    assert np.allclose(graph[0, :3, :3].numpy(), _sprime_by_hand(s), atol=1e-6)
    assert graph[0, 3:].abs().sum() == 0 and graph[0, :, 3:].abs().sum() == 0   # absent: no weight
    # Row 0 by hand: softmax(1, .5, 0) = (e, e^.5, 1)/Z; S' row = (1·e, .5·e^.5, 0)/Z, then unit length.
    row = np.array([math.e, 0.5 * math.exp(0.5), 0.0])
    assert np.allclose(graph[0, 0, :3].numpy(), row / np.linalg.norm(row), atol=1e-6)
    # Paper form: one batch graph, softmax over m != n only, no normalisation.
    paper = model.modality_graph(feats, present, code_form=False, stop_gradient=True)
    e01, e02 = math.exp(0.5), math.exp(0.0)
    assert paper.shape == (5, 5) and paper[0, 0] == 0
    assert float(paper[0, 1]) == pytest.approx(0.5 * e01 / (e01 + e02), abs=1e-6)
    assert float(paper[0, 2]) == pytest.approx(0.0, abs=1e-7)


def test_absent_modalities_drop_out_of_the_self_harmonized_softmax() -> None:
    s = torch.tensor([[1.0, 0.2, 0.7], [0.2, 1.0, 0.4], [0.7, 0.4, 1.0]])
    valid = torch.tensor([True, False, True])
    w = self_harmonized_weights(s, include_diagonal=True, row_l2_normalise=True, valid=valid)
    sub = self_harmonized_weights(s[[0, 2]][:, [0, 2]], include_diagonal=True, row_l2_normalise=True)
    assert torch.allclose(w[[0, 2]][:, [0, 2]], sub) and w[1].abs().sum() == 0 and w[:, 1].abs().sum() == 0
    alone = self_harmonized_weights(s, valid=torch.tensor([True, False, False]))   # one modality, no pairs
    assert torch.equal(alone, torch.zeros(3, 3))


def _nt_xent_by_hand(a: torch.Tensor, b: torch.Tensor, tau: float, scale: torch.Tensor, valid: torch.Tensor) -> float:
    z = F.normalize(torch.cat([a, b]), dim=-1)
    n = a.shape[0]
    losses = []
    for r in range(2 * n):
        if not valid[r % n]:
            continue
        pos = (r + n) % (2 * n)
        terms = {k: float(scale[r % n] * (z[r] @ z[k]) / tau) for k in range(2 * n) if k != r and valid[k % n]}
        losses.append(-(terms[pos] - math.log(sum(math.exp(v) for v in terms.values()))))
    return sum(losses) / len(losses)


def test_pairwise_infonce_against_direct_loops() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    scale = torch.tensor([0.5, 1.0, 0.2, 0.9, 0.7])
    valid = torch.tensor([True, True, False, True, True])
    got = pairwise_infonce(a, b, 0.07, negatives="simclr", row_scale=scale, valid=valid)
    assert float(got) == pytest.approx(_nt_xent_by_hand(a, b, 0.07, scale, valid), rel=1e-5)
    # CLIP form: ½[CE(a·bᵀ/τ) + CE(b·aᵀ/τ)], all valid, no scale.
    an, bn = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    ab = an @ bn.t() / 0.1
    direct = 0.5 * (F.cross_entropy(ab, torch.arange(5)) + F.cross_entropy(ab.t(), torch.arange(5)))
    assert float(pairwise_infonce(a, b, 0.1, negatives="cross_modal")) == pytest.approx(float(direct), rel=1e-6)
    assert float(pairwise_infonce(a, b, 0.1, valid=torch.tensor([True, False, False, False, False]))) == 0.0


def test_simcl_code_form_is_the_mean_of_graph_scaled_pair_losses(model: SCALE) -> None:
    g = torch.Generator().manual_seed(1)
    pooled = {m: torch.rand(6, 16, generator=g) for m in MODALITIES}
    present = torch.ones(6, 5, dtype=torch.bool)
    loss, stats = model.simcl_loss(pooled, present, mask_missing=False)
    feats = torch.stack([F.normalize(pooled[m], dim=-1) for m in MODALITIES], dim=1)
    expected = []
    graphs = [_sprime_by_hand((feats[b] @ feats[b].t()).numpy().astype(np.float64)) for b in range(6)]
    for i in range(5):
        for j in range(i + 1, 5):
            w = torch.tensor([graphs[b][i, j] for b in range(6)], dtype=torch.float32)
            expected.append(_nt_xent_by_hand(pooled[MODALITIES[i]], pooled[MODALITIES[j]], 0.07, w,
                                             torch.ones(6, dtype=torch.bool)))
    assert float(loss) == pytest.approx(sum(expected) / 10, rel=1e-4)
    assert stats["graph_text_image"] == pytest.approx(float(np.mean([gr[0, 1] for gr in graphs])), rel=1e-4)


def test_simcl_paper_form_weights_each_pair_loss_by_the_batch_graph(tokenizer: TextTokenizer) -> None:
    model = _micro(tokenizer, simcl={"form": "paper", "negatives": "cross_modal"})
    g = torch.Generator().manual_seed(2)
    pooled = {m: torch.rand(4, 16, generator=g) for m in MODALITIES}
    loss, _ = model.simcl_loss(pooled, torch.ones(4, 5, dtype=torch.bool), mask_missing=False)
    feats = torch.stack([F.normalize(pooled[m], dim=-1) for m in MODALITIES], dim=1)
    s = (feats @ feats.transpose(1, 2)).mean(0)
    eye = torch.eye(5, dtype=torch.bool)
    sp = s * torch.softmax(s.masked_fill(eye, float("-inf")), dim=-1)
    expected = sum((sp[i, j] + sp[j, i]) * pairwise_infonce(pooled[MODALITIES[i]], pooled[MODALITIES[j]], 0.07,
                                                            negatives="cross_modal")
                   for i in range(5) for j in range(i + 1, 5))
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_every_loss_trains_every_parameter_and_the_graph_carries_gradients(model: SCALE,
                                                                           small_world: BuiltinDataset) -> None:
    assert method_config("scale", "base", {}).simcl.stop_gradient is False     # base: SCALE_code's un-detached S'
    assert method_config("scale", "tiny", {}).simcl.stop_gradient is True      # tiny: calibrated (docs/scale.md)
    out = model.pretrain_step(_batch(model, small_world), CTX)
    assert set(out.losses) == {"simcl", "mlm", "mem", "mrm", "mfm", "mam"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    assert float(out.total.detach()) == pytest.approx(float(sum(out.losses.values()).detach()), rel=1e-6)  # weights 1
    out.total.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    feats = {m: torch.rand(3, 8, requires_grad=True) for m in ("text", "image")}
    present = torch.ones(3, 5, dtype=torch.bool)
    assert model.modality_graph(feats, present, code_form=True, stop_gradient=False).requires_grad
    assert not model.modality_graph(feats, present, code_form=True, stop_gradient=True).requires_grad


def test_entity_masking_inside_a_step_masks_a_whole_side_of_a_pair(tokenizer: TextTokenizer,
                                                                   small_world: BuiltinDataset) -> None:
    model = _micro(tokenizer, tasks={"mem": {"probability": 1.0}})
    batch = _batch(model, small_world)
    present = torch.ones(8, 5, dtype=torch.bool)
    inputs = model._impute(batch, ~present)
    masked, targets = model._mask_inputs(inputs, present)
    ids, _, ent, val = inputs["table"]
    chosen = targets["table"] != IGNORE_INDEX
    assert torch.equal(masked["table"][0][chosen], torch.full_like(ids[chosen], tokenizer.mask_id))
    for b in range(8):
        for pair in range(int(ent[b].max()) + 1):
            side = chosen[b][ent[b] == pair]
            is_value = val[b][ent[b] == pair]
            assert side.any()                                          # p = 1: every pair is chosen
            assert torch.equal(side, is_value) or torch.equal(side, ~is_value)   # one whole side, never split


@pytest.mark.parametrize("policy", ["zero_impute", "mask"])
def test_every_modality_missing_in_turn(tokenizer: TextTokenizer, small_world: BuiltinDataset, policy: str) -> None:
    model = _micro(tokenizer, missing=policy)
    batch = _batch(model, small_world)
    task = {"text": "mlm", "image": "mrm", "table": "mem", "video": "mfm", "audio": "mam"}
    for i, m in enumerate(MODALITIES):
        for how_many in (4, 8):                     # half the batch, then all of it
            missing = torch.zeros(8, 5, dtype=torch.bool)
            missing[:how_many, i] = True
            extras = {**batch.extras, "missing": missing}
            torch.manual_seed(0)
            out = model.pretrain_step(PretrainBatch(batch.images, batch.text, batch.index, extras), CTX)
            assert all(torch.isfinite(v) for v in out.losses.values()), (policy, m, how_many)
            out.total.backward()
            model.zero_grad()
            if how_many == 8 and policy == "mask":
                assert float(out.losses[task[m]]) == 0.0     # nothing of a fully absent modality is predicted
            if how_many == 8 and policy == "zero_impute" and m in ("video", "audio"):
                assert float(out.losses[task[m]]) > 0.0      # zero frames are still masked and regressed


def test_zero_imputation_follows_the_m5product_loaders(model: SCALE, small_world: BuiltinDataset,
                                                       tokenizer: TextTokenizer) -> None:
    batch = _batch(model, small_world)
    missing = torch.zeros(8, 5, dtype=torch.bool)
    missing[0] = True
    out = model._impute(batch, missing)
    ids, mask = out["text"]
    assert ids[0, :2].tolist() == [tokenizer.cls_id, tokenizer.sep_id] and int(mask[0].sum()) == 2
    assert torch.equal(ids[1:], batch.text.input_ids[1:])
    t_ids, t_mask, ent, val = out["table"]
    assert int(t_mask[0].sum()) == 2 and (ent[0] == -1).all() and not val[0].any()
    assert out["image"][0].abs().sum() == 0 and torch.equal(out["image"][1:], batch.images[1:])
    for m in ("video", "audio"):
        f: SequenceFeatures = out[m]
        assert f.values[0].abs().sum() == 0 and f.valid[0].all()    # zeros, every position still marked valid
        assert torch.equal(f.values[1:], batch.extras[m].values[1:])


def test_masking_out_a_missing_modality_hides_it_from_the_joint_transformer(model: SCALE) -> None:
    model.eval()
    g = torch.Generator().manual_seed(3)
    encoded = {m: (torch.randn(2, n, 32, generator=g), torch.ones(2, n, dtype=torch.bool))
               for m, n in zip(MODALITIES, (5, 4, 6, 3, 3))}
    present = torch.ones(2, 5, dtype=torch.bool)
    present[0, 3] = False                                            # sample 0 has no video
    changed = dict(encoded)
    changed["video"] = (torch.randn(2, 3, 32, generator=g), encoded["video"][1])   # (a constant shift: LN hides it)
    with torch.no_grad():
        a, b = model.joint_forward(encoded, present, True), model.joint_forward(changed, present, True)
        c = model.joint_forward(changed, present, False)
        base = model.joint_forward(encoded, present, False)
    assert torch.allclose(a["text"][0], b["text"][0], atol=1e-5)       # masked: the video's content is invisible
    assert not torch.allclose(a["text"][1], b["text"][1], atol=1e-3)   # sample 1 has its video: it matters
    assert not torch.allclose(base["text"][0], c["text"][0], atol=1e-3)   # zero-impute policy: it is attended


def test_task_weighting_scales_predictions_or_losses(tokenizer: TextTokenizer) -> None:
    g = torch.Generator().manual_seed(4)
    joint = {"text": torch.randn(2, 4, 32, generator=g), "video": torch.randn(2, 3, 32, generator=g)}
    labels = torch.full((2, 4), IGNORE_INDEX)
    labels[0, 1], labels[1, 2] = 7, 9
    chosen = torch.tensor([[True, False], [True, True]])
    frames = torch.randn(2, 2, MICRO_SCALE["video"]["frame_size"] ** 2 * 3, generator=g)
    targets = {"text": labels, "video": (frames, chosen)}
    w = torch.tensor([[0.5, 1, 1, 0.25, 1], [0.8, 1, 1, 0.6, 1]])
    for mode in ("predictions", "losses", "none"):
        model = _micro(tokenizer, task_weighting=mode)
        out = model._masked_task_losses(joint, targets, w)
        logits = model.mlm_head(joint["text"])
        pred = model.regression_heads["video"](joint["video"][:, 1:])
        ce = [F.cross_entropy((logits[b, p] * (w[b, 0] if mode == "predictions" else 1))[None], labels[b, p][None])
              for b, p in ((0, 1), (1, 2))]
        mse = [((pred[b, t] * (w[b, 3] if mode == "predictions" else 1) - frames[b, t]) ** 2).mean()
               for b, t in ((0, 0), (1, 0), (1, 1))]
        if mode == "losses":
            ce = [ce[0] * w[0, 0], ce[1] * w[1, 0]]
            mse = [mse[0] * w[0, 3], mse[1] * w[1, 3], mse[2] * w[1, 3]]
        assert float(out["mlm"]) == pytest.approx(float(sum(ce) / 2), rel=1e-5), mode
        assert float(out["mfm"]) == pytest.approx(float(sum(mse) / 3), rel=1e-5), mode


def test_modality_ablation_builds_and_trains_only_the_chosen_modalities(tokenizer: TextTokenizer,
                                                                        small_world: BuiltinDataset) -> None:
    two = _micro(tokenizer, modalities=["image", "text"])
    assert two.modalities == ("text", "image") and two.data_fields == {"missing"}
    assert not hasattr(two, "video_encoder") and set(two.poolers) == {"text", "image"}
    out = two.pretrain_step(_batch(two, small_world), CTX)
    assert set(out.losses) == {"simcl", "mlm", "mrm"}
    four = _micro(tokenizer, modalities=["text", "image", "table", "video"])
    assert set(four.pretrain_step(_batch(four, small_world), CTX).losses) == {"simcl", "mlm", "mem", "mrm", "mfm"}
    with pytest.raises(ConfigError, match="must include text and image"):
        _micro(tokenizer, modalities=["text", "table"])


def test_drop_rates_add_a_fixed_missing_draw_in_pretraining_only(tokenizer: TextTokenizer,
                                                                 small_world: BuiltinDataset) -> None:
    corpus = small_world.pretrain_corpus()
    base = corpus.extras["missing"]
    model = _micro(tokenizer, drop_rates={"video": 0.5})
    idx = np.arange(len(corpus))
    train = field_builder("missing", model, corpus, training=True)(idx).numpy()
    assert np.array_equal(train, field_builder("missing", model, corpus, training=True)(idx).numpy())
    assert (train >= base).all()                                            # the corpus' own gaps stay
    assert np.array_equal(np.delete(train, 3, axis=1), np.delete(base, 3, axis=1))
    expected = 1 - (1 - base[:, 3].mean()) * 0.5
    assert train[:, 3].mean() == pytest.approx(expected, abs=0.06)
    assert np.array_equal(field_builder("missing", model, corpus, training=False)(idx).numpy(), base)


def test_frame_descriptors_area_resize_and_scale() -> None:
    frames = np.zeros((1, 1, 4, 4, 3), dtype=np.uint8)
    frames[0, 0, :2, :2] = 255                      # top-left quarter white
    frames[0, 0, 2:, 2:, 0] = 102                   # bottom-right quarter dark red
    d = frame_descriptors(frames, 2).view(1, 1, 3, 2, 2)
    assert d[0, 0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert d[0, 0, :, 0, 1].tolist() == [-1.0, -1.0, -1.0]
    assert d[0, 0, 0, 1, 1].item() == pytest.approx(102 / 127.5 - 1)
    with pytest.raises(ValueError, match="uint8"):
        frame_descriptors(frames.astype(np.float32), 2)


def test_builtin_media_renders_and_caches_once(small_world: BuiltinDataset, tmp_path: Path) -> None:
    corpus = small_world.product_corpus("val")
    media: BuiltinMedia = corpus.extras["media"]
    frames, count = media.video_frames(np.array([0, 1]), 3, 8)
    assert frames.shape == (2, 3, 8, 8, 3) and frames.dtype == np.uint8 and count.tolist() == [3, 3]
    assert media.audio_waves(np.array([0]), 8000, 0.5).shape == (1, 4000)
    own = BuiltinMedia(media.scenes, tmp_path / "derived", "fp")
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.arange(6, dtype=np.float16).reshape(2, 3)

    first, second = own.cached("video", "k", compute), own.cached("video", "k", compute)
    assert len(calls) == 1 and np.array_equal(first, second) and len(list((tmp_path / "derived").glob("*.npy"))) == 1
    assert own.cached("video", "other", compute) is not None and len(calls) == 2


def test_save_load_round_trip_keeps_the_tied_mlm_decoder(model: SCALE, small_world: BuiltinDataset,
                                                         tmp_path: Path) -> None:
    batch = _batch(model, small_world)
    save_pretrained(model, tmp_path / "m", "scale", "tiny")
    loaded, _ = load_pretrained(tmp_path / "m")
    model.eval()
    loaded.eval()
    with torch.no_grad():
        a, b = model.encode_product(batch), loaded.encode_product(batch)
    assert set(a) == {"text", "image", "table", "video", "audio", "image+text", "joint"}
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert loaded.mlm_head._embeddings[0].weight is loaded.text.model.embeddings.word_embeddings.weight


def test_product_retrieval_scores_encode_product_features_with_the_toolkit_rule(
        model: SCALE, small_world: BuiltinDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlpbench.benchmarks.evaluation.products import ProductEvalProtocol, evaluate_products

    corpus = small_world.product_corpus("val")
    labels = corpus.extras["category"]
    classes = sorted(set(labels))
    onehot = torch.eye(len(classes))[[classes.index(c) for c in labels]]
    seen = []

    def oracle(batch: PretrainBatch) -> dict[str, torch.Tensor]:
        seen.append(set(batch.extras))
        idx = batch.index
        return {"oracle": onehot[idx], "constant": torch.zeros(len(idx), 2)}

    monkeypatch.setattr(model, "encode_product", oracle)
    out = evaluate_products(model, corpus, ProductEvalProtocol(batch_size=16), torch.device("cpu"), "fp32")
    assert seen[0] == {"table", "video", "audio", "missing"} and out.feature_types == ["oracle", "constant"]
    c = np.array([labels.count(lab) for lab in labels])
    # A perfect ranking under the toolkit's rule: the query is dropped from its top 10 but counted in |G|, so a
    # category of c <= 9 items scores (c - 1)/c at K = 10, one of c >= 10 scores 1, a lone item 0; AP is 1
    # whenever the query has a positive.
    assert out.metrics["oracle/mAP@1"] == pytest.approx(100 * np.mean(c >= 2))
    assert out.metrics["oracle/mAP@10"] == pytest.approx(100 * np.mean(c >= 2))
    p10 = np.where(c >= 10, 1.0, np.where(c >= 2, (c - 1) / c, 0.0))
    assert out.metrics["oracle/Prec@10"] == pytest.approx(100 * p10.mean())
    assert 0 < (c == 1).sum() and (c >= 2).sum() > 0           # the split exercises both branches
    # All ties: the evaluator keeps the lowest gallery indices, so each query's first result is item 0 (1 for 0).
    first = [1 if q == 0 else 0 for q in range(len(labels))]
    assert out.metrics["constant/mAP@1"] == pytest.approx(100 * np.mean([labels[f] == labels[q]
                                                                         for q, f in enumerate(first)]))


def test_a_scale_job_pretrains_and_reports_product_retrieval_per_feature_type(
        small_world: BuiltinDataset, cache_root: Path, tmp_path: Path) -> None:
    from vlpbench.benchmarks.job import Job
    from vlpbench.benchmarks.pipeline import run_job
    from vlpbench.benchmarks.suite import Suite
    from vlpbench.reports.store import read_evaluation, read_pretrain

    suite = Suite(name="scale-micro", methods=["scale"], sizes=["tiny"],
                  dataset={"options": small_world.manifest["config"]},
                  method_overrides={"scale": MICRO_SCALE}, recipe_overrides={"scale": {"init": "scratch"}},
                  train={"tiny": {"steps": 3, "batch_size": 16, "log_every": 1}}, retrieval={"split": "val"},
                  products={"split": "val"}, finetune={"budget": {"tiny": {"steps": 2, "batch_size": 8}}})
    out = run_job(Job(suite, "scale", "tiny", 0), tmp_path, progress=False, cache_root=cache_root, log=lambda m: None)
    pre = read_pretrain(out.pretrain)
    assert pre.summary["steps"] == 3 and "loss/simcl" in pre.summary["final"]
    assert set(out.results) == {"zeroshot_retrieval", "finetuned_retrieval", "video_retrieval", "product_retrieval",
                                "latency"}
    ev = read_evaluation(out.results["product_retrieval"])
    assert ev.protocol["feature_types"] == ["text", "image", "table", "video", "audio", "image+text", "joint"]
    assert ev.protocol["cutoff"] == "toolkit" and ev.protocol["ks"] == [1, 5, 10, 50, 100]
    assert ev.protocol["n_items"] == 60 and ev.protocol["relevance"] == "same category label"
    assert all(0.0 <= v <= 100.0 for v in ev.metrics.values()) and len(ev.metrics) == 7 * 10
    # Media descriptors were computed once per split and kept beside it for the next job.
    assert list((small_world.root / "derived" / "pretrain").glob("video-*.npy"))


def test_graph_scaled_logits_reward_a_smaller_weight_until_the_views_align() -> None:
    """Why SCALE_code's un-detached graph can collapse (docs/scale.md): when a pair's features are not aligned yet,
    the loss falls as S'_mn -> 0 (d loss / d w > 0), so gradient descent can shrink the weight instead of aligning
    the features; once aligned, a larger weight (a sharper softmax) lowers the loss."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(64, 16, generator=g)
    for b, sign in ((torch.randn(64, 16, generator=g), 1.0), (a + 0.1 * torch.randn(64, 16, generator=g), -1.0)):
        w = torch.tensor(0.3, requires_grad=True)
        pairwise_infonce(a, b, 0.07, row_scale=w.expand(64)).backward()
        assert sign * float(w.grad) > 0
