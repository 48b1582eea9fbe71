"""ALBEF-style fusion encoder and heads, assembled from transformers' BERT blocks.

A fusion layer is BERT's layer with a cross-attention block over image tokens between the
(bidirectional) self-attention and the feed-forward block — ALBEF/TCL's `xbert` "fusion" mode.
transformers' own `BertLayer` cannot express it (it makes self-attention causal whenever
cross-attention is on), so the layer is composed here from `BertAttention`, `BertIntermediate`
and `BertOutput`; sub-module names follow BERT's (`attention.self.query`,
`crossattention.self.key`, `intermediate.dense`, `output.LayerNorm`, ...), so official
checkpoints map onto it name for name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.activations import ACT2FN
from transformers.models.bert.modeling_bert import BertAttention, BertIntermediate, BertOutput


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 key mask -> (B, 1, 1, L) additive mask (0 where attended, dtype-min elsewhere)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention's queries and keys have for input x: the autocast dtype while autocast is on for x's
    device (linear layers cast to it, whatever x is), else x's own. An additive mask must match it: a float32 mask
    beside bf16 queries keeps scaled_dot_product_attention off its fused kernels."""
    kind = x.device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


class FusionLayer(nn.Module):
    def __init__(self, config: BertConfig, layer_idx: int) -> None:
        super().__init__()
        self.attention = BertAttention(config, is_causal=False, layer_idx=layer_idx)
        self.crossattention = BertAttention(config, is_causal=False, layer_idx=layer_idx, is_cross_attention=True)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor,
                image_mask: torch.Tensor | None) -> torch.Tensor:
        h, _ = self.attention(hidden, text_mask)
        h, _ = self.crossattention(h, None, encoder_hidden_states=image, encoder_attention_mask=image_mask)
        return self.output(self.intermediate(h), h)


class FusionEncoder(nn.Module):
    """The upper BERT layers of ALBEF/TCL: text tokens attend to themselves and to all image tokens."""

    def __init__(self, config: BertConfig, n_layers: int, first_layer_idx: int = 0) -> None:
        super().__init__()
        config._attn_implementation = "sdpa"
        self.layers = nn.ModuleList(FusionLayer(config, first_layer_idx + i) for i in range(n_layers))

    def forward(self, text_embeds: torch.Tensor, text_mask: torch.Tensor, image_embeds: torch.Tensor,
                image_mask: torch.Tensor | None = None) -> torch.Tensor:
        dtype = compute_dtype(text_embeds)   # the queries' dtype (bf16 under autocast), not the residual stream's
        t_mask = additive_mask(text_mask, dtype)
        # Image tokens are never padded (ALBEF's image_atts are all ones): no mask, a faster kernel.
        i_mask = None if image_mask is None else additive_mask(image_mask, dtype)
        h = text_embeds
        for layer in self.layers:
            h = layer(h, t_mask, image_embeds, i_mask)
        return h


class MLMHead(nn.Module):
    """BERT's masked-LM head: dense + activation + LayerNorm, then the word embeddings (tied) plus a bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.predictions = _Predictions(config)
        self._embeddings = [word_embeddings]  # a reference, not a registered submodule: weights stay tied

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.predictions.transform(hidden)
        return F.linear(h, self._embeddings[0].weight, self.predictions.bias)


class _Predictions(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.transform = _Transform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))


class _Transform(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))
