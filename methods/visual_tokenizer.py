"""Discrete visual tokenizer (dVAE) for masked image modelling: COTS's CMVM, BEiT's MIM.

The encoder has DALL-E's layout (openai/DALL-E `dall_e/encoder.py`, the tokenizer BEiT uses): a
7x7 input convolution, four groups of residual blocks (widths 1, 2, 4, 8 x n_hid; 2x max-pooling
after groups 1-3, so one token per 8x8 input pixels) and a 1x1 convolution to `vocab_size` logits;
a token is the argmax. Parameter names follow DALL-E's (`blocks.group_1.block_1.res_path.conv_1.w`),
so a state dict of the released encoder (n_hid 256, 2 blocks per group, 8,192 codes; BEiT feeds it
112 px for 14x14 tokens) loads with strict key checking from a local file. At `tiny` the harness
trains a small one of the same layout (benchmarks/training/dvae.py) with the decoder below.

Pixels: images arrive in the model's normalisation; the tokenizer undoes it, resizes to its input
resolution and maps [0, 1] to [ε, 1 − ε] with ε = 0.1 (DALL-E's `map_pixels`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vlpbench.methods.config import StrictModel
from vlpbench.methods.towers import load_state_dict_file, load_weights_strict

LOGIT_LAPLACE_EPS = 0.1
GROUPS = 4                      # DALL-E's group_count; 2x pooling after each group but the last
DOWNSAMPLE = 2 ** (GROUPS - 1)  # input pixels per token side


class VisualTokenizerConfig(StrictModel):
    n_hid: int = Field(256, gt=0, description="Width of group 1 (DALL-E: 256); groups 2-4 are 2x, 4x, 8x.")
    blocks_per_group: int = Field(2, gt=0, description="Residual blocks per group (DALL-E: 2).")
    vocab_size: int = Field(8192, gt=1, description="Codebook size (DALL-E/BEiT: 8,192).")
    weights: str | None = Field(
        None, description="Local state dict of the encoder (DALL-E key names). None: the harness trains one "
                          "(`vlpbench dvae train`) and fills this in.")


def map_pixels(x: torch.Tensor) -> torch.Tensor:
    """DALL-E's input mapping of [0, 1] pixels to [ε, 1 − ε]."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * x + LOGIT_LAPLACE_EPS


def unmap_pixels(x: torch.Tensor) -> torch.Tensor:
    return ((x - LOGIT_LAPLACE_EPS) / (1 - 2 * LOGIT_LAPLACE_EPS)).clamp(0, 1)


class Conv(nn.Module):
    """DALL-E's convolution: parameters named `w` and `b`, 'same' padding, stride 1."""

    def __init__(self, n_in: int, n_out: int, kernel: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in, kernel, kernel).normal_(std=1 / (n_in * kernel ** 2) ** 0.5))
        self.b = nn.Parameter(torch.zeros(n_out))
        self.padding = (kernel - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.w, self.b, padding=self.padding)


