"""The training loop: schedule, weight-decay groups, deterministic batches, seeding and exact resume."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.training.batches import PretrainBatches, sample_seeds
from vlpbench.benchmarks.training.checkpoint import CheckpointError, list_checkpoints
from vlpbench.benchmarks.training.loop import TrainConfig, Trainer, param_groups
from vlpbench.benchmarks.training.schedule import warmup_cosine, warmup_steps_for
from vlpbench.methods import TextTokenizer, create_method, train_recipe
from tests.conftest import MICRO_CLIP


def test_warmup_cosine_closed_form() -> None:
    total, warm = 10, 2
    assert warmup_cosine(0, total, warm) == pytest.approx(0.5)
    assert warmup_cosine(1, total, warm) == pytest.approx(1.0)
    assert warmup_cosine(2, total, warm) == pytest.approx(1.0)                        # cosine starts at its peak
    assert warmup_cosine(6, total, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert warmup_cosine(10, total, warm) == pytest.approx(0.0)
    assert warmup_cosine(10, total, warm, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_steps_for(1000, 0.1, None) == 100 and warmup_steps_for(1000, 0.1, 2000) == 1000


def test_weight_decay_spares_biases_gains_and_logit_scale(tokenizer: TextTokenizer) -> None:
    model = create_method("clip", "tiny", tokenizer=tokenizer, overrides=MICRO_CLIP)
    decay, no_decay = param_groups(model, 0.2)
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert any(p is model.logit_scale for p in no_decay["params"])
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_batches_are_a_pure_function_of_seed_epoch_step(small_world: BuiltinDataset, micro_clip) -> None:  # type: ignore[no-untyped-def]
    corpus = small_world.pretrain_corpus()
    a = PretrainBatches(corpus, micro_clip, batch_size=32, seed=5)
    b = PretrainBatches(corpus, micro_clip, batch_size=32, seed=5)
    b.batch(3, 2)  # visiting other positions first changes nothing
    for epoch, step in [(0, 0), (0, 7), (2, 3)]:
        x, y = a.batch(epoch, step), b.batch(epoch, step)
        assert torch.equal(x.images, y.images) and torch.equal(x.text.input_ids, y.text.input_ids)
    assert not np.array_equal(a.indices(0, 0), a.indices(1, 0))          # reshuffled each epoch
    epoch0 = np.concatenate([a.indices(0, s) for s in range(a.steps_per_epoch)])
    assert len(np.unique(epoch0)) == len(epoch0) == a.steps_per_epoch * 32  # no repeats inside an epoch
    idx = np.arange(4)
    assert len(set(sample_seeds(5, 0, idx) + sample_seeds(5, 1, idx) + sample_seeds(5, 0, idx, stream=1))) == 12


def _train(world: BuiltinDataset, tokenizer: TextTokenizer, run_dir: Path, steps: int, resume: str | None = None,
           init_seed: int = 0, **kw) -> tuple[torch.nn.Module, Trainer]:  # type: ignore[no-untyped-def]
    torch.manual_seed(init_seed)
    model = create_method("clip", "tiny", tokenizer=tokenizer, overrides=MICRO_CLIP)
    cfg = TrainConfig(steps=steps, batch_size=32, seed=0, log_every=2,
                      recipe=train_recipe("clip", "tiny", {"warmup_fraction": 0.25}), **kw)
    data = PretrainBatches(world.pretrain_corpus(), model, cfg.batch_size, cfg.seed)
    trainer = Trainer(model, data, cfg, run_dir, progress=False)
    trainer.fit(resume=resume)
    return model, trainer


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_twice_gives_identical_weights(small_world: BuiltinDataset, tokenizer: TextTokenizer,
                                                 tmp_path: Path) -> None:
    a, _ = _train(small_world, tokenizer, tmp_path / "a", steps=6)
    b, _ = _train(small_world, tokenizer, tmp_path / "b", steps=6)
    assert _same_weights(a, b)
    assert (tmp_path / "a" / "history.jsonl").read_text() != ""


def test_resume_from_a_mid_run_checkpoint_is_bit_identical(small_world: BuiltinDataset, tokenizer: TextTokenizer,
                                                           tmp_path: Path) -> None:
    # 20 steps span an epoch boundary (600 items / 32 = 18 steps per epoch).
    straight, trainer = _train(small_world, tokenizer, tmp_path / "straight", steps=20, checkpoint_every=7,
                               keep_checkpoints=5)
    assert [s for s, _ in list_checkpoints(trainer.ckpt_dir)] == [7, 14, 20]
    # A second run dir holding only the step-7 checkpoint, resumed by a model with another init.
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    (trainer.ckpt_dir / "step_00000007.pt").rename(resumed_dir / "checkpoints" / "step_00000007.pt")
    history = [json.loads(x) for x in (tmp_path / "straight" / "history.jsonl").read_text().splitlines()]
    (resumed_dir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    resumed, _ = _train(small_world, tokenizer, resumed_dir, steps=20, resume="latest", init_seed=123,
                        checkpoint_every=7, keep_checkpoints=5)
    assert _same_weights(straight, resumed)
    steps = [json.loads(x)["step"] for x in (resumed_dir / "history.jsonl").read_text().splitlines()]
    assert steps == list(range(2, 21, 2))  # history truncated at the checkpoint, then continued


def test_resume_with_another_config_is_refused(small_world: BuiltinDataset, tokenizer: TextTokenizer,
                                               tmp_path: Path) -> None:
    _train(small_world, tokenizer, tmp_path, steps=4)
    with pytest.raises(CheckpointError, match="another configuration"):
        _train(small_world, tokenizer, tmp_path, steps=8, resume="latest")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        _train(small_world, tokenizer, tmp_path, steps=4, resume=str(tmp_path / "missing.pt"))


def test_lr_scale_groups_by_longest_prefix_and_rejects_unknown_prefixes(tokenizer: TextTokenizer) -> None:
    from vlpbench.methods.config import ConfigError
    model = create_method("clip", "tiny", tokenizer=tokenizer, overrides=MICRO_CLIP)
    named = dict(model.named_parameters())
    sub = ".".join(next(n for n in named if n.startswith("text.")).split(".")[:3])  # a longer prefix inside 'text'
    groups = param_groups(model, 0.1, lr=1e-3, lr_scale={"text": 0.1, sub: 0.5, "logit_scale": 0.01})
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert by_id[id(model.logit_scale)]["lr"] == pytest.approx(1e-5)
    assert by_id[id(model.logit_scale)]["weight_decay"] == 0.0
    inner = [n for n in named if n == sub or n.startswith(sub + ".")]
    rest = [n for n in named if n.startswith("text.") and n not in inner]
    assert inner and rest
    assert all(by_id[id(named[n])]["lr"] == pytest.approx(5e-4) for n in inner)
    assert all(by_id[id(named[n])]["lr"] == pytest.approx(1e-4) for n in rest)
    assert all(by_id[id(p)]["lr"] == pytest.approx(1e-3) for n, p in named.items() if n.startswith("visual."))
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    with pytest.raises(ConfigError, match="'txt'.*match no trainable parameter"):
        param_groups(model, 0.1, lr=1e-3, lr_scale={"txt": 0.1})
    with pytest.raises(ConfigError, match="'visual'.*shadowed"):                  # a prefix with no effect
        shadowing = {n: 0.5 for n in named if n.startswith("visual.")}
        param_groups(model, 0.1, lr=1e-3, lr_scale={"visual": 0.1, **shadowing})


def test_sample_flags_are_scored_against_the_known_noisy_pairs(small_world: BuiltinDataset, tokenizer: TextTokenizer,
                                                                tmp_path: Path) -> None:
    """A method flagging every even corpus index: the summary's counts equal a direct count over the batches."""
    torch.manual_seed(0)
    model = create_method("clip", "tiny", tokenizer=tokenizer, overrides=MICRO_CLIP)
    step = model.pretrain_step

    def flagging_step(batch, ctx):  # type: ignore[no-untyped-def]
        out = step(batch, ctx)
        if ctx.step >= 2:   # "warm-up": no flags in the first two steps
            out.sample_flags = {"even": batch.index % 2 == 0}
        return out

    model.pretrain_step = flagging_step  # type: ignore[method-assign]
    cfg = TrainConfig(steps=6, batch_size=32, seed=0, log_every=3, recipe=train_recipe("clip", "tiny"))
    data = PretrainBatches(small_world.pretrain_corpus(), model, cfg.batch_size, cfg.seed)
    summary = Trainer(model, data, cfg, tmp_path, progress=False).fit()
    noisy = np.asarray(small_world.pretrain_corpus().extras["noisy"])
    idx = np.concatenate([data.indices(0, s) for s in range(2, 6)])
    flagged, truth = idx % 2 == 0, noisy[idx]
    f = summary.filters["even"]
    assert f["steps"] == 4 and f["samples"] == 128 and f["flagged"] == int(flagged.sum())
    assert f["noisy"] == int(truth.sum()) > 0
    assert f["precision"] == pytest.approx((flagged & truth).sum() / flagged.sum())
    assert f["recall"] == pytest.approx((flagged & truth).sum() / truth.sum())


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on CPU needs a C++ compiler (apt-get install g++)")
def test_compiled_towers_train_like_eager_and_leave_the_model_eager(small_world: BuiltinDataset,
                                                                    tokenizer: TextTokenizer, tmp_path: Path) -> None:
    """Suite.compile: the same 3 steps with torch.compile'd towers give eager's losses and weights up to float
    rounding (fused kernels round differently); the fingerprint says compiled (off keeps the old fingerprint);
    after fit the towers run eagerly again (evaluation and export never see a compiled module)."""
    from vlpbench.methods.towers import TextTower, VisionTower, compiled_towers

    eager, _ = _train(small_world, tokenizer, tmp_path / "eager", steps=3)
    compiled, trainer = _train(small_world, tokenizer, tmp_path / "compiled", steps=3, compile=True)
    hist = {n: [json.loads(x) for x in (tmp_path / n / "history.jsonl").read_text().splitlines()]
            for n in ("eager", "compiled")}
    for e, c in zip(hist["eager"], hist["compiled"]):
        assert math.isclose(e["loss/total"], c["loss/total"], rel_tol=1e-4)
    se, sc = eager.state_dict(), compiled.state_dict()
    assert se.keys() == sc.keys() and all(torch.allclose(se[k], sc[k], atol=1e-4) for k in se)
    towers = [m for m in compiled.modules() if isinstance(m, (VisionTower, TextTower))]
    assert len(towers) == 2 and all("forward" not in vars(m) for m in towers)
    cfg = trainer.config
    off = cfg.model_copy(update={"compile": False})
    legacy = {k: v for k, v in off.model_dump(mode="json").items() if k != "compile"}
    assert off.fingerprint() == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
    assert cfg.fingerprint() != off.fingerprint()
    eager_towers = [m for m in eager.modules() if isinstance(m, (VisionTower, TextTower))]
    with compiled_towers(eager) as n:       # what fit runs inside with compile on: each tower's forward compiled
        assert n == 2 and all(vars(m)["forward"] is not type(m).forward for m in eager_towers)
    assert all("forward" not in vars(m) for m in eager_towers)


