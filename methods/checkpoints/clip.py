"""Released CLIP weights -> our CLIP (methods/clip.py), name by name, with the architecture read from the weights.

Three layouts are read:

- **OpenAI / open_clip** state dicts (the keys of openai/CLIP ``clip/model.py`` and mlfoundations/open_clip
  ``src/open_clip/model.py::CLIP``: ``visual.conv1``, ``visual.transformer.resblocks.N.attn.in_proj_weight``,
  ``token_embedding``, ``ln_final``, ``text_projection``, ``logit_scale``...). OpenAI's own archives add
  ``input_resolution``, ``context_length`` and ``vocab_size`` entries, which are checked against the weights.
- **Hugging Face** ``CLIPModel`` (transformers ``models/clip/modeling_clip.py``: ``vision_model.*``,
  ``text_model.*``, ``visual_projection``, ``text_projection``, ``logit_scale``).

The architecture comes from tensor shapes, as open_clip's ``build_model_from_openai_state_dict`` reads it: widths,
depths, patch size, image size, context length, vocabulary, embedding size and MLP ratio. Two facts are not in
the weights: the attention head count (open_clip's ``head_width`` 64 unless a config says otherwise) and the
activation (QuickGELU for OpenAI's weights, GELU for most LAION ones: github.com/mlfoundations/open_clip/issues/771). An open_clip config name
(``ViT-B-32``, ``ViT-B-32-quickgelu``, ``ViT-L-14-336``...) supplies both and is checked against every shape; a
Hugging Face folder has them in config.json; OpenAI archives are QuickGELU by definition.

Only open_clip's plain ViT + causal text transformer family is supported (every ``model_configs`` entry without
``timm_model_name``, ``hf_model_name``, a multimodal decoder, attentional pooling, layer scale or a non-causal /
biased text head); anything else is refused with the reason instead of being loaded approximately.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch

from vlpbench.methods.preprocess import CLIP_MEAN, CLIP_STD
from vlpbench.methods.towers import WeightsError

OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")   # ints OpenAI's archives carry
SUPPORTED_VISION = {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"}
SUPPORTED_TEXT = {"width", "context_length", "vocab_size", "heads", "layers", "mlp_ratio"}
SUPPORTED_TOP = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text"}


@dataclass(frozen=True)
class ClipArch:
    """Everything that fixes a CLIP ViT's shapes and function (open_clip's CLIPVisionCfg / CLIPTextCfg subset)."""

    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    vision_mlp_ratio: float
    context_length: int
    vocab_size: int
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp_ratio: float
    embed_dim: int
    activation: str            # "quick_gelu" | "gelu"
    layer_norm_eps: float = 1e-5
    name: str = "inferred"     # the open_clip config or HF folder it came from

    def method_config(self) -> dict[str, Any]:
        """The CLIPConfig dict (methods/clip.py) of this architecture, evaluation transform included."""
        return {
            "vision": dict(image_size=self.image_size, patch_size=self.patch_size, width=self.vision_width,
                           depth=self.vision_layers, heads=self.vision_heads, mlp_ratio=self.vision_mlp_ratio,
                           pre_norm=True, activation=self.activation, layer_norm_eps=self.layer_norm_eps),
            "text": dict(arch="clip", width=self.text_width, depth=self.text_layers, heads=self.text_heads,
                         mlp_ratio=self.text_mlp_ratio, max_length=self.context_length, activation=self.activation,
                         layer_norm_eps=self.layer_norm_eps, dropout=0.0),
            "preprocess": dict(resolution=self.image_size, mean=CLIP_MEAN, std=CLIP_STD, interpolation="bicubic",
                               resize_mode="shortest", train_crop_ratio=(1.0, 1.0)),
            "embed_dim": self.embed_dim,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def shapes(self) -> tuple[int, ...]:
        """What the weights' shapes determine (MLP widths as the layers build them: int(width * ratio))."""
        return (self.image_size, self.patch_size, self.vision_width, self.vision_layers,
                int(self.vision_width * self.vision_mlp_ratio), self.context_length, self.vocab_size,
                self.text_width, self.text_layers, int(self.text_width * self.text_mlp_ratio), self.embed_dim)


def shape_fields() -> tuple[str, ...]:
    return ("image_size", "patch_size", "vision_width", "vision_layers", "vision_mlp_width", "context_length",
            "vocab_size", "text_width", "text_layers", "text_mlp_width", "embed_dim")


