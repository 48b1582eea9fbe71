"""ERNIE-ViL 2.0: the multi-view loss against direct computations, view switches, global negatives over gloo."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.data.types import PairCorpus
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.methods import (ConfigError, PretrainBatch, StepContext, TextTokenizer, TokenBatch, create_method, load_pretrained,
                     save_pretrained)
from vlpbench.methods.ernie_vil2 import PAIR_NAMES, ERNIEViL2
from vlpbench.methods.losses import clip_loss
from vlpbench.methods.text_views import caption_words

MICRO_ERNIE: dict[str, Any] = {
    "vision": {"width": 32, "depth": 1, "heads": 2, "patch_size": 16},
    "text": {"width": 32, "depth": 1, "heads": 2, "dropout": 0.0},
}
CTX = StepContext(step=0, total_steps=10, steps_per_epoch=10, epoch=0)
WEIGHTS = {"image_caption": 1.0, "image_tags": 0.5, "image_image": 2.0, "caption_tags": 0.25}


def _micro(tokenizer: TextTokenizer, **overrides: Any) -> ERNIEViL2:
    torch.manual_seed(0)
    return create_method("ernie_vil2", "tiny", tokenizer=tokenizer,  # type: ignore[return-value]
                         overrides={**MICRO_ERNIE, **overrides})


def _weighted(**switches: bool) -> dict[str, Any]:
    return {"pairs": {n: {"weight": WEIGHTS[n], "enabled": switches.get(n, True)} for n in PAIR_NAMES}}


@pytest.fixture
def model(tokenizer: TextTokenizer) -> ERNIEViL2:
    return _micro(tokenizer, **_weighted())


@pytest.fixture
def batch(model: ERNIEViL2, small_world: BuiltinDataset) -> PretrainBatch:
    return PretrainBatches(small_world.pretrain_corpus(), model, 6, seed=0).batch(0, 0)


def _words(tok: TextTokenizer, ids: torch.Tensor) -> str:
    return tok.decode([i for i in ids.tolist() if i not in tok.special_ids])


def _direct(a: torch.Tensor, b: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """½[CE(s·A·Bᵀ, diag) + CE(s·B·Aᵀ, diag)], written out row by row."""
    n = a.shape[0]
    rows_ab = [-(s * a[i] @ b[i] - torch.logsumexp(s * a[i] @ b.t(), 0)) for i in range(n)]
    rows_ba = [-(s * b[i] @ a[i] - torch.logsumexp(s * b[i] @ a.t(), 0)) for i in range(n)]
    return 0.5 * (torch.stack(rows_ab).mean() + torch.stack(rows_ba).mean())


def test_defaults_follow_the_release(tokenizer: TextTokenizer) -> None:
    m = create_method("ernie_vil2", "base", tokenizer=tokenizer, overrides={
        "vision": {"depth": 1}, "text": {"depth": 1}})
    assert isinstance(m, ERNIEViL2)
    assert float(m.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07)) == pytest.approx(2.65926, abs=1e-5)
    assert m.image_proj is None and m.text_proj is None and m.text_pooler is not None   # 768-d, no projection
    assert m.config.vision.activation == "quick_gelu" and m.config.vision.layer_norm_eps == 1e-6
    assert m.text_max_length == 48 and m.config.preprocess.resolution == 224
    assert m.data_fields == {"image_view2", "tags"}


def test_the_built_in_batch_carries_both_image_views_and_the_tag_sequence(
        model: ERNIEViL2, batch: PretrainBatch, small_world: BuiltinDataset) -> None:
    corpus = small_world.pretrain_corpus()
    assert batch.extras["image_view2"].shape == batch.images.shape
    assert not torch.allclose(batch.extras["image_view2"], batch.images)     # independently augmented
    tags = batch.extras["tags"]
    first = int(batch.index[0])
    assert _words(model.tokenizer, tags.input_ids[0]) == corpus.extras["tags"][first].lower()


def test_multi_view_loss_is_the_weighted_sum_of_the_single_pair_losses_computed_directly(
        model: ERNIEViL2, batch: PretrainBatch) -> None:
    out = model.pretrain_step(batch, CTX)
    with torch.no_grad():
        i1 = F.normalize(model.visual(batch.images).pooled, dim=-1)
        i2 = F.normalize(model.visual(batch.extras["image_view2"]).pooled, dim=-1)
        assert model.text_pooler is not None
        cap = F.normalize(model.text_pooler(model.text(batch.text.input_ids, batch.text.attention_mask).pooled), dim=-1)
        tags = batch.extras["tags"]
        tag = F.normalize(model.text_pooler(model.text(tags.input_ids, tags.attention_mask).pooled), dim=-1)
        s = model.logit_scale.exp()
        direct = {"image_caption": _direct(i1, cap, s), "image_tags": _direct(i1, tag, s),
                  "image_image": _direct(i1, i2, s), "caption_tags": _direct(cap, tag, s)}
    assert set(out.losses) == set(PAIR_NAMES)
    for name, value in direct.items():
        assert float(out.losses[name].detach()) == pytest.approx(float(value.detach()), rel=1e-5), name
        assert float(value.detach()) > 0.1                    # not a trivially-zero term
    expected = sum(WEIGHTS[n] * float(v) for n, v in direct.items())
    assert float(out.total.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("off", PAIR_NAMES)
def test_switching_a_view_pair_off_removes_exactly_its_term(tokenizer: TextTokenizer, model: ERNIEViL2,
                                                            batch: PretrainBatch, off: str) -> None:
    full = model.pretrain_step(batch, CTX)
    reduced_model = _micro(tokenizer, **_weighted(**{off: False}))
    reduced_model.load_state_dict(model.state_dict())
    reduced = reduced_model.pretrain_step(batch, CTX)
    assert set(reduced.losses) == set(PAIR_NAMES) - {off}
    for name, value in reduced.losses.items():
        assert float(value.detach()) == pytest.approx(float(full.losses[name].detach()), rel=1e-6)
    assert float(full.total.detach()) - float(reduced.total.detach()) == pytest.approx(WEIGHTS[off] * float(full.losses[off].detach()), rel=1e-5)


def test_the_tag_view_off_needs_no_tags_and_the_image_pair_off_needs_no_second_view(tokenizer: TextTokenizer) -> None:
    no_tags = _micro(tokenizer, pairs={"image_tags": {"enabled": False}, "caption_tags": {"enabled": False}})
    assert no_tags.data_fields == {"image_view2"}
    cross_only = _micro(tokenizer, pairs={"image_image": {"enabled": False}})
    assert cross_only.data_fields == {"tags"}
    both_views = _micro(tokenizer, pairs={"image_image": {"enabled": False}}, cross_modal_image_view="both")
    assert both_views.data_fields == {"tags", "image_view2"}
    with pytest.raises(ConfigError, match="enable at least one"):
        _micro(tokenizer, pairs={n: {"enabled": False} for n in PAIR_NAMES})
    with pytest.raises(ConfigError, match="widths must match.*embed_dim"):
        _micro(tokenizer, vision={"width": 64, "heads": 2})


def test_cross_modal_terms_over_both_image_views_are_the_mean_of_the_two(tokenizer: TextTokenizer,
                                                                          small_world: BuiltinDataset) -> None:
    m = _micro(tokenizer, cross_modal_image_view="both")
    b = PretrainBatches(small_world.pretrain_corpus(), m, 6, seed=0).batch(0, 0)
    views = m.view_embeddings(b)
    losses, _ = m.pair_losses(views, m.logit_scale.exp())
    s = m.logit_scale.exp()
    expected = 0.5 * (_direct(views["image1"], views["caption"], s) + _direct(views["image2"], views["caption"], s))
    assert float(losses["image_caption"].detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_every_tower_the_loss_uses_gets_a_gradient_and_the_scale_is_learned_and_clamped(
        model: ERNIEViL2, batch: PretrainBatch) -> None:
    model.pretrain_step(batch, CTX).total.backward()
    for name in ("visual", "text", "text_pooler", "logit_scale"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.requires_grad]
        assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads), name
    with torch.no_grad():
        model.logit_scale.fill_(9.0)
    model.after_optimizer_step(CTX)
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(100.0))


def test_the_tags_fallbacks(tokenizer: TextTokenizer, small_world: BuiltinDataset) -> None:
    assert caption_words("A small blue star above a red ring, in the bottom left.") == "small blue star red ring"
    assert caption_words("picture of blue star") == "blue star"
    corpus = small_world.pretrain_corpus()
    derived = _micro(tokenizer, tags_source="caption_words")
    b = PretrainBatches(corpus, derived, 4, seed=0).batch(0, 0)
    first = int(b.index[0])
    assert _words(derived.tokenizer, b.extras["caption_words"].input_ids[0]) == \
        caption_words(corpus.texts[first])
    other = _micro(tokenizer, tags_source="other_caption")
    b = PretrainBatches(corpus, other, 4, seed=0).batch(0, 0)
    record = small_world.records("pretrain")[first]
    assert _words(other.tokenizer, b.extras["other_caption"].input_ids[0]) == \
        _words(tokenizer, tokenizer([record["captions"][0]], max_length=30).input_ids[0])
    bare = PairCorpus(ref=corpus.ref, images=corpus.images, texts=corpus.texts, extras={})
    with pytest.raises(ValueError, match="needs 'tags'.*tags_source: other_caption.*caption_words"):
        PretrainBatches(bare, _micro(tokenizer), 4, seed=0)
    PretrainBatches(bare, derived, 4, seed=0)   # the derived view needs nothing from the corpus


def test_save_and_load_give_the_same_embeddings(model: ERNIEViL2, batch: PretrainBatch, tmp_path: Path) -> None:
    model.eval()
    save_pretrained(model, tmp_path / "m", "ernie_vil2", "tiny")
    loaded, meta = load_pretrained(tmp_path / "m")
    assert meta["method"] == "ernie_vil2"
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(batch.images), model.encode_image(batch.images))
        assert torch.equal(loaded.encode_text(batch.text), model.encode_text(batch.text))


# ---- the global batch across processes ------------------------------------------------------------------
def _batch_to_tensors(b: PretrainBatch) -> dict[str, torch.Tensor]:
    """A plain tensor dict (loadable with weights_only=True) of a batch with image_view2 and tags."""
    return {"images": b.images, "ids": b.text.input_ids, "mask": b.text.attention_mask, "index": b.index,
            "view2": b.extras["image_view2"], "tag_ids": b.extras["tags"].input_ids,
            "tag_mask": b.extras["tags"].attention_mask}


def _batch_from_tensors(d: dict[str, torch.Tensor]) -> PretrainBatch:
    return PretrainBatch(d["images"], TokenBatch(d["ids"], d["mask"]), d["index"],
                         {"image_view2": d["view2"], "tags": TokenBatch(d["tag_ids"], d["tag_mask"])})


def _worker(rank: int, world: int, workdir: str) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{workdir}/store", rank=rank, world_size=world)
    try:
        tok = TextTokenizer.from_dir(Path(workdir) / "tokenizer")
        model = _micro(tok, **_weighted())
        model.load_state_dict(torch.load(Path(workdir) / "state.pt", weights_only=True))
        full = _batch_from_tensors(torch.load(Path(workdir) / "batch.pt", weights_only=True))
        n = full.images.shape[0] // world
        rows = torch.arange(rank * n, (rank + 1) * n)
        local = PretrainBatch(full.images[rows], full.text[rows], full.index[rows],
                              {k: v[rows] for k, v in full.extras.items()})
        out = model.pretrain_step(local, CTX)
        out.total.backward()
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        for g in grads.values():               # what DDP does: the mean of the processes' gradients
            dist.all_reduce(g)
            g /= world
        # The release's head: local negatives only (gathered features overwritten by the local ones).
        with torch.no_grad():
            views = model.view_embeddings(local)
            s = model.logit_scale.exp()
            local_only = sum(WEIGHTS[n] * _direct(*pair, s) for n, pair in (
                ("image_caption", (views["image1"], views["caption"])), ("image_tags", (views["image1"], views["tags"])),
                ("image_image", (views["image1"], views["image2"])), ("caption_tags", (views["caption"], views["tags"]))))
        release = _micro(tok, **_weighted(), negatives="local")      # the option that reproduces the release
        release.load_state_dict(model.state_dict())
        with torch.no_grad():
            release_total = float(release.pretrain_step(local, CTX).total.detach())
        torch.save({"total": float(out.total.detach()), "local_only": float(local_only), "release": release_total,
                    "grads": grads},
                   Path(workdir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_a_two_process_gloo_run_uses_the_negatives_of_both_processes(model: ERNIEViL2, tokenizer: TextTokenizer,
                                                                      small_world: BuiltinDataset,
                                                                      tmp_path: Path) -> None:
    full = PretrainBatches(small_world.pretrain_corpus(), model, 8, seed=0).batch(0, 0)
    tokenizer.save(tmp_path / "tokenizer")
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.save(_batch_to_tensors(full), tmp_path / "batch.pt")
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    reference = model.pretrain_step(full, CTX)          # one process holding the whole global batch of 8
    reference.total.backward()
    # Each process scores its 4 rows against all 8: the mean of the two losses is the global-batch loss...
    assert 0.5 * (ranks[0]["total"] + ranks[1]["total"]) == pytest.approx(float(reference.total.detach()), rel=1e-5)
    # ...which local negatives alone (the release's head) do not give: 3 negatives per row instead of 7.
    assert 0.5 * (ranks[0]["local_only"] + ranks[1]["local_only"]) < float(reference.total.detach()) - 0.3
    for r in ranks:
        assert r["release"] == pytest.approx(r["local_only"], rel=1e-5)      # negatives: local = the release's head
    # Gradients flow through the gathered features: DDP's mean gradient equals the global-batch gradient.
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        for r in ranks:
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_clip_loss_on_one_process_is_unchanged_by_the_gather() -> None:
    a = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    b = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    s = torch.tensor(7.0, dtype=torch.float64)
    loss, logits = clip_loss(a, b, s)
    assert logits.shape == (5, 5)
    assert float(loss) == pytest.approx(float(_direct(a, b, s)), rel=1e-12)
