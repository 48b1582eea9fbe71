"""Official TCL/ALBEF checkpoint files -> our TCL: built for the file (resolution, MLM head), loaded strictly through
the name mapping of methods/tcl_checkpoint.py, pos_embed resampled as the official Retrieval.py does."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vlpbench.methods.config import deep_merge
from vlpbench.methods.registry import create_method, list_presets
from vlpbench.methods.tcl import TCL
from vlpbench.methods.tcl_checkpoint import (BERT_PREFIX, EMPTY_ID, POSITION_IDS, TIED_DECODER, OfficialLoadReport,
                                    detect_layout, from_official, read_official_checkpoint)
from vlpbench.methods.tokenizer import TextTokenizer
from vlpbench.methods.towers import WeightsError, interpolate_pos_embed, load_weights_strict


def _load_state(model: TCL, state: Mapping[str, torch.Tensor], source: str,
                wrapper_keys: tuple[str, ...]) -> OfficialLoadReport:
    """Strictly load an official state dict into `model`, resampling pos_embed to the model's grid."""
    layout = detect_layout(state, source)
    has_mlm = model.text.mlm is not None
    if layout == "retrieval" and has_mlm:
        raise WeightsError(f"{source} is in the retrieval layout (models/model_retrieval.py): it has no MLM head "
                           "(text_encoder.cls.predictions.*) for this model's, which would stay random: build the "
                           "model with mlm_head=False (load_official_tcl does)")
    if layout == "pretrain" and not has_mlm:
        raise WeightsError(f"{source} is in the pretraining layout and has an MLM head (text_encoder.cls."
                           "predictions.*) that a model built with mlm_head=False cannot hold: build it with "
                           "mlm_head=True")
    words = state.get(f"text_encoder.{BERT_PREFIX[layout]}embeddings.word_embeddings.weight")
    if words is not None and words.shape[0] != model.tokenizer.vocab_size:
        raise WeightsError(f"{source} has a vocabulary of {words.shape[0]} word pieces, the tokenizer "
                           f"{model.tokenizer.vocab_size}: load the tokenizer the checkpoint was trained with "
                           "(bert-base-uncased for TCL's releases, tokenizer kind 'pretrained')")
    report = OfficialLoadReport(source=source, layout=layout, wrapper_keys=wrapper_keys, mlm_head=has_mlm)
    state = dict(state)
    for key, tower in (("visual_encoder.pos_embed", model.visual), ("visual_encoder_m.pos_embed", model.visual_m)):
        # Retrieval.py: interpolate_pos_embed(state_dict[key], model.visual_encoder(_m)) before loading
        pos = state.get(key)
        if pos is not None and pos.shape != tower.vit.pos_embed.shape:
            old_side = int(round((pos.shape[1] - tower.pos_extra_tokens) ** 0.5))
            state[key] = interpolate_pos_embed(pos, tower.grid, tower.pos_extra_tokens)
            report.pos_embed_resampled[key] = [old_side, tower.grid]
    mapped = from_official(state, model.config.fusion_layer, layout)
    report.checked = tuple(sorted(k for k in state if POSITION_IDS.match(k) or TIED_DECODER.match(k)))
    own = model.state_dict()
    if "queues.filled" in own:
        mapped["queues.filled"] = torch.tensor(own["queues.queue_image"].shape[0])
        report.filled["queues.filled"] = "queue size (the official queues are always used whole)"
    if "queues.queue_ids" not in mapped:
        mapped["queues.queue_ids"] = torch.full_like(own["queues.queue_ids"], EMPTY_ID)
        report.filled["queues.queue_ids"] = (f"{EMPTY_ID} (models/model_pretrain.py has no idx_queue; "
                                             f"models/model_retrieval.py starts it at {EMPTY_ID})")
    load_weights_strict(model, mapped, source)
    return report


def load_official(model: TCL, path: Path, fusion_layer: int | None = None) -> OfficialLoadReport:
    """Load an official TCL/ALBEF checkpoint file (either layout) into our TCL: strict, pos_embed of both
    visual encoders resampled to the model's resolution as Retrieval.py does. `fusion_layer`, when given,
    must equal the model's."""
    if fusion_layer is not None and fusion_layer != model.config.fusion_layer:
        raise WeightsError(f"fusion_layer {fusion_layer} differs from the model's {model.config.fusion_layer}")
    state, wrapper = read_official_checkpoint(path)
    return _load_state(model, state, str(path), wrapper)