def test_batch_workers_change_nothing_but_where_batches_are_made(small_world: BuiltinDataset,
                                                                 tokenizer: TextTokenizer, tmp_path: Path) -> None:
    """The same weights (bit for bit) whether batches are built in the training process or by 2 workers ahead of
    it, across an epoch boundary and after a resume; pinned batches hold the same values."""
    inline, _ = _train(small_world, tokenizer, tmp_path / "inline", steps=20)
    workers, trainer = _train(small_world, tokenizer, tmp_path / "workers", steps=20, data_workers=2,
                              checkpoint_every=7, keep_checkpoints=5)
    assert _same_weights(inline, workers)
    for step, path in list_checkpoints(trainer.ckpt_dir):
        if step != 7:
            path.unlink()
    resumed, _ = _train(small_world, tokenizer, tmp_path / "workers", steps=20, resume="latest", init_seed=9,
                        data_workers=2, checkpoint_every=7, keep_checkpoints=5)
    assert _same_weights(inline, resumed)
    cfg_a = TrainConfig(steps=1, batch_size=8, recipe=train_recipe("clip", "tiny"))
    assert cfg_a.fingerprint() == cfg_a.model_copy(update={"data_workers": 4}).fingerprint()


def test_prefetched_keeps_the_order_with_workers() -> None:
    from vlpbench.benchmarks.prefetch import prefetched
    from vlpbench.methods.tokenizer import TokenBatch

    def make(i: int) -> TokenBatch:
        return TokenBatch(torch.full((2, 3), i), torch.ones(2, 3, dtype=torch.long))

    inline = [b.input_ids[0, 0].item() for b in prefetched(make, list(range(7)))]
    ahead = [b.input_ids[0, 0].item() for b in prefetched(make, list(range(7)), workers=2)]
    assert inline == ahead == list(range(7))
