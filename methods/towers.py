"""Unimodal encoders ("towers"), built from config with no hub access.

Image towers are timm Vision Transformers; text towers are transformers models (CLIP's causal
text transformer, or BERT). Every tower returns its token features and one pooled feature, so
methods compose them without knowing which library sits underneath. Pretrained weights come
only from local files or directories; loading reports missing and unexpected keys and refuses a
checkpoint that does not fit, instead of dropping keys silently (anchors.md §3, item 17).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from pydantic import Field
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

from methods.config import StrictModel


class WeightsError(ValueError):
    pass


@dataclass
class TowerOutput:
    tokens: torch.Tensor   # (B, N, D) final-layer token features (after the final norm)
    pooled: torch.Tensor   # (B, D) the tower's global feature (CLS / EOT), before any projection
    mask: torch.Tensor | None = None  # (B, N) 1 = real token (text); None = all valid (image)


# The tiny towers TCL, COTS, ERNIE-ViL 2.0 and SCALE share (one cached unimodal-init stage for all of them).
TINY_VISION: dict[str, Any] = dict(image_size=64, patch_size=8, width=128, depth=4, heads=4, pre_norm=False,
                                   activation="gelu", layer_norm_eps=1e-6)
TINY_BERT: dict[str, Any] = dict(arch="bert", width=128, depth=4, heads=4, max_length=30, activation="gelu",
                                 layer_norm_eps=1e-12, dropout=0.1)


class VisionTowerConfig(StrictModel):
    timm_model: str | None = Field(None, description="A timm architecture name; None = build from the fields below.")
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    pre_norm: bool = Field(False, description="LayerNorm before the transformer (CLIP's ln_pre).")
    activation: Literal["gelu", "quick_gelu"] = "gelu"
    layer_norm_eps: float = 1e-6
    drop_path: float = 0.0
    weights: str | None = Field(None, description="Local .safetensors/.pth state dict for the tower.")


class TextTowerConfig(StrictModel):
    arch: Literal["clip", "bert"] = "bert"
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    max_length: int = Field(32, ge=4, description="Context length (tokens, incl. [CLS]/[SEP]).")
    activation: Literal["gelu", "quick_gelu"] = "gelu"
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    pretrained_dir: str | None = Field(None, description="Local HF model directory to load weights from.")


@contextmanager
def quiet_hf_loading() -> Iterator[None]:
    """transformers draws 'Loading weights' / 'Writing model shards' bars; a harness log has no use for them."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_local_hf(cls: type, directory: Path, vocab_size: int, what: str) -> Any:
    """A transformers model from a local directory (no hub), refusing one whose vocabulary differs
    from the tokenizer's (its embeddings would index the wrong rows)."""
    if not directory.is_dir():
        raise WeightsError(f"{what} {directory} is not a directory")
    with quiet_hf_loading():
        loaded = cls.from_pretrained(str(directory), local_files_only=True)
    if loaded.config.vocab_size != vocab_size:
        raise WeightsError(f"the model in {directory} has vocab_size {loaded.config.vocab_size} but the tokenizer "
                           f"has {vocab_size}; load the tokenizer from the same directory (tokenizer.kind: pretrained)")
    return loaded


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_weights_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str,
                        ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a state dict; any missing, unexpected or mis-shaped key is an error that lists them."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        parts = [f"{len(missing)} missing: {show(missing)}" if missing else "",
                 f"{len(unexpected)} unexpected: {show(unexpected)}" if unexpected else "",
                 f"{len(shape)} with another shape: {show(shape)}" if shape else ""]
        raise WeightsError(f"weights from {source} do not fit {type(module).__name__}: "
                           + "; ".join(p for p in parts if p))
    module.load_state_dict(state, strict=True)


class VisionTower(nn.Module):
    def __init__(self, config: VisionTowerConfig) -> None:
        super().__init__()
        self.config = config
        if config.timm_model:
            self.vit = timm.create_model(config.timm_model, pretrained=False, num_classes=0,
                                         img_size=config.image_size, drop_path_rate=config.drop_path)
        else:
            self.vit = VisionTransformer(
                img_size=config.image_size, patch_size=config.patch_size, embed_dim=config.width,
                depth=config.depth, num_heads=config.heads, mlp_ratio=config.mlp_ratio,
                pre_norm=config.pre_norm, num_classes=0, global_pool="token", class_token=True,
                act_layer=config.activation, drop_path_rate=config.drop_path,
                norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps))
        if not isinstance(self.vit, VisionTransformer):
            raise ValueError(f"timm_model {config.timm_model!r} is not a VisionTransformer")
        if config.weights:
            state = load_state_dict_file(Path(config.weights))
            load_weights_strict(self.vit, self._fit_pos_embed(state), config.weights, ignore_prefixes=("head.",))

    def _fit_pos_embed(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Checkpoints trained at another resolution (DeiT at 224 px into TCL at 256 px): the patch
        position embeddings are resampled bicubically to our grid, as ALBEF/TCL's
        `interpolate_pos_embed` and timm's loader do; prefix-token embeddings are kept."""
        from timm.layers import resample_abs_pos_embed

        pos = state.get("pos_embed")
        own = self.vit.pos_embed
        if pos is None or pos.shape == own.shape or pos.shape[-1] != own.shape[-1]:
            return state
        prefix = self.num_prefix_tokens
        old_side = int(round((pos.shape[1] - prefix) ** 0.5))
        if old_side * old_side != pos.shape[1] - prefix:
            raise WeightsError(f"pos_embed of shape {tuple(pos.shape)} is not a square grid plus {prefix} prefix "
                               "token(s); cannot resample it")
        new_grid = list(self.vit.patch_embed.grid_size)
        return {**state, "pos_embed": resample_abs_pos_embed(pos, new_grid, [old_side, old_side],
                                                             num_prefix_tokens=prefix)}

    @property
    def width(self) -> int:
        return int(self.vit.embed_dim)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.vit.num_prefix_tokens)

    @property
    def grid(self) -> int:
        return int(self.vit.patch_embed.grid_size[0])

    def forward(self, images: torch.Tensor, patch_mask: torch.Tensor | None = None,
                mask_embedding: torch.Tensor | None = None) -> TowerOutput:
        """With `patch_mask` (B, P) bool, masked patches' embeddings are replaced by `mask_embedding` (D,)
        before position embeddings are added (BEiT's masked image modelling input)."""
        if patch_mask is None:
            tokens = self.vit.forward_features(images)
        else:
            if mask_embedding is None:
                raise ValueError("a patch mask needs the [MASK] embedding that replaces masked patches")
            vit = self.vit
            x = vit.patch_embed(images)
            if patch_mask.shape != x.shape[:2]:
                raise ValueError(f"patch mask {tuple(patch_mask.shape)} does not match {tuple(x.shape[:2])} patches")
            x = torch.where(patch_mask.unsqueeze(-1), mask_embedding.to(x.dtype), x)
            x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
            tokens = vit.norm(vit.blocks(x))
        pooled = self.vit.forward_head(tokens, pre_logits=True)
        return TowerOutput(tokens=tokens, pooled=pooled)