class ResBlock(nn.Module):
    """id_path(x) + post_gain · res_path(x), res_path = 4 x (ReLU, conv) with 3x3 convs inside."""

    def __init__(self, n_in: int, n_out: int, n_layers: int) -> None:
        super().__init__()
        hid = max(1, n_out // 4)
        self.post_gain = 1.0 / n_layers ** 2
        self.id_path = Conv(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(OrderedDict([
            ("relu_1", nn.ReLU()), ("conv_1", Conv(n_in, hid, 3)),
            ("relu_2", nn.ReLU()), ("conv_2", Conv(hid, hid, 3)),
            ("relu_3", nn.ReLU()), ("conv_3", Conv(hid, hid, 3)),
            ("relu_4", nn.ReLU()), ("conv_4", Conv(hid, n_out, 1)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.id_path(x) + self.post_gain * self.res_path(x)


def _group(widths: list[tuple[int, int]], n_layers: int, tail: nn.Module | None, tail_name: str) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        (f"block_{i + 1}", ResBlock(a, b, n_layers)) for i, (a, b) in enumerate(widths))
    if tail is not None:
        layers[tail_name] = tail
    return nn.Sequential(layers)


class DVAEEncoder(nn.Module):
    """Pixels (mapped) -> (B, vocab, H/8, W/8) logits; DALL-E's encoder layout and key names."""

    def __init__(self, config: VisualTokenizerConfig) -> None:
        super().__init__()
        h, k = config.n_hid, config.blocks_per_group
        n_layers = GROUPS * k
        groups: OrderedDict[str, nn.Module] = OrderedDict(input=Conv(3, h, 7))
        prev = h
        for g in range(GROUPS):
            width = h * 2 ** g
            widths = [(prev if i == 0 else width, width) for i in range(k)]
            pool = nn.MaxPool2d(kernel_size=2) if g < GROUPS - 1 else None
            groups[f"group_{g + 1}"] = _group(widths, n_layers, pool, "pool")
            prev = width
        groups["output"] = nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=Conv(prev, config.vocab_size, 1)))
        self.blocks = nn.Sequential(groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class DVAEDecoder(nn.Module):
    """(B, vocab, h, w) soft one-hot codes -> (B, 3, 8h, 8w) mapped pixels in [0, 1] (sigmoid).

    DALL-E's decoder layout (1x1 input conv, groups of widths 8, 4, 2, 1 x n_hid, nearest 2x
    upsampling after groups 1-3); its output is a logit-Laplace mixture, ours one sigmoid image
    trained with a squared error (only the encoder is used for tokens)."""

    def __init__(self, config: VisualTokenizerConfig) -> None:
        super().__init__()
        h, k = config.n_hid, config.blocks_per_group
        n_layers = GROUPS * k
        groups: OrderedDict[str, nn.Module] = OrderedDict(input=Conv(config.vocab_size, h * 2 ** (GROUPS - 1), 1))
        prev = h * 2 ** (GROUPS - 1)
        for g in range(GROUPS):
            width = h * 2 ** (GROUPS - 1 - g)
            widths = [(prev if i == 0 else width, width) for i in range(k)]
            up = nn.Upsample(scale_factor=2, mode="nearest") if g < GROUPS - 1 else None
            groups[f"group_{g + 1}"] = _group(widths, n_layers, up, "upsample")
            prev = width
        groups["output"] = nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=Conv(prev, 3, 1)))
        self.blocks = nn.Sequential(groups)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.blocks(z))


class VisualTokenizer(nn.Module):
    """Frozen dVAE encoder: model-normalised images -> (B, grid²) token ids, row-major like ViT patches.

    It never trains inside a method: parameters take no gradient, it stays in eval mode, and
    `forward` runs under no_grad.
    """

    def __init__(self, config: VisualTokenizerConfig, grid: int, mean: tuple[float, float, float],
                 std: tuple[float, float, float]) -> None:
        super().__init__()
        self.config = config
        self.grid = grid
        self.encoder = DVAEEncoder(config)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        if config.weights:
            load_weights_strict(self.encoder, load_state_dict_file(Path(config.weights)), config.weights)
        for p in self.parameters():
            p.requires_grad_(False)
        self.train(False)

    @property
    def input_resolution(self) -> int:
        return self.grid * DOWNSAMPLE

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    def train(self, mode: bool = True) -> "VisualTokenizer":
        return super().train(False)  # frozen: no dropout/BN state to switch, and never in training mode

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Model-normalised images -> [0, 1] pixels at the tokenizer's input resolution."""
        x = (images * self.std.to(images.dtype) + self.mean.to(images.dtype)).clamp(0, 1)
        r = self.input_resolution
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
        return x

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.encoder(map_pixels(self.pixels(images)).float())
        if logits.shape[-2:] != (self.grid, self.grid):
            raise ValueError(f"tokenizer grid {tuple(logits.shape[-2:])} != the ViT's {self.grid}x{self.grid}")
        return logits.argmax(dim=1).flatten(1)
