"""Official TCL/ALBEF checkpoints <-> our TCL, mapped name by name.

The official layout (uta-smile/TCL, salesforce/ALBEF `model_pretrain.py`):
`visual_encoder.*` (timm-style ViT), `text_encoder.bert.embeddings.*`,
`text_encoder.bert.encoder.layer.{i}.*` (layers >= fusion_layer carry `crossattention.*`),
`text_encoder.cls.predictions.*` (MLM head, decoder tied to the word embeddings),
`vision_proj`, `text_proj`, `itm_head`, `temp`, the same with `_m` for the momentum copies, and
the queues `image_queue`/`text_queue` stored as (dim, size) plus `queue_ptr` (and `idx_queue` in
retrieval fine-tuning). Every key is either mapped, checked (tied copies) or named as ignored;
anything else, and any of our parameters left unfilled, is an error listing the keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from methods.towers import WeightsError, load_state_dict_file, load_local_hf, load_weights_strict

# Official keys we knowingly drop: buffers that transformers rebuilds.
IGNORED = re.compile(r"^text_encoder(_m)?\.bert\.embeddings\.position_ids$")
_LAYER = re.compile(r"^(text_encoder(?:_m)?)\.bert\.encoder\.layer\.(\d+)\.(.+)$")
_SIMPLE = {
    "visual_encoder.": "visual.vit.", "visual_encoder_m.": "visual_m.vit.",
    "vision_proj.": "vision_proj.", "vision_proj_m.": "vision_proj_m.",
    "text_proj.": "text_proj.", "text_proj_m.": "text_proj_m.",
    "itm_head.": "itm_head.",
}
_TEXT = {"text_encoder": "text", "text_encoder_m": "text_m"}


def _ours(key: str, fusion_layer: int) -> str | None:
    """Our name for an official key, or None for keys handled elsewhere (tied, queues, ignored)."""
    for old, new in _SIMPLE.items():
        if key.startswith(old):
            return new + key[len(old):]
    if key == "temp":
        return "temp"
    m = _LAYER.match(key)
    if m:
        side, i, rest = _TEXT[m.group(1)], int(m.group(2)), m.group(3)
        if i < fusion_layer:
            return f"{side}.tower.model.encoder.layer.{i}.{rest}"
        return f"{side}.fusion.layers.{i - fusion_layer}.{rest}"
    for official, side in _TEXT.items():
        if key.startswith(f"{official}.bert.embeddings."):
            return f"{side}.tower.model.embeddings." + key[len(f"{official}.bert.embeddings."):]
        if key.startswith(f"{official}.cls.predictions.transform."):
            return f"{side}.mlm.predictions.transform." + key[len(f"{official}.cls.predictions.transform."):]
        if key == f"{official}.cls.predictions.bias":
            return f"{side}.mlm.predictions.bias"
    return None


def from_official(state: dict[str, torch.Tensor], fusion_layer: int) -> dict[str, torch.Tensor]:
    """Map an official state dict to our names; raise on anything unmapped or inconsistent."""
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state.items():
        if IGNORED.match(key):
            continue
        if key in ("image_queue", "text_queue"):
            out[f"queues.queue_{key.split('_')[0]}"] = value.t().contiguous()
            continue
        if key == "idx_queue":
            out["queues.queue_ids"] = value.reshape(-1).long()
            continue
        if key == "queue_ptr":
            out["queues.ptr"] = value.reshape(()).long()
            continue
        tied = re.match(r"^(text_encoder(?:_m)?)\.cls\.predictions\.decoder\.(weight|bias)$", key)
        if tied:
            src = (f"{tied.group(1)}.bert.embeddings.word_embeddings.weight" if tied.group(2) == "weight"
                   else f"{tied.group(1)}.cls.predictions.bias")
            if src in state and not torch.equal(state[src], value):
                raise WeightsError(f"{key} is not tied to {src}: our MLM head ties them, the weights would change")
            continue
        name = _ours(key, fusion_layer)
        if name is None:
            unmapped.append(key)
        else:
            out[name] = value
    if unmapped:
        raise WeightsError(f"{len(unmapped)} official keys have no place in our TCL (nothing was loaded): "
                           + ", ".join(sorted(unmapped)[:10]))
    return out


def to_official(state: dict[str, torch.Tensor], fusion_layer: int) -> dict[str, torch.Tensor]:
    """Our state dict in the official layout (the inverse of from_official, tied copies included)."""
    inverse: dict[str, str] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("queues."):
            continue
        official = _official(key, fusion_layer)
        inverse[official] = key
        out[official] = value
    for side in ("text_encoder", "text_encoder_m"):
        out[f"{side}.cls.predictions.decoder.weight"] = out[f"{side}.bert.embeddings.word_embeddings.weight"]
        out[f"{side}.cls.predictions.decoder.bias"] = out[f"{side}.cls.predictions.bias"]
    out["image_queue"] = state["queues.queue_image"].t().contiguous()
    out["text_queue"] = state["queues.queue_text"].t().contiguous()
    out["idx_queue"] = state["queues.queue_ids"].reshape(1, -1)
    out["queue_ptr"] = state["queues.ptr"].reshape(1)
    return out


def _official(key: str, fusion_layer: int) -> str:
    for old, new in _SIMPLE.items():
        if key.startswith(new):
            return old + key[len(new):]
    if key == "temp":
        return key
    m = re.match(r"^(text|text_m)\.(tower\.model\.encoder\.layer|fusion\.layers)\.(\d+)\.(.+)$", key)
    side = {"text": "text_encoder", "text_m": "text_encoder_m"}
    if m:
        i = int(m.group(3)) + (fusion_layer if m.group(2).startswith("fusion") else 0)
        return f"{side[m.group(1)]}.bert.encoder.layer.{i}.{m.group(4)}"
    m = re.match(r"^(text|text_m)\.tower\.model\.embeddings\.(.+)$", key)
    if m:
        return f"{side[m.group(1)]}.bert.embeddings.{m.group(2)}"
    m = re.match(r"^(text|text_m)\.mlm\.predictions\.(.+)$", key)
    if m:
        return f"{side[m.group(1)]}.cls.predictions.{m.group(2)}"
    raise WeightsError(f"no official name for {key}")


def load_official(model: torch.nn.Module, path: Path, fusion_layer: int) -> None:
    """Load an official TCL/ALBEF checkpoint file into our TCL (strict: every key accounted for)."""
    state = load_state_dict_file(path)
    mapped = from_official(state, fusion_layer)
    own = model.state_dict()
    if "queues.filled" in own and "queues.filled" not in mapped:
        mapped["queues.filled"] = torch.tensor(own["queues.queue_image"].shape[0])
    if "queues.queue_ids" in own and "queues.queue_ids" not in mapped:  # pretraining checkpoints have no ids
        mapped["queues.queue_ids"] = torch.full_like(own["queues.queue_ids"], -1)
    load_weights_strict(model, mapped, str(path))


def bert_init_state(directory: Path, fusion_layer: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """A local BertForMaskedLM directory (bert-base-uncased, or our unimodal stage) as TCLText weights.

    As in ALBEF/TCL: BERT layers < fusion_layer initialise the text encoder, the others the fusion
    layers' self-attention and feed-forward blocks; cross-attention starts fresh. Names are mapped
    through the official `text_encoder.` layout, so one table serves both loaders.
    """
    from transformers import BertForMaskedLM

    bert = load_local_hf(BertForMaskedLM, directory, vocab_size, "text.pretrained_dir")
    if bert.config.num_hidden_layers <= fusion_layer:
        raise WeightsError(f"BERT in {directory} has {bert.config.num_hidden_layers} layers; TCL needs more than "
                           f"fusion_layer = {fusion_layer} (text layers below it, fusion layers from it)")
    state = {f"text_encoder.{k}": v for k, v in bert.state_dict().items() if not k.startswith("bert.pooler.")}
    mapped = from_official(state, fusion_layer)
    return {k[len("text."):]: v for k, v in mapped.items()}


def load_bert_init(text: torch.nn.Module, directory: Path, fusion_layer: int, vocab_size: int) -> list[str]:
    """Load BERT weights into a TCLText; returns the keys left at their initialisation (cross-attention only)."""
    state = bert_init_state(directory, fusion_layer, vocab_size)
    own = text.state_dict()
    fresh = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    not_cross = [k for k in fresh if ".crossattention." not in k]
    shape = sorted(k for k in state if k in own and own[k].shape != state[k].shape)
    if unexpected or not_cross or shape:
        raise WeightsError(f"BERT weights from {directory} do not fit TCL's text encoder: "
                           f"unexpected {unexpected[:8]}, missing {not_cross[:8]}, other shape {shape[:8]}")
    text.load_state_dict(state, strict=False)
    return fresh