# ---- architecture -------------------------------------------------------------------------------------------
def _count(state: Mapping[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def arch_from_openai_state(state: Mapping[str, torch.Tensor], activation: str, name: str = "inferred",
                           vision_head_width: int = 64, text_heads: int | None = None) -> ClipArch:
    """The architecture an OpenAI/open_clip ViT state dict was built with (heads from `vision_head_width`, text
    heads width // 64 unless given, as open_clip's build_model_from_openai_state_dict assumes)."""
    need = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj", "token_embedding.weight",
            "positional_embedding", "ln_final.weight", "text_projection")
    missing = [k for k in need if k not in state]
    if missing:
        hint = (" (a ResNet CLIP: only ViT towers are supported)" if "visual.layer1.0.conv1.weight" in state
                else " (not an OpenAI/open_clip CLIP ViT state dict; for a Hugging Face CLIPModel use --format hf_clip)")
        raise WeightsError(f"missing {', '.join(missing)}{hint}")
    conv = state["visual.conv1.weight"]
    width, patch = int(conv.shape[0]), int(conv.shape[-1])
    n_pos = int(state["visual.positional_embedding"].shape[0])
    grid = round((n_pos - 1) ** 0.5)
    if grid * grid + 1 != n_pos:
        raise WeightsError(f"visual.positional_embedding has {n_pos} rows, not a square grid plus a class token")
    text_width = int(state["ln_final.weight"].shape[0])
    fc = state["visual.transformer.resblocks.0.mlp.c_fc.weight"]
    tfc = state["transformer.resblocks.0.mlp.c_fc.weight"]
    return ClipArch(
        image_size=patch * grid, patch_size=patch, vision_width=width,
        vision_layers=_count(state, r"^visual\.transformer\.resblocks\.(\d+)\."),
        vision_heads=width // vision_head_width, vision_mlp_ratio=fc.shape[0] / width,
        context_length=int(state["positional_embedding"].shape[0]),
        vocab_size=int(state["token_embedding.weight"].shape[0]), text_width=text_width,
        text_layers=_count(state, r"^transformer\.resblocks\.(\d+)\."),
        text_heads=text_heads or text_width // 64, text_mlp_ratio=tfc.shape[0] / text_width,
        embed_dim=int(state["text_projection"].shape[1]), activation=activation, name=name)


def open_clip_config_dir() -> Path | None:
    """open_clip's model_configs folder when open_clip is installed (found without importing it)."""
    spec = find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model_configs"
    return folder if folder.is_dir() else None


def named_arch(name: str, config_dir: Path | None = None) -> ClipArch:
    """The architecture of an open_clip config name; a ``-quickgelu`` suffix (or ``quick_gelu: true``) selects
    QuickGELU, as open_clip's factory does."""
    config_dir = config_dir or open_clip_config_dir()
    base = name[: -len("-quickgelu")] if name.endswith("-quickgelu") else name
    path = None if config_dir is None else config_dir / f"{name}.json"
    if path is not None and not path.is_file():
        path = config_dir / f"{base}.json"  # type: ignore[operator]
    if path is None or not path.is_file():
        where = "open_clip is not installed" if config_dir is None else f"no {name}.json in {config_dir}"
        raise WeightsError(f"unknown CLIP architecture {name!r} ({where}); pass an open_clip config name such as "
                           "ViT-B-32-quickgelu, or install open_clip_torch to read its configs")
    cfg = json.loads(path.read_text())
    vis, txt = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    bad = sorted((set(cfg) - SUPPORTED_TOP) | {f"vision_cfg.{k}" for k in set(vis) - SUPPORTED_VISION}
                 | {f"text_cfg.{k}" for k in set(txt) - SUPPORTED_TEXT})
    if bad:
        raise WeightsError(f"open_clip config {name} ({path}) uses {', '.join(bad)}: only the plain ViT + causal "
                           "text transformer family is supported")
    if not isinstance(vis.get("layers", 12), int) or vis.get("patch_size", 16) is None:
        raise WeightsError(f"open_clip config {name} ({path}) is a ResNet CLIP: only the plain ViT + causal text "
                           "transformer family is supported")
    quick = name.endswith("-quickgelu") or bool(cfg.get("quick_gelu", False))
    width, twidth = int(vis.get("width", 768)), int(txt.get("width", 512))
    return ClipArch(
        image_size=int(vis.get("image_size", 224)), patch_size=int(vis.get("patch_size", 16)), vision_width=width,
        vision_layers=int(vis.get("layers", 12)), vision_heads=width // int(vis.get("head_width", 64)),
        vision_mlp_ratio=float(vis.get("mlp_ratio", 4.0)), context_length=int(txt.get("context_length", 77)),
        vocab_size=int(txt.get("vocab_size", 49408)), text_width=twidth, text_layers=int(txt.get("layers", 12)),
        text_heads=int(txt.get("heads", 8)), text_mlp_ratio=float(txt.get("mlp_ratio", 4.0)),
        embed_dim=int(cfg["embed_dim"]), activation="quick_gelu" if quick else "gelu", name=name)


def arch_from_hf_config(config: Mapping[str, Any], name: str) -> ClipArch:
    """The architecture of a transformers CLIPConfig (config.json of a CLIPModel folder)."""
    try:
        vis, txt = config["vision_config"], config["text_config"]
        acts = {vis.get("hidden_act", "quick_gelu"), txt.get("hidden_act", "quick_gelu")}
        if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
            raise WeightsError(f"{name}: hidden_act {sorted(acts)}; both towers must use quick_gelu or gelu")
        eps = {float(vis.get("layer_norm_eps", 1e-5)), float(txt.get("layer_norm_eps", 1e-5))}
        if len(eps) != 1:
            raise WeightsError(f"{name}: the towers' layer_norm_eps differ ({sorted(eps)})")
        return ClipArch(
            image_size=int(vis["image_size"]), patch_size=int(vis["patch_size"]), vision_width=int(vis["hidden_size"]),
            vision_layers=int(vis["num_hidden_layers"]), vision_heads=int(vis["num_attention_heads"]),
            vision_mlp_ratio=int(vis["intermediate_size"]) / int(vis["hidden_size"]),
            context_length=int(txt["max_position_embeddings"]), vocab_size=int(txt["vocab_size"]),
            text_width=int(txt["hidden_size"]), text_layers=int(txt["num_hidden_layers"]),
            text_heads=int(txt["num_attention_heads"]),
            text_mlp_ratio=int(txt["intermediate_size"]) / int(txt["hidden_size"]),
            embed_dim=int(config["projection_dim"]), activation=acts.pop(), layer_norm_eps=eps.pop(), name=name)
    except KeyError as err:
        raise WeightsError(f"{name}: config.json lacks {err}; is this a transformers CLIPModel folder?") from None


def check_arch(named: ClipArch, inferred: ClipArch, source: str) -> None:
    """A named architecture must match every shape the weights show."""
    diff = [f"{f} {a} (weights) vs {b} ({named.name})" for f, a, b in zip(shape_fields(), inferred.shapes(),
                                                                           named.shapes()) if a != b]
    if diff:
        raise WeightsError(f"{source} does not have the shapes of {named.name}: {'; '.join(diff)}; pass the "
                           "matching --arch")


# ---- key mapping -------------------------------------------------------------------------------------------
def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def _token(t: torch.Tensor) -> torch.Tensor:       # (D,) class embedding -> timm's (1, 1, D) cls_token
    return t.reshape(1, 1, -1)


def _batched(t: torch.Tensor) -> torch.Tensor:     # (N, D) position embeddings -> timm's (1, N, D)
    return t.unsqueeze(0)


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(())


def _transposed(t: torch.Tensor) -> torch.Tensor:  # x @ proj (D, E) -> nn.Linear weight (E, D)
    return t.t()


# Whole-tensor renames: official name -> (our name, transform)
_OPENAI_SIMPLE: dict[str, tuple[str, Any]] = {
    "visual.conv1.weight": ("visual.vit.patch_embed.proj.weight", _same),
    "visual.class_embedding": ("visual.vit.cls_token", _token),
    "visual.positional_embedding": ("visual.vit.pos_embed", _batched),
    "visual.ln_pre.weight": ("visual.vit.norm_pre.weight", _same),
    "visual.ln_pre.bias": ("visual.vit.norm_pre.bias", _same),
    "visual.ln_post.weight": ("visual.vit.norm.weight", _same),
    "visual.ln_post.bias": ("visual.vit.norm.bias", _same),
    "visual.proj": ("image_proj.weight", _transposed),
    "token_embedding.weight": ("text.model.embeddings.token_embedding.weight", _same),
    "positional_embedding": ("text.model.embeddings.position_embedding.weight", _same),
    "ln_final.weight": ("text.model.final_layer_norm.weight", _same),
    "ln_final.bias": ("text.model.final_layer_norm.bias", _same),
    "text_projection": ("text_proj.weight", _transposed),
    "logit_scale": ("logit_scale", _scalar),
}
_HF_SIMPLE: dict[str, tuple[str, Any]] = {
    "vision_model.embeddings.class_embedding": ("visual.vit.cls_token", _token),
    "vision_model.embeddings.patch_embedding.weight": ("visual.vit.patch_embed.proj.weight", _same),
    "vision_model.embeddings.position_embedding.weight": ("visual.vit.pos_embed", _batched),
    "vision_model.pre_layrnorm.weight": ("visual.vit.norm_pre.weight", _same),
    "vision_model.pre_layrnorm.bias": ("visual.vit.norm_pre.bias", _same),
    "vision_model.post_layernorm.weight": ("visual.vit.norm.weight", _same),
    "vision_model.post_layernorm.bias": ("visual.vit.norm.bias", _same),
    "visual_projection.weight": ("image_proj.weight", _same),
    "text_projection.weight": ("text_proj.weight", _same),
    "logit_scale": ("logit_scale", _scalar),
}
_OPENAI_BLOCK = {"ln_1": "norm1", "ln_2": "norm2", "attn.in_proj_weight": "attn.qkv.weight",
                 "attn.in_proj_bias": "attn.qkv.bias", "attn.out_proj": "attn.proj", "mlp.c_fc": "mlp.fc1",
                 "mlp.c_proj": "mlp.fc2"}
_OPENAI_TEXT_BLOCK = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                      "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
_VIS_BLOCK = re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$")
_TXT_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$")


def _sub(rest: str, table: Mapping[str, str]) -> str | None:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return None


def from_openai_state(state: Mapping[str, torch.Tensor], arch: ClipArch) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(our state dict, keys knowingly dropped) from an OpenAI/open_clip state dict; any key we cannot place is
    an error listing them. Tensors become fp32 (OpenAI's archives are partly fp16)."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        value = value.float() if value.is_floating_point() else value
        if key in OPENAI_META_KEYS:
            dropped.append(key)
            continue
        if key == "attn_mask":          # the causal mask, rebuilt by the text model
            dropped.append(key)
            continue
        simple = _OPENAI_SIMPLE.get(key)
        if simple is not None:
            out[simple[0]] = simple[1](value).contiguous()
            continue
        if m := _VIS_BLOCK.match(key):
            new = _sub(m.group(2), _OPENAI_BLOCK)
            if new is not None:
                out[f"visual.vit.blocks.{m.group(1)}.{new}"] = value.contiguous()
                continue
        elif m := _TXT_BLOCK.match(key):
            i, rest = m.group(1), m.group(2)
            prefix = f"text.model.encoder.layers.{i}."
            if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = rest.rsplit("_", 1)[1]
                for part, chunk in zip(("q", "k", "v"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
                continue
            new = _sub(rest, _OPENAI_TEXT_BLOCK)
            if new is not None:
                out[prefix + new] = value.contiguous()
                continue
        unknown.append(key)
    if unknown:
        raise WeightsError(f"{len(unknown)} key(s) of no plain CLIP ViT: {', '.join(sorted(unknown)[:8])}"
                           + (" ..." if len(unknown) > 8 else "") + "; this model family is not supported")
    for key, expected in (("input_resolution", arch.image_size), ("context_length", arch.context_length),
                          ("vocab_size", arch.vocab_size)):
        if key in state and int(state[key]) != expected:
            raise WeightsError(f"the archive says {key} {int(state[key])}, the weights' shapes say {expected}")
    return out, dropped


_HF_VIS_BLOCK = re.compile(r"^vision_model\.encoder\.layers\.(\d+)\.(.+)$")
_HF_BLOCK = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.out_proj": "attn.proj", "mlp.fc1": "mlp.fc1",
             "mlp.fc2": "mlp.fc2"}


def from_hf_state(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(our state dict, keys knowingly dropped) from a transformers CLIPModel state dict: the text tower keeps its
    names (ours is a CLIPTextModel), the vision tower's q/k/v projections are fused into timm's qkv."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unknown: list[str] = []
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        value = value.float() if value.is_floating_point() else value
        if key.endswith("embeddings.position_ids"):     # a buffer transformers rebuilds
            dropped.append(key)
            continue
        if key.startswith("text_model."):
            out["text.model." + key[len("text_model."):]] = value
            continue
        simple = _HF_SIMPLE.get(key)
        if simple is not None:
            out[simple[0]] = simple[1](value).contiguous()
            continue
        if m := _HF_VIS_BLOCK.match(key):
            i, rest = m.group(1), m.group(2)
            qm = re.match(r"^self_attn\.([qkv])_proj\.(weight|bias)$", rest)
            if qm:
                qkv.setdefault(f"{i}.{qm.group(2)}", {})[qm.group(1)] = value
                continue
            new = _sub(rest, _HF_BLOCK)
            if new is not None:
                out[f"visual.vit.blocks.{i}.{new}"] = value.contiguous()
                continue
        unknown.append(key)
    for ik, parts in qkv.items():
        i, kind = ik.split(".")
        if set(parts) != {"q", "k", "v"}:
            raise WeightsError(f"vision layer {i}: {kind} of q/k/v projections incomplete ({sorted(parts)})")
        out[f"visual.vit.blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]]).contiguous()
    if unknown:
        raise WeightsError(f"{len(unknown)} key(s) of no transformers CLIPModel: {', '.join(sorted(unknown)[:8])}"
                           + (" ..." if len(unknown) > 8 else ""))
    return out, dropped
