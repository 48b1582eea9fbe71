"""Unimodal encoders ("towers"), built from config with no hub access.

Image towers are timm Vision Transformers; text towers are transformers models (CLIP's causal
text transformer, or BERT). Every tower returns its token features and one pooled feature, so
methods compose them without knowing which library sits underneath. Pretrained weights come
only from local files or directories; loading reports missing and unexpected keys and refuses a
checkpoint that does not fit, instead of dropping keys silently as a non-strict load does (missing keys that
went unnoticed: github.com/salesforce/ALBEF/issues/101).
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
import torch.nn.functional as F
from pydantic import Field
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

from vlpbench.methods.config import StrictModel


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
# The `cpu` towers (the default suite's size, docs/calibration.md): 32 px images in 16 patches, width 96, two
# layers; TCL, ERNIE-ViL 2.0 and SCALE share them (one cached unimodal stage), COTS takes tiny's depth of four.
# BERT without dropout: on two cores drawing the dropout masks took about a third of a training step
# (methods/card.py CPU_TEXT_DROPOUT).
CPU_VISION: dict[str, Any] = dict(TINY_VISION, image_size=32, patch_size=8, width=96, depth=2, heads=4)
CPU_BERT: dict[str, Any] = dict(TINY_BERT, width=96, depth=2, heads=4, dropout=0.0)


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
    """transformers draws 'Loading weights' / 'Writing model shards' bars and prints its own load report; a
    harness log has no use for the bars, and load_local_hf checks the keys itself."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_local_hf(cls: type, directory: Path, vocab_size: int, what: str) -> Any:
    """A transformers model from a local directory (no hub), refusing one whose vocabulary differs from the
    tokenizer's (its embeddings would index the wrong rows) or that lacks weights the class needs:
    transformers would initialise those at random and only warn. BERT's pooler may be missing (every caller drops
    it: no tower here uses it); extra weights (an MLM or NSP head) are fine."""
    if not directory.is_dir():
        raise WeightsError(f"{what} {directory} is not a directory")
    with quiet_hf_loading():
        loaded, info = cls.from_pretrained(str(directory), local_files_only=True, output_loading_info=True)
    lacking = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))
    if lacking:
        raise WeightsError(f"{what} {directory} lacks {len(lacking)} weight(s) a {cls.__name__} needs "
                           f"({', '.join(lacking[:6])}{', ...' if len(lacking) > 6 else ''}); transformers would "
                           f"initialise them at random. Point {what} at a checkpoint with them (for BERT: a "
                           "BertForMaskedLM directory, e.g. bert-base-uncased or the unimodal stage's text/)")
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


def interpolate_pos_embed(pos_embed: torch.Tensor, new_side: int, num_extra_tokens: int) -> torch.Tensor:
    """(1, extra + side², D) position embeddings -> (1, extra + new_side², D), exactly as uta-smile/TCL's
    `models/vit.py::interpolate_pos_embed` (identical in salesforce/ALBEF): the extra (class) token rows kept,
    the square patch grid resized by `F.interpolate(mode="bicubic", align_corners=False)` without
    antialiasing, and the input returned unchanged when the grid already fits. (timm's
    `resample_abs_pos_embed` antialiases by default: another kernel.) Computed in float32 like the official
    checkpoints, then cast back to the input's dtype."""
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, tokens, dim), got {tuple(pos_embed.shape)}")
    dim = pos_embed.shape[-1]
    old_side = int(round((pos_embed.shape[1] - num_extra_tokens) ** 0.5))
    if old_side * old_side != pos_embed.shape[1] - num_extra_tokens:
        raise ValueError(f"pos_embed with {pos_embed.shape[1]} rows is not {num_extra_tokens} extra token(s) plus "
                         "a square grid")
    if old_side == new_side:
        return pos_embed
    extra = pos_embed[:, :num_extra_tokens]
    grid = pos_embed[:, num_extra_tokens:].float().reshape(-1, old_side, old_side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2).to(pos_embed.dtype)
    return torch.cat((extra, grid), dim=1)


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
        """Checkpoints trained at another resolution (DeiT at 224 px into TCL at 256 px): the patch position
        embeddings are resampled to our grid with the official `interpolate_pos_embed` (uta-smile/TCL and
        salesforce/ALBEF `models/vit.py`, applied to DeiT-B/16 in `models/model_pretrain.py`); prefix-token rows
        are kept."""
        pos = state.get("pos_embed")
        own = self.vit.pos_embed
        if pos is None or pos.shape == own.shape or pos.shape[-1] != own.shape[-1]:
            return state
        extra = self.pos_extra_tokens
        old_side = int(round((pos.shape[1] - extra) ** 0.5)) if pos.ndim == 3 else -1
        if pos.ndim != 3 or old_side * old_side != pos.shape[1] - extra:
            raise WeightsError(f"pos_embed of shape {tuple(pos.shape)} is not a square grid plus {extra} prefix "
                               "token(s); cannot resample it")
        return {**state, "pos_embed": interpolate_pos_embed(pos, self.grid, extra)}

    @property
    def pos_extra_tokens(self) -> int:
        """Rows of pos_embed before the patch grid (the class token; none when timm's no_embed_class is set)."""
        return 0 if self.vit.no_embed_class else self.num_prefix_tokens

    @property
    def image_size(self) -> int:
        return int(self.vit.patch_embed.img_size[0])

    def check_image_size(self, size: int) -> None:
        """Raise unless `size` px makes a square grid of whole patches with a learnt pos_embed to resample."""
        patch = tuple(self.vit.patch_embed.patch_size)
        if patch[0] != patch[1] or size <= 0 or size % patch[0]:
            raise ValueError(f"image size {size} must be a positive multiple of the patch size {patch[0]} "
                             "(a square grid of whole patches)")
        if self.vit.pos_embed is None or self.vit.dynamic_img_size:
            raise ValueError("set_image_size resamples a fixed learnt pos_embed; this ViT has none")

    def set_image_size(self, size: int) -> None:
        """Run at another square input size: pos_embed resampled in place by the official
        `interpolate_pos_embed` (as TCL's `Retrieval.py` does to `visual_encoder.pos_embed` and
        `visual_encoder_m.pos_embed` when it evaluates a 256 px checkpoint at `image_res` 384), and timm's
        patch embedding told the new size so forward accepts it. The parameter object is replaced: build
        optimizers after calling this."""
        self.check_image_size(size)
        if size == self.image_size:
            return
        old = self.vit.pos_embed
        # on the CPU, as Retrieval.py resamples the checkpoint loaded with map_location='cpu' (a GPU's bicubic
        # kernel need not round the same)
        side = size // int(self.vit.patch_embed.patch_size[0])
        resampled = interpolate_pos_embed(old.detach().cpu(), side, self.pos_extra_tokens).to(old.device)
        self.vit.patch_embed.set_input_size(img_size=(size, size))
        self.vit.pos_embed = nn.Parameter(resampled, requires_grad=old.requires_grad)
        self.config = self.config.model_copy(update={"image_size": size})

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
