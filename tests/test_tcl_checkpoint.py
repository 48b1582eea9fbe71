"""Official TCL checkpoints: the pretraining and the retrieval layout load to the same model, strictly, with
pos_embed resampled as TCL's Retrieval.py does (models/vit.py interpolate_pos_embed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlpbench.benchmarks.data import BuiltinDataset
from vlpbench.methods import TextTokenizer, create_method
from vlpbench.methods.tcl import TCL
from vlpbench.methods.checkpoints.tcl import load_official, load_official_tcl
from vlpbench.methods.tcl_checkpoint import detect_layout, from_official, read_official_checkpoint, to_official
from vlpbench.methods.towers import VisionTower, VisionTowerConfig, WeightsError
from tests.test_tcl import MICRO_TCL


def _official_bicubic(pos: torch.Tensor, new_side: int) -> torch.Tensor:
    """The reference: class-token row kept, the patch grid through plain F.interpolate (bicubic, no antialias)."""
    side = int(round((pos.shape[1] - 1) ** 0.5))
    grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def _retrieval_layout(pretrain: dict[str, torch.Tensor], queue_size: int) -> dict[str, torch.Tensor]:
    """What Retrieval.py saves after loading a pretraining checkpoint into models/model_retrieval.py: every
    'bert.' stripped from keys holding 'bert', the MLM head (text_encoder.cls.*) dropped as unexpected, and
    the model's own idx_queue buffer, torch.full((1, queue_size), -100)."""
    out = {k.replace("bert.", "") if "bert" in k else k: v for k, v in pretrain.items()
           if not k.startswith(("text_encoder.cls.", "text_encoder_m.cls."))}
    out["idx_queue"] = torch.full((1, queue_size), -100)
    return out


@pytest.fixture
def filled_tcl(tokenizer: TextTokenizer, small_world: BuiltinDataset) -> TCL:
    """A micro TCL whose momentum copies differ from the online model and whose queues hold real features."""
    from vlpbench.benchmarks.training.batches import PretrainBatches
    from vlpbench.methods import StepContext

    torch.manual_seed(0)
    model = create_method("tcl", "tiny", tokenizer=tokenizer, overrides=MICRO_TCL)
    batches = PretrainBatches(small_world.pretrain_corpus(), model, 4, seed=0)
    for i in range(2):
        model.pretrain_step(batches.batch(0, i), StepContext(i, 10, 6, 1)).total.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.add_(p.grad, alpha=-0.5)
                    p.grad = None
    return model.eval()  # type: ignore[return-value]


def _outputs(model: TCL, small_world: BuiltinDataset) -> dict[str, torch.Tensor]:
    split = small_world.retrieval_split("test")
    images = model.preprocess.eval(split.images.get(np.arange(3)))
    text = model.tokenize(list(split.texts[:5]))
    with torch.no_grad():
        img_tok = model.rerank_image_features(images)
        feats = model.rerank_text_features(text)
        rerank = torch.stack([model.rerank_score(img_tok[i:i + 1].expand(5, -1, -1), feats) for i in range(3)])
        return {"image": model.encode_image(images), "text": model.encode_text(text), "rerank": rerank}


