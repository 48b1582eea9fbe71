"""Video and audio inputs of product models (SCALE): what a clip or a sound becomes before an encoder.

This is preprocessing that travels with the model (as images do in methods/preprocess.py): the
config says how many frames, at what size, and which mel spectrogram, and the data layer renders
or reads exactly that. Two video inputs exist:
- `frames`: decoded frames, each area-resized to `frame_size` and flattened to 3·s² values in
  [-1, 1] — a fixed, parameter-free frame descriptor, our stand-in for the frozen per-second S3D
  features M5Product ships (no S3D weights offline);
- `features`: precomputed per-frame vectors of `feature_dim` (M5Product's (T, 1024) .npy files).
Audio is always a waveform turned into mel tokens in-process (methods/audio.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from vlpbench.methods.audio import MelConfig, MelSpectrogram, fit_length
from vlpbench.methods.config import StrictModel


# The five product modalities in one fixed order: the columns of every `missing` flag array (data layer and
# model alike) and SCALE's modality-graph order (SCALE_code: text, image, table/PV, video, audio).
PRODUCT_MODALITIES: tuple[str, ...] = ("text", "image", "table", "video", "audio")


class MediaSource(Protocol):
    """What a corpus offers for the video and audio of its items (its extras' "media"), by item index."""

    def video_frames(self, indices: np.ndarray, frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """((n, frames, size, size, 3) uint8 frames, zero-padded; (n,) real frame counts)."""
        ...

    def video_features(self, indices: np.ndarray, frames: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """((n, frames, dim) float features, zero-padded; (n,) real counts)."""
        ...

    def audio_waves(self, indices: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
        """(n, samples) float32 mono waveforms at sample_rate, zero-padded or cut to `seconds`."""
        ...

    def cached(self, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """compute() for every item of the corpus, stored under (kind, key) when the source can keep it."""
        ...


class VideoInputConfig(StrictModel):
    input: Literal["frames", "features"] = Field(
        "frames", description="frames: decoded frames -> resized pixel descriptors; features: precomputed vectors.")
    frames: int = Field(4, ge=1, description="Frames per clip (uniformly sampled; shorter clips are padded).")
    frame_size: int = Field(16, ge=2, description="Side of the resized frame (input: frames).")
    feature_dim: int | None = Field(None, gt=0, description="Width of precomputed features (input: features; "
                                                            "M5Product's S3D: 1024).")

    @model_validator(mode="after")
    def _dims(self) -> "VideoInputConfig":
        if self.input == "features" and self.feature_dim is None:
            raise ValueError("video.input 'features' needs video.feature_dim (the width of the stored vectors)")
        return self

    @property
    def dim(self) -> int:
        return 3 * self.frame_size ** 2 if self.input == "frames" else int(self.feature_dim or 0)

    def key(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


class AudioInputConfig(StrictModel):
    seconds: float = Field(1.0, gt=0, description="Clip length after zero-padding or cutting (M5Product: 12 s).")
    mel: MelConfig = Field(default_factory=lambda: MelConfig(n_mels=32, hop_length=512))

    @property
    def samples(self) -> int:
        return int(np.floor(self.seconds * self.mel.sample_rate))

    @property
    def tokens(self) -> int:
        frames = self.samples // self.mel.hop_length + 1
        return frames if self.mel.tokens == "time" else self.mel.n_mels

    @property
    def dim(self) -> int:
        return self.mel.n_mels if self.mel.tokens == "time" else self.samples // self.mel.hop_length + 1

    def key(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def frame_descriptors(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """(N, T, H, W, 3) uint8 -> (N, T, 3·size²) float32 in [-1, 1] (area resize, channels first)."""
    x = torch.as_tensor(np.asarray(frames))
    if x.dtype != torch.uint8 or x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, T, H, W, 3) uint8 frames, got {x.dtype} {tuple(x.shape)}")
    n, t, h, w, _ = x.shape
    flat = x.reshape(n * t, h, w, 3).permute(0, 3, 1, 2).float()
    if (h, w) != (size, size):
        flat = F.interpolate(flat, size=(size, size), mode="area")
    return (flat / 127.5 - 1.0).reshape(n, t, 3 * size * size)


def audio_tokens(waves: np.ndarray | torch.Tensor, config: AudioInputConfig) -> torch.Tensor:
    """(N, samples) mono waveforms at config.mel.sample_rate -> (N, tokens, dim) mel tokens."""
    wave = fit_length(torch.as_tensor(np.asarray(waves, dtype=np.float32)), config.seconds, config.mel.sample_rate)
    return MelSpectrogram(config.mel)(wave)
