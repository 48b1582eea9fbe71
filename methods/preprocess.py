"""Image preprocessing that travels with the model (as open_clip's transforms do).

Input is a batch of uint8 HWC images (numpy or tensor); output is normalised float NCHW at the
model's resolution. Training augmentation is a random resized crop whose parameters come from a
per-sample seed, so a sample's augmentation depends only on (run seed, epoch, sample index): the
same under resume, under any number of loader workers and under any DDP sharding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from vlpbench.methods.config import StrictModel

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ImagePreprocessConfig(StrictModel):
    omit_when_default = frozenset({"resize_mode"})

    resolution: int = Field(ge=8)
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    train_crop_scale: tuple[float, float] = Field((0.9, 1.0), description="RandomResizedCrop area range.")
    train_crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = Field("bicubic", pattern="^(bilinear|bicubic)$")
    resize_mode: Literal["squash", "shortest"] = Field(
        "squash", description="Evaluation resize: squash = to the square, aspect not kept (ALBEF/TCL "
                              "Resize((r, r))); shortest = shorter side to r, then the centre square (CLIP). Real "
                              "datasets are decoded with it (benchmarks/data/files.py resize_pil).")


def _to_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) images, got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)


class ImagePreprocess:
    def __init__(self, config: ImagePreprocessConfig) -> None:
        self.config = config
        self._mean = torch.tensor(config.mean).view(1, 3, 1, 1)
        self._std = torch.tensor(config.std).view(1, 3, 1, 1)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std

    def eval(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Resize (antialiased; `resize_mode`) to the model resolution and normalise. Images that are already
        r x r (real datasets decode with the model's transform) are only normalised."""
        x = _to_float_nchw(images)
        r = self.config.resolution
        h, w = x.shape[-2:]
        if self.config.resize_mode == "shortest" and h != w:
            size = (r, max(r, int(r * w / h))) if h < w else (max(r, int(r * h / w)), r)
            x = F.interpolate(x, size=size, mode=self.config.interpolation, antialias=True,
                              align_corners=False).clamp_(0, 1)
            top, left = int(round((size[0] - r) / 2.0)), int(round((size[1] - r) / 2.0))
            x = x[..., top:top + r, left:left + r]
        if x.shape[-2:] != (r, r):
            x = F.interpolate(x, size=(r, r), mode=self.config.interpolation, antialias=True,
                              align_corners=False).clamp_(0, 1)
        return self._normalise(x)

    def crop_params(self, seed: int) -> tuple[float, float, float, float]:
        """(width, height, centre_x, centre_y) of the crop in [-1, 1] image coordinates."""
        rng = np.random.default_rng(seed)
        lo, hi = self.config.train_crop_scale
        log_r = (math.log(self.config.train_crop_ratio[0]), math.log(self.config.train_crop_ratio[1]))
        area = rng.uniform(lo, hi)
        ratio = math.exp(rng.uniform(*log_r))
        w = min(1.0, math.sqrt(area * ratio))
        h = min(1.0, math.sqrt(area / ratio))
        cx = rng.uniform(-(1 - w), 1 - w)
        cy = rng.uniform(-(1 - h), 1 - h)
        return w, h, cx, cy

    def train(self, images: np.ndarray | torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Random resized crop (one seeded crop per sample) to the model resolution, then normalise."""
        x = _to_float_nchw(images)
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {x.shape[0]} images")
        theta = torch.zeros(x.shape[0], 2, 3)
        for i, s in enumerate(seeds):
            w, h, cx, cy = self.crop_params(int(s))
            theta[i, 0, 0], theta[i, 0, 2], theta[i, 1, 1], theta[i, 1, 2] = w, cx, h, cy
        r = self.config.resolution
        grid = F.affine_grid(theta, [x.shape[0], 3, r, r], align_corners=False)
        out = F.grid_sample(x, grid, mode=self.config.interpolation, padding_mode="border",
                            align_corners=False).clamp_(0, 1)
        return self._normalise(out)
