"""Building blocks of SCALE (methods/scale.py): feature-sequence encoders, the joint co-transformer, heads,
and the input masking of the continuous modalities.

Shapes follow SCALE_code (docs/research/scale_code.md §1): a video or audio clip is a sequence of
feature vectors, embedded as LayerNorm(Linear(x) + position) with an input-level global token (the
mean of the valid vectors, computed after masking, as the M5Product dataloader does) in front; the
joint transformer is CLIP-style pre-LN over the concatenation of every modality's tokens, with its
own learned positions, key-padding masks only, and no final LayerNorm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vlpbench.methods.config import StrictModel


@dataclass(frozen=True)
class SequenceFeatures:
    """A batch of feature sequences (video frames, audio tokens) with their valid positions."""

    values: torch.Tensor   # (B, T, F) float
    valid: torch.Tensor    # (B, T) bool

    def to(self, device: torch.device | str) -> "SequenceFeatures":
        return SequenceFeatures(self.values.to(device), self.valid.to(device))

    def __getitem__(self, idx: torch.Tensor | slice) -> "SequenceFeatures":
        return SequenceFeatures(self.values[idx], self.valid[idx])


class EncoderConfig(StrictModel):
    depth: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    mlp_ratio: float = Field(4.0, gt=0, description="SCALE_code's image/video/audio layers: 1024/768 = 1.33.")
    dropout: float = Field(0.1, ge=0, lt=1)


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class EncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer (same parameters, initialisation and state-dict keys) whose self-attention runs
    batch-first straight into F.scaled_dot_product_attention.

    nn.MultiheadAttention turns the batch into a sequence-first layout, and the backward of its packed
    in-projection writes three zero-filled copies of the q/k/v tensor (`aten::fill_`, about a tenth of the operator
    time of SCALE's cpu step under `vlpbench perf --only profile --methods scale`); splitting the projection with
    `unbind` avoids both. Measured in alternation on two CPU cores, SCALE's cpu step: 1.05 and 0.95 s with
    PyTorch's layer, 0.96 and 0.94 s with this one. Same arithmetic: tests/test_scale.py compares outputs and
    gradients with PyTorch's layer.
    """

    def _sa_block(self, x: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
                  is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal or not self.self_attn.batch_first:
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)
        attn = self.self_attn
        b, n, d = x.shape
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias) \
            .view(b, n, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None
        if key_padding_mask is not None:   # True / -inf = padding (PyTorch's convention), per key
            mask = ~key_padding_mask if key_padding_mask.dtype == torch.bool else key_padding_mask.to(q.dtype)
            mask = mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=attn.dropout if self.training else 0.0)
        return self.dropout1(attn.out_proj(out.transpose(1, 2).reshape(b, n, d)))


class FeatureSequenceEncoder(nn.Module):
    """[global; x_1..x_T] -> LayerNorm(Linear(·) + position) -> post-LN transformer layers (BERT-style)."""

    def __init__(self, in_dim: int, width: int, max_tokens: int, config: EncoderConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        self.position = nn.Embedding(max_tokens + 1, width)
        self.norm = nn.LayerNorm(width, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)
        layer = EncoderLayer(width, config.heads, int(width * config.mlp_ratio), config.dropout,
                             activation="gelu", batch_first=True, norm_first=False)
        self.layers = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.max_tokens = max_tokens

    def forward(self, feats: SequenceFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (B, 1 + T, D) with the global token first, and their valid mask (B, 1 + T)."""
        x, valid = feats.values, feats.valid
        if x.shape[1] > self.max_tokens:
            raise ValueError(f"{x.shape[1]} feature tokens exceed the encoder's {self.max_tokens} positions")
        w = valid.to(x.dtype).unsqueeze(-1)
        glob = (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        x = torch.cat([glob.unsqueeze(1), x], dim=1)
        mask = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        pos = self.position(torch.arange(x.shape[1], device=x.device))
        h = self.dropout(self.norm(self.proj(x) + pos))
        return self.layers(h, src_key_padding_mask=~mask), mask


class JointConfig(StrictModel):
    depth: int = Field(2, ge=1, description="SCALE_code: 6 co-transformer layers.")
    heads: int = Field(4, ge=1, description="SCALE_code: 8.")
    mlp_ratio: float = Field(4.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_tokens: int = Field(512, gt=0, description="Size of the position table over the concatenated sequence.")
    activation: Literal["quick_gelu", "gelu"] = Field(
        "quick_gelu", description="MLP activation: SCALE_code's CLIP blocks use QuickGELU; gelu is PyTorch's fused "
                                  "kernel (the tiny preset's choice: a third less time per step on CPU).")
    modality_embedding: bool = Field(
        False, description="Add a learned embedding per modality; SCALE_code computes the type ids but the line "
                           "that would add them is commented out, so its joint transformer has none.")


class JointTransformer(nn.Module):
    """CLIP-style pre-LN blocks over all modalities' tokens; positions over the whole concatenation."""

    def __init__(self, width: int, n_modalities: int, config: JointConfig) -> None:
        super().__init__()
        self.position = nn.Embedding(config.max_tokens, width)
        self.modality = nn.Embedding(n_modalities, width) if config.modality_embedding else None
        self.dropout = nn.Dropout(config.dropout)
        layer = EncoderLayer(width, config.heads, int(width * config.mlp_ratio), config.dropout,
                             activation=quick_gelu if config.activation == "quick_gelu" else "gelu",
                             batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.max_tokens = config.max_tokens

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, modality_ids: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, D), mask (B, L) bool (True = attend), modality_ids (L,) -> (B, L, D)."""
        if tokens.shape[1] > self.max_tokens:
            raise ValueError(f"the joint sequence has {tokens.shape[1]} tokens but joint.max_tokens is "
                             f"{self.max_tokens}; raise joint.max_tokens")
        x = tokens + self.position(torch.arange(tokens.shape[1], device=tokens.device))
        if self.modality is not None:
            x = x + self.modality(modality_ids)
        return self.layers(self.dropout(x), src_key_padding_mask=~mask)


class RegressionHead(nn.Module):
    """SCALE_code's image/video/audio prediction heads: Linear, GELU, LayerNorm, then Linear to the target width."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width, eps=1e-12))
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.transform(x))


def choose_positions(valid: torch.Tensor, probability: float, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """(B, T) bool: each valid position chosen with `probability`."""
    draw = torch.rand(valid.shape, generator=generator).to(valid.device)
    return (draw < probability) & valid


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, P, 3·p²), patches row-major like a ViT's."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpatchify(patches: torch.Tensor, patch: int, side: int) -> torch.Tensor:
    b, p, _ = patches.shape
    g = side // patch
    x = patches.reshape(b, g, g, 3, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, 3, side, side)
