"""Official TCL/ALBEF checkpoints <-> our TCL, mapped name by name.

Two official layouts exist (uta-smile/TCL, an ALBEF fork; salesforce/ALBEF has the same names):
- "pretrain", the model of `models/model_pretrain.py` (`Pretrain.py` saves it, e.g. TCL_4M):
  `text_encoder` is a BertForMaskedLM, so `text_encoder.bert.embeddings.*`,
  `text_encoder.bert.encoder.layer.{i}.*` and the MLM head `text_encoder.cls.predictions.*` (decoder tied
  to the word embeddings); queues `image_queue`, `text_queue` (dim, size) and `queue_ptr`, no id queue.
- "retrieval", the model of `models/model_retrieval.py` (`Retrieval.py` saves it, e.g.
  TCL_Retrieval_Coco_Finetune): `text_encoder` is a BertModel, so `text_encoder.embeddings.*` and
  `text_encoder.encoder.layer.{i}.*` (Retrieval.py strips `bert.` when it loads a pretraining
  checkpoint), no MLM head, plus `idx_queue` (1, size).
Both hold `visual_encoder.*` (timm-style ViT), `vision_proj`, `text_proj`, `itm_head`, `temp`, the
momentum copies (`*_m`) and the BERT `embeddings.position_ids` buffer. Layers >= fusion_layer carry
`crossattention.*`. Files are the dict both scripts save, {'model': state, 'optimizer', 'lr_scheduler',
'config', 'epoch'}, or a bare state dict.

Every key is mapped, checked (tied copies, position ids) or rejected; any of our entries a file has no
counterpart for is filled only where the official model fills it the same way (the id queue: -100) and
named in the load report; anything else is an error listing the keys. A retrieval checkpoint has no MLM
head, so a TCL built from one has none either (`TCLConfig.mlm_head = False`): no random weights left.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vlpbench.methods.towers import WeightsError, load_local_hf, load_state_dict_file


Layout = Literal["pretrain", "retrieval"]
LAYOUTS: tuple[Layout, ...] = ("pretrain", "retrieval")
# models/model_retrieval.py: self.register_buffer("idx_queue", torch.full((1, self.queue_size), -100))
EMPTY_ID = -100
_SIDES = {"text_encoder": "text", "text_encoder_m": "text_m"}
BERT_PREFIX: dict[Layout, str] = {"pretrain": "bert.", "retrieval": ""}
_SIMPLE = {
    "visual_encoder.": "visual.vit.", "visual_encoder_m.": "visual_m.vit.",
    "vision_proj.": "vision_proj.", "vision_proj_m.": "vision_proj_m.",
    "text_proj.": "text_proj.", "text_proj_m.": "text_proj_m.",
    "itm_head.": "itm_head.",
}
_TEXT_KEY = re.compile(r"^(text_encoder(?:_m)?)\.(.+)$")
TIED_DECODER = re.compile(r"^(text_encoder(?:_m)?)\.cls\.predictions\.decoder\.(weight|bias)$")
POSITION_IDS = re.compile(r"^text_encoder(?:_m)?\.(?:bert\.)?embeddings\.position_ids$")


@dataclass
class OfficialLoadReport:
    """What loading an official checkpoint did, for the run record."""

    source: str
    layout: Layout
    wrapper_keys: tuple[str, ...] = ()          # top-level entries beside 'model' (optimizer, config, ...), unused
    checked: tuple[str, ...] = ()               # official keys verified and not loaded (tied copies, position ids)
    filled: dict[str, str] = field(default_factory=dict)   # our entries the file lacks -> how they were set
    pos_embed_resampled: dict[str, list[int]] = field(default_factory=dict)  # official key -> [old, new] grid side
    mlm_head: bool = True
    resolution_change: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_official_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """(state dict, other top-level keys) of a file saved by TCL's Pretrain.py / Retrieval.py
    ({'model': state, 'optimizer', 'lr_scheduler', 'config', 'epoch'}), a bare state dict or a safetensors file.
    Read with torch.load(weights_only=True): nothing in the file is executed."""
    if not path.is_file():
        raise WeightsError(f"official TCL checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        return load_state_dict_file(path), ()
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(f"{path} holds Python objects beside its tensors that a weights-only load refuses ({e}); "
                           "vlpbench never unpickles them. Export the 'model' state dict to .safetensors on a machine "
                           "and from a source you trust, and pass that file") from e
    if not isinstance(raw, dict):
        raise WeightsError(f"{path} holds a {type(raw).__name__}, not a state dict or {{'model': state}}")
    if isinstance(raw.get("model"), dict):
        return raw["model"], tuple(sorted(k for k in raw if k != "model"))
    if not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise WeightsError(f"{path} is neither a state dict nor {{'model': state}}: top-level keys "
                           f"{sorted(raw)[:8]}")
    return raw, ()


def detect_layout(state: Mapping[str, Any], source: str = "the checkpoint") -> Layout:
    """'pretrain' (text_encoder.bert.* / text_encoder.cls.*) or 'retrieval' (text_encoder.embeddings.* /
    text_encoder.encoder.*); a state dict with both, or neither, is an error."""
    pre = sorted(k for k in state if re.match(r"^text_encoder(_m)?\.(bert|cls)\.", k))
    ret = sorted(k for k in state if re.match(r"^text_encoder(_m)?\.(embeddings|encoder)\.", k))
    if pre and ret:
        raise WeightsError(f"{source} mixes the pretraining layout ({pre[0]}, ...) and the retrieval layout "
                           f"({ret[0]}, ...) of TCL's text encoder; it is neither models/model_pretrain.py's nor "
                           "models/model_retrieval.py's state dict")
    if not pre and not ret:
        raise WeightsError(f"{source} has no text_encoder.bert.* / text_encoder.embeddings.* keys: not a TCL/ALBEF "
                           f"checkpoint (first keys: {sorted(state)[:5]})")
    return "pretrain" if pre else "retrieval"


def _text_name(key: str, fusion_layer: int, layout: Layout) -> str | None:
    """Our name for an official text-encoder key, or None when the key has no place in this layout."""
    m = _TEXT_KEY.match(key)
    if not m:
        return None
    side, rest = _SIDES[m.group(1)], m.group(2)
    prefix = BERT_PREFIX[layout]
    if rest.startswith(prefix + "embeddings."):
        return f"{side}.tower.model.embeddings." + rest[len(prefix + "embeddings."):]
    layer = re.match(rf"^{re.escape(prefix)}encoder\.layer\.(\d+)\.(.+)$", rest)
    if layer:
        i, tail = int(layer.group(1)), layer.group(2)
        if i < fusion_layer:
            return f"{side}.tower.model.encoder.layer.{i}.{tail}"
        return f"{side}.fusion.layers.{i - fusion_layer}.{tail}"
    if layout == "pretrain":
        if rest.startswith("cls.predictions.transform."):
            return f"{side}.mlm.predictions.transform." + rest[len("cls.predictions.transform."):]
        if rest == "cls.predictions.bias":
            return f"{side}.mlm.predictions.bias"
    return None


def _ours(key: str, fusion_layer: int, layout: Layout) -> str | None:
    for old, new in _SIMPLE.items():
        if key.startswith(old):
            return new + key[len(old):]
    if key == "temp":
        return "temp"
    return _text_name(key, fusion_layer, layout)


def _check_position_ids(key: str, value: torch.Tensor) -> None:
    """xbert's BertEmbeddings buffer: torch.arange(max_position_embeddings).expand((1, -1)); ours is rebuilt
    the same, so any other content would change the model."""
    if not torch.equal(value.reshape(-1).long(), torch.arange(value.numel())):
        raise WeightsError(f"{key} is not 0, 1, 2, ...: our BERT numbers positions that way, the model would change")


def from_official(state: Mapping[str, torch.Tensor], fusion_layer: int,
                  layout: Layout | None = None) -> dict[str, torch.Tensor]:
    """Map an official state dict (either layout; detected when not given) to our names; raise on anything
    unmapped or inconsistent. Queues: (dim, size) -> (size, dim); idx_queue (1, size) -> (size,)."""
    layout = layout or detect_layout(state)
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state.items():
        if POSITION_IDS.match(key):
            _check_position_ids(key, value)
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
        tied = TIED_DECODER.match(key) if layout == "pretrain" else None
        if tied:
            src = (f"{tied.group(1)}.bert.embeddings.word_embeddings.weight" if tied.group(2) == "weight"
                   else f"{tied.group(1)}.cls.predictions.bias")
            if src in state and not torch.equal(state[src], value):
                raise WeightsError(f"{key} is not tied to {src}: our MLM head ties them, the weights would change")
            continue
        name = _ours(key, fusion_layer, layout)
        if name is None:
            unmapped.append(key)
        else:
            out[name] = value
    if unmapped:
        raise WeightsError(f"{len(unmapped)} official keys have no place in our TCL ({layout} layout; nothing was "
                           "loaded): " + ", ".join(sorted(unmapped)[:10]))
    return out


def _official_name(key: str, fusion_layer: int, layout: Layout) -> str | None:
    """The official name of one of our keys; None for our MLM head in the retrieval layout (it has none)."""
    for old, new in _SIMPLE.items():
        if key.startswith(new):
            return old + key[len(new):]
    if key == "temp":
        return key
    side = {"text": "text_encoder", "text_m": "text_encoder_m"}
    prefix = BERT_PREFIX[layout]
    m = re.match(r"^(text|text_m)\.(tower\.model\.encoder\.layer|fusion\.layers)\.(\d+)\.(.+)$", key)
    if m:
        i = int(m.group(3)) + (fusion_layer if m.group(2).startswith("fusion") else 0)
        return f"{side[m.group(1)]}.{prefix}encoder.layer.{i}.{m.group(4)}"
    m = re.match(r"^(text|text_m)\.tower\.model\.embeddings\.(.+)$", key)
    if m:
        return f"{side[m.group(1)]}.{prefix}embeddings.{m.group(2)}"
    m = re.match(r"^(text|text_m)\.mlm\.predictions\.(.+)$", key)
    if m:
        return f"{side[m.group(1)]}.cls.predictions.{m.group(2)}" if layout == "pretrain" else None
    raise WeightsError(f"no official name for {key}")


def to_official(state: Mapping[str, torch.Tensor], fusion_layer: int,
                layout: Layout = "pretrain") -> dict[str, torch.Tensor]:
    """Our state dict in an official layout (the inverse of from_official): the tied decoder copies and
    position ids included; `idx_queue` only in the retrieval layout, which also has no MLM head (our MLM
    head is left out there, as Retrieval.py's non-strict load drops `text_encoder.cls.*`)."""
    if layout == "pretrain" and not any(k.startswith("text.mlm.") for k in state):
        raise WeightsError("the pretraining layout has an MLM head (text_encoder.cls.predictions.*) and this model "
                           "has none (mlm_head=False): export it with layout='retrieval'")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("queues."):
            continue
        official = _official_name(key, fusion_layer, layout)
        if official is not None:
            out[official] = value
    prefix = BERT_PREFIX[layout]
    for side in ("text_encoder", "text_encoder_m"):
        rows = out[f"{side}.{prefix}embeddings.position_embeddings.weight"].shape[0]
        out[f"{side}.{prefix}embeddings.position_ids"] = torch.arange(rows).expand((1, -1))
        if layout == "pretrain":
            out[f"{side}.cls.predictions.decoder.weight"] = out[f"{side}.bert.embeddings.word_embeddings.weight"]
            out[f"{side}.cls.predictions.decoder.bias"] = out[f"{side}.cls.predictions.bias"]
    out["image_queue"] = state["queues.queue_image"].t().contiguous()
    out["text_queue"] = state["queues.queue_text"].t().contiguous()
    out["queue_ptr"] = state["queues.ptr"].reshape(1)
    if layout == "retrieval":
        out["idx_queue"] = state["queues.queue_ids"].reshape(1, -1)
    return out


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
    mapped = from_official(state, fusion_layer, "pretrain")
    return {k[len("text."):]: v for k, v in mapped.items()}


def load_bert_init(text: torch.nn.Module, directory: Path, fusion_layer: int, vocab_size: int) -> list[str]:
    """Load BERT weights into a TCLText; returns the keys left at their initialisation (cross-attention only).
    A TCLText without an MLM head (mlm_head=False) takes BERT's encoder only; BERT's MLM head is not used."""
    state = bert_init_state(directory, fusion_layer, vocab_size)
    if getattr(text, "mlm", None) is None:
        state = {k: v for k, v in state.items() if not k.startswith("mlm.")}
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
