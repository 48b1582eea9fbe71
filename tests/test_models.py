"""Every registered method at every preset that fits a CPU, and every method variant the shipped suites run
(benchmarks/suites/*.yaml `variants`): build, one pretraining step with gradients, save and load, the embeddings,
one evaluation — in the spirit of timm's tests/test_models.py. A method added to the registry (a module of methods/
or a plugin) gets these checks without a line here.

Which presets fit is decided by the parameter count of the config, built on the meta device (no memory, no init):
the tiny presets have 1.3-3.9 M parameters and take a few seconds here; the base presets (ViT-B/16 sized, 124-404 M)
are skipped with their count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.benchmarks.data.types import ArrayImages, RetrievalSplit
from vlpbench.benchmarks.evaluation.retrieval import RetrievalProtocol, evaluate_image_text
from vlpbench.benchmarks.training.batches import PretrainBatches
from vlpbench.methods import (PretrainBatch, StepContext, TextTokenizer, VLPModel, create_method, list_methods, list_presets,
                     load_pretrained, save_pretrained)
from vlpbench.methods.config import deep_merge
from vlpbench.methods.registry import param_count

SUITES = Path(__file__).resolve().parent.parent / "benchmarks" / "suites"
MAX_CPU_PARAMS = 20_000_000
BATCH = 4
CTX = StepContext(step=0, total_steps=10, steps_per_epoch=10, epoch=0)


def _shipped_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """variant name -> (method, method overrides: the suite's for the method, then the variant's)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted(SUITES.glob("*.yaml")):
        suite = yaml.safe_load(path.read_text()) or {}
        for name, v in (suite.get("variants") or {}).items():
            base = (suite.get("method_overrides") or {}).get(v["method"]) or {}
            out[name] = (v["method"], deep_merge(base, v.get("method_overrides") or {}))
    return out


def _cases() -> list[Any]:
    cases = [pytest.param(m, p, {}, id=f"{m}-{p}") for m in list_methods() for p in list_presets(m)]
    for name, (method, overrides) in _shipped_variants().items():
        if method in list_methods():
            cases += [pytest.param(method, p, overrides, id=f"{name}-{p}") for p in list_presets(method)]
    return cases


def _fits_cpu(method: str, preset: str, overrides: dict[str, Any], tokenizer: TextTokenizer) -> None:
    with torch.device("meta"):
        n = param_count(create_method(method, preset, tokenizer=tokenizer, overrides=overrides))
    if n > MAX_CPU_PARAMS:
        pytest.skip(f"{method}/{preset}: {n / 1e6:.1f} M parameters, above the CPU test bound of "
                    f"{MAX_CPU_PARAMS / 1e6:.0f} M")


def _small_split(world: BuiltinDataset, n_images: int = 6) -> RetrievalSplit:
    """The first images of the built-in test split with their captions."""
    full = world.retrieval_split("test")
    keep = np.flatnonzero(full.txt2img < n_images)
    return RetrievalSplit(ref=full.ref, images=ArrayImages(np.ascontiguousarray(full.images.get(np.arange(n_images)))),
                          texts=[full.texts[i] for i in keep], txt2img=full.txt2img[keep])


def _embeddings(model: VLPModel, world: BuiltinDataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = model.preprocess.eval(world.images("test").get(np.arange(3)))
    text = model.tokenize(["a red circle above a blue square", "two small green triangles", "a large shape"])
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(text)


def _encoder_parameters(model: VLPModel, batch: PretrainBatch) -> set[str]:
    """Names of the trainable parameters encode_image and encode_text use (what retrieval ranks with)."""
    model.eval()
    img, txt = model.encode_image(batch.images[:2]), model.encode_text(batch.text[:2])
    (img.sum() + txt.sum()).backward()
    names = {n for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    assert names, "encode_image / encode_text use no trainable parameter"
    return names


@pytest.mark.parametrize(("method", "preset", "overrides"), _cases())
def test_method(method: str, preset: str, overrides: dict[str, Any], tokenizer: TextTokenizer,
                small_world: BuiltinDataset, tmp_path: Path) -> None:
    _fits_cpu(method, preset, overrides, tokenizer)
    torch.manual_seed(0)
    model = create_method(method, preset, tokenizer=tokenizer, overrides=overrides)

    # one pretraining step through the harness' batches (every extra input the model declares): a finite loss
    # whose gradients reach every parameter of the retrieval encoders
    batch = PretrainBatches(small_world.pretrain_corpus(), model, BATCH, seed=0).batch(0, 0)
    encoders = _encoder_parameters(model, batch)
    model.train()
    out = model.pretrain_step(batch, CTX)
    assert out.total.ndim == 0 and torch.isfinite(out.total), out.losses
    assert out.losses and all(torch.isfinite(v) for v in out.losses.values())
    out.total.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    missing = sorted(encoders - set(grads))
    assert not missing, f"encoder parameters the pretraining loss does not reach: {missing[:10]}"
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(bool(grads[n].abs().sum() > 0) for n in encoders) > len(encoders) // 2
    model.zero_grad(set_to_none=True)

    # save and load: the same weights, the same embeddings
    model.eval()
    save_pretrained(model, tmp_path / "model", method, preset)
    loaded, meta = load_pretrained(tmp_path / "model")
    assert type(loaded) is type(model) and meta["method"] == method and meta["size"] == preset
    saved, back = model.state_dict(), loaded.state_dict()
    assert list(back) == list(saved)
    assert all(torch.equal(back[k], saved[k]) for k in saved)
    img, txt = _embeddings(model, small_world)
    img2, txt2 = _embeddings(loaded, small_world)
    torch.testing.assert_close(img2, img, rtol=0, atol=0)
    torch.testing.assert_close(txt2, txt, rtol=0, atol=0)

    # embeddings: one space, unit length
    assert img.shape == (3, img.shape[1]) and txt.shape == (3, img.shape[1])
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3), rtol=0, atol=1e-5)
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3), rtol=0, atol=1e-5)

    # one evaluation: zero-shot image-text retrieval on a few items
    split = _small_split(small_world)
    result = evaluate_image_text(loaded, split, RetrievalProtocol(), torch.device("cpu"), "fp32")
    recalls = {k: v for k, v in result.metrics.items() if "_R" in k}
    assert {"i2t_R1", "i2t_R5", "i2t_R10", "t2i_R1", "t2i_R5", "t2i_R10"} <= set(recalls)
    assert all(0.0 <= v <= 100.0 for v in recalls.values())
    assert result.i2t_ranks.shape == (split.n_images,) and result.t2i_ranks.shape == (split.n_texts,)