def load_official_tcl(path: Path, tokenizer: TextTokenizer, *, size: str = "base",
                      overrides: Mapping[str, Any] | None = None,
                      eval_resolution: int | None = None) -> tuple[TCL, OfficialLoadReport]:
    """A TCL built for an official checkpoint and loaded from it, with the report (its `layout` says which).

    The model is built from the `size` preset and `overrides` at the checkpoint's own resolution (read from
    visual_encoder.pos_embed and the patch size), with the MLM head only when the file has one (pretraining
    layout). With `eval_resolution` (384 for TCL's retrieval evaluation, configs/Retrieval_*.yaml
    `image_res`), `set_eval_resolution` then resamples both visual encoders' pos_embed, as Retrieval.py does.
    `tokenizer` must be the checkpoint's (bert-base-uncased for TCL's releases). Returned in eval mode."""
    state, wrapper = read_official_checkpoint(path)
    layout = detect_layout(state, str(path))
    pos, proj = state.get("visual_encoder.pos_embed"), state.get("visual_encoder.patch_embed.proj.weight")
    if pos is None or proj is None:
        raise WeightsError(f"{path} lacks visual_encoder.pos_embed or visual_encoder.patch_embed.proj.weight")
    side = int(round((pos.shape[1] - 1) ** 0.5))
    native = side * int(proj.shape[-1])
    built = deep_merge({"vision": {"image_size": native}, "preprocess": {"resolution": native}},
                       dict(overrides or {}))
    built = deep_merge(built, {"mlm_head": layout == "pretrain"})
    model = create_method("tcl", size, tokenizer=tokenizer, overrides=built)
    if not isinstance(model, TCL):
        raise TypeError(f"method 'tcl' built a {type(model).__name__}")
    report = _load_state(model, state, str(path), wrapper)
    if eval_resolution is not None and eval_resolution != model.preprocess.config.resolution:
        report.resolution_change = model.set_eval_resolution(eval_resolution)
    return model.eval(), report


# How TCL's captions are tokenised: the BERT tokenizer vendored in models/tokenization_bert.py builds `[CLS] X`
# (no [SEP]) and the caption datasets apply dataset/utils.py pre_caption(caption, max_words=30).
OFFICIAL_TEXT_OPTIONS: dict[str, str] = {"template": "cls_text", "clean": "pre_caption:30"}


def import_official(path: Path | str, *, tokenizer: Path | None = None, arch: str | None = None,
                    eval_resolution: int | None = None) -> tuple[TCL, dict[str, Any]]:
    """`load_official_tcl` for the checkpoint importer (methods/checkpoints/importer.py): `tokenizer` is the
    folder holding bert-base-uncased's vocab.txt (or tokenizer.json), read with TCL's own text options
    (OFFICIAL_TEXT_OPTIONS); `arch` is our size preset (default 'base': ViT-B/16 + BERT-base split 6/6).
    Returns the model and the load report as JSON with the size and tokenizer added."""
    path = Path(path)
    size = arch or "base"
    if size not in list_presets("tcl"):
        raise WeightsError(f"{path}: TCL's arch is one of its presets {list_presets('tcl')}, not {size!r}")
    if tokenizer is None:
        raise WeightsError(f"{path}: TCL's checkpoints need the bert-base-uncased vocabulary they were trained "
                           "with; pass the folder holding its vocab.txt as the tokenizer (nothing is downloaded)")
    folder = tokenizer.parent if tokenizer.is_file() else tokenizer
    tok = TextTokenizer.from_dir(folder).with_options(**OFFICIAL_TEXT_OPTIONS)
    model, report = load_official_tcl(path, tok, size=size, eval_resolution=eval_resolution)
    return model, {"size": size, "tokenizer": tok.source, "text_options": dict(OFFICIAL_TEXT_OPTIONS),
                   **report.to_json()}