def test_pretraining_and_retrieval_layouts_load_to_the_same_model(filled_tcl: TCL, tokenizer: TextTokenizer,
                                                                  small_world: BuiltinDataset,
                                                                  tmp_path: Path) -> None:
    pre = to_official(filled_tcl.state_dict(), fusion_layer=1)
    ret = _retrieval_layout(pre, queue_size=8)
    for key in ("text_encoder.embeddings.word_embeddings.weight", "text_encoder.embeddings.position_ids",
                "text_encoder.encoder.layer.0.attention.self.query.weight",
                "text_encoder_m.encoder.layer.1.crossattention.self.key.weight", "visual_encoder_m.pos_embed",
                "idx_queue", "image_queue", "queue_ptr", "temp", "itm_head.weight"):
        assert key in ret, key
    assert not any(".cls." in k or "bert" in k for k in ret)
    exported = to_official(filled_tcl.state_dict(), 1, layout="retrieval")     # our own export agrees
    assert set(exported) == set(ret) and all(torch.equal(exported[k], ret[k]) for k in ret if k != "idx_queue")
    # both files as the official scripts save them: {'model': state, 'optimizer', 'lr_scheduler', 'config', 'epoch'}
    wrapper = {"optimizer": {"state": {}, "param_groups": []}, "lr_scheduler": {"t_initial": 10}, "config": {
        "image_res": 64, "k_test": 128}, "epoch": 3}
    torch.save({"model": pre, **wrapper}, tmp_path / "pretrain.pth")
    torch.save({"model": ret, **wrapper}, tmp_path / "retrieval.pth")

    loaded = {}
    for name in ("pretrain", "retrieval"):
        model, report = load_official_tcl(tmp_path / f"{name}.pth", tokenizer, size="tiny", overrides=MICRO_TCL)
        assert report.layout == name and report.mlm_head == (name == "pretrain")
        assert report.wrapper_keys == ("config", "epoch", "lr_scheduler", "optimizer")
        prefix = "bert." if name == "pretrain" else ""
        assert f"text_encoder_m.{prefix}embeddings.position_ids" in report.checked
        assert ("text_encoder.cls.predictions.decoder.weight" in report.checked) == (name == "pretrain")
        assert set(report.filled) == {"queues.filled"} | ({"queues.queue_ids"} if name == "pretrain" else set())
        assert report.pos_embed_resampled == {} and report.resolution_change is None
        loaded[name] = model
    retrieval = loaded["retrieval"]
    assert retrieval.config.mlm_head is False and retrieval.text.mlm is None and retrieval.text_m.mlm is None
    assert not any(".mlm." in k for k in retrieval.state_dict())               # no random head left behind
    assert (retrieval.queues.get("ids") == -100).all() and (loaded["pretrain"].queues.get("ids") == -100).all()
    theirs = filled_tcl.state_dict()
    for model in loaded.values():
        mine = model.state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine if k not in ("queues.filled", "queues.queue_ids"))
    expected = _outputs(filled_tcl, small_world)
    for name, model in loaded.items():
        got = _outputs(model, small_world)
        for k in expected:
            assert torch.equal(got[k], expected[k]), (name, k)
    with pytest.raises(RuntimeError, match="mlm_head=False"):
        retrieval.pretrain_step(None, None)  # type: ignore[arg-type]