class TextTower(nn.Module):
    """CLIP text transformer (causal mask, pooled at the [SEP]/EOT token) or BERT (pooled at [CLS])."""

    def __init__(self, config: TextTowerConfig, vocab_size: int, pad_id: int, cls_id: int, sep_id: int) -> None:
        super().__init__()
        self.config = config
        inter = int(config.width * config.mlp_ratio)
        if config.arch == "clip":
            hf_cfg = CLIPTextConfig(
                vocab_size=vocab_size, hidden_size=config.width, intermediate_size=inter,
                num_hidden_layers=config.depth, num_attention_heads=config.heads,
                max_position_embeddings=config.max_length, hidden_act=config.activation,
                layer_norm_eps=config.layer_norm_eps, attention_dropout=0.0,
                pad_token_id=pad_id, bos_token_id=cls_id, eos_token_id=sep_id)
            self.model: nn.Module = CLIPTextModel(hf_cfg)
        else:
            hf_cfg = BertConfig(
                vocab_size=vocab_size, hidden_size=config.width, intermediate_size=inter,
                num_hidden_layers=config.depth, num_attention_heads=config.heads,
                max_position_embeddings=max(config.max_length, 512), hidden_act=config.activation,
                layer_norm_eps=config.layer_norm_eps, hidden_dropout_prob=config.dropout,
                attention_probs_dropout_prob=config.dropout, pad_token_id=pad_id)
            self.model = BertModel(hf_cfg, add_pooling_layer=False)
        if config.pretrained_dir:
            self._load_pretrained(Path(config.pretrained_dir), vocab_size)

    def _load_pretrained(self, directory: Path, vocab_size: int) -> None:
        loaded = load_local_hf(type(self.model), directory, vocab_size, "text tower pretrained_dir")
        # BERT checkpoints carry a pooler (dense+tanh over [CLS]) that our towers do not use.
        load_weights_strict(self.model, loaded.state_dict(), str(directory), ignore_prefixes=("pooler.",))

    @property
    def width(self) -> int:
        return int(self.config.width)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> TowerOutput:
        """token_type_ids (BERT only): the segment of each token (SCALE's table segment); None = all 0."""
        if token_type_ids is not None and self.config.arch != "bert":
            raise ValueError("token_type_ids need a BERT text tower (CLIP's has no segment embeddings)")
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        if self.config.arch == "clip":
            # EOT pooling: the last real token ([SEP]); the tokenizer right-pads and keeps [SEP].
            eot = attention_mask.sum(dim=1) - 1
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eot]
        else:
            pooled = hidden[:, 0]
        return TowerOutput(tokens=hidden, pooled=pooled, mask=attention_mask)


@contextmanager
def compiled_towers(model: nn.Module) -> Iterator[int]:
    """Within the block, every vision and text tower inside `model` runs its forward through torch.compile
    (parameters, state dict and checkpoints unchanged); yields how many. Used for training (Suite.compile): the
    model leaves the block eager again, so evaluation and export never see a compiled module."""
    towers = [m for m in model.modules() if isinstance(m, (VisionTower, TextTower))]
    for tower in towers:
        tower.forward = torch.compile(tower.forward)    # type: ignore[method-assign]
    try:
        yield len(towers)
    finally:
        for tower in towers:
            del tower.forward                             # back to the class's eager forward


def check_tower_shapes(method: str, vision: VisionTowerConfig, text: TextTowerConfig, resolution: int,
                       text_arch: str) -> None:
    """The checks every two-tower config repeats: the text tower's kind, and image size = preprocessing size."""
    if text.arch != text_arch:
        raise ValueError(f"{method}'s text tower is a {text_arch!r} encoder: text.arch must be {text_arch!r}, "
                         f"not {text.arch!r}")
    if vision.image_size != resolution:
        raise ValueError(f"vision.image_size {vision.image_size} must equal preprocess.resolution {resolution}")