def test_layouts_are_strict(filled_tcl: TCL, tokenizer: TextTokenizer, tmp_path: Path) -> None:
    pre = to_official(filled_tcl.state_dict(), fusion_layer=1)
    ret = _retrieval_layout(pre, queue_size=8)
    assert detect_layout(pre) == "pretrain" and detect_layout(ret) == "retrieval"
    with pytest.raises(WeightsError, match="mixes the pretraining layout"):
        detect_layout({**ret, "text_encoder.cls.predictions.bias": torch.zeros(3)})
    with pytest.raises(WeightsError, match="not a TCL/ALBEF checkpoint"):
        detect_layout({"visual_encoder.pos_embed": torch.zeros(1)})
    with pytest.raises(WeightsError, match="retrieval layout.*text_encoder.pooler.dense.weight"):
        from_official({**ret, "text_encoder.pooler.dense.weight": torch.zeros(2)}, fusion_layer=1)
    shifted = {**ret, "text_encoder.embeddings.position_ids": ret["text_encoder.embeddings.position_ids"] + 1}
    with pytest.raises(WeightsError, match="position_ids is not 0, 1, 2"):
        from_official(shifted, fusion_layer=1)
    # a model with an MLM head refuses the retrieval layout (the head would stay random), and the other way round
    torch.save({"model": ret}, tmp_path / "retrieval.pth")
    with pytest.raises(WeightsError, match="build the model with mlm_head=False"):
        load_official(filled_tcl, tmp_path / "retrieval.pth")
    no_mlm = create_method("tcl", "tiny", tokenizer=tokenizer, overrides={**MICRO_TCL, "mlm_head": False})
    torch.save(pre, tmp_path / "pretrain.pth")                                  # a bare state dict loads too
    with pytest.raises(WeightsError, match="build it with mlm_head=True"):
        load_official(no_mlm, tmp_path / "pretrain.pth")
    load_official(no_mlm, tmp_path / "retrieval.pth")
    missing = {k: v for k, v in ret.items() if k != "text_encoder_m.encoder.layer.1.output.dense.weight"}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="1 missing: text_m.fusion.layers.0.output.dense.weight"):
        load_official(no_mlm, tmp_path / "missing.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="not a state dict"):
        read_official_checkpoint(tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="has none .mlm_head=False.: export it with layout='retrieval'"):
        to_official(no_mlm.state_dict(), fusion_layer=1)


def test_loading_at_another_resolution_resamples_both_pos_embeds_as_retrieval_py(
        filled_tcl: TCL, tokenizer: TextTokenizer, small_world: BuiltinDataset, tmp_path: Path) -> None:
    with torch.no_grad():                                     # online and momentum pos_embed differ
        filled_tcl.visual_m.vit.pos_embed.add_(torch.randn_like(filled_tcl.visual_m.vit.pos_embed))
    ret = _retrieval_layout(to_official(filled_tcl.state_dict(), fusion_layer=1), queue_size=8)
    torch.save({"model": ret}, tmp_path / "retrieval.pth")
    # built at the file's 64 px, then moved to 96 px (grid 8 -> 12) by set_eval_resolution
    model, report = load_official_tcl(tmp_path / "retrieval.pth", tokenizer, size="tiny", overrides=MICRO_TCL,
                                      eval_resolution=96)
    assert report.resolution_change is not None and report.resolution_change["from"] == 64
    assert model.resolution_changes == [report.resolution_change]
    for ours, key in ((model.visual, "visual_encoder.pos_embed"), (model.visual_m, "visual_encoder_m.pos_embed")):
        assert torch.equal(ours.vit.pos_embed, _official_bicubic(ret[key], 12)), key
    # built at 96 px directly: the load resamples, with the same function, to the same weights
    direct = create_method("tcl", "tiny", tokenizer=tokenizer, overrides={
        **MICRO_TCL, "mlm_head": False, "vision": {**MICRO_TCL["vision"], "image_size": 96},
        "preprocess": {"resolution": 96}})
    report = load_official(direct, tmp_path / "retrieval.pth")   # type: ignore[arg-type]
    assert report.pos_embed_resampled == {"visual_encoder.pos_embed": [8, 12], "visual_encoder_m.pos_embed": [8, 12]}
    assert all(torch.equal(v, direct.state_dict()[k]) for k, v in model.state_dict().items()
               if k != "queues.filled")
    out = _outputs(model, small_world)
    assert out["image"].shape == (3, 16) and torch.isfinite(out["rerank"]).all()


def test_vision_weights_at_another_resolution_use_the_official_interpolation(tmp_path: Path) -> None:
    """VisionTower's weights loader (DeiT at 224 px into TCL's 256 px, models/model_pretrain.py) resamples with
    models/vit.py interpolate_pos_embed, not timm's antialiased default."""
    from timm.layers import resample_abs_pos_embed

    vit = dict(patch_size=8, width=32, depth=1, heads=2)
    torch.manual_seed(0)
    source = VisionTower(VisionTowerConfig(image_size=64, **vit))
    torch.save(source.vit.state_dict(), tmp_path / "vit.pth")
    target = VisionTower(VisionTowerConfig(image_size=96, weights=str(tmp_path / "vit.pth"), **vit))
    pos = source.vit.pos_embed.detach()
    assert torch.equal(target.vit.pos_embed.detach(), _official_bicubic(pos, 12))
    timm_default = resample_abs_pos_embed(pos, [12, 12], num_prefix_tokens=1)
    # another kernel, even upsampling: off by a sizeable share of the embeddings (std 0.02)
    assert (timm_default - target.vit.pos_embed.detach()).abs().max() > 0.1 * pos.std()


def test_import_official_reads_the_tokenizer_with_tcls_text_options(tokenizer: TextTokenizer,
                                                                    tmp_path: Path) -> None:
    """The importer's entry point: a tokenizer folder read as TCL tokenises ([CLS] X, pre_caption:30)."""
    from vlpbench.methods.checkpoints.tcl import OFFICIAL_TEXT_OPTIONS, import_official

    torch.manual_seed(0)
    tcl_tok = tokenizer.with_options(**OFFICIAL_TEXT_OPTIONS)
    source = create_method("tcl", "tiny", tokenizer=tcl_tok, overrides={"mlm_head": False}).eval()
    torch.save({"model": to_official(source.state_dict(), fusion_layer=2, layout="retrieval"), "epoch": 4},
               tmp_path / "tcl_retrieval.pth")
    tokenizer.save(tmp_path / "tok")
    with pytest.raises(WeightsError, match="bert-base-uncased vocabulary"):
        import_official(tmp_path / "tcl_retrieval.pth")
    model, report = import_official(tmp_path / "tcl_retrieval.pth", tokenizer=tmp_path / "tok", arch="tiny")
    assert report["size"] == "tiny" and report["layout"] == "retrieval" and tuple(report["wrapper_keys"]) == ("epoch",)
    assert (model.tokenizer.template, model.tokenizer.clean) == ("cls_text", "pre_caption:30")
    text = model.tokenize(["A dog, running on the beach!"])
    assert int(text.input_ids[0, 0]) == model.tokenizer.cls_id and model.tokenizer.sep_id not in text.input_ids[0]
    with torch.no_grad():
        assert torch.equal(model.encode_text(text), source.encode_text(text))
