"""Audio features computed in-process: the M5Product mel spectrogram (SCALE's audio modality).

The M5Product toolkit turns each clip into a torchaudio `MelSpectrogram(n_mels=80, n_fft=1024,
win_length=1024, hop_length=256)` at 16 kHz — a *power* spectrogram on the HTK mel scale with a
periodic Hann window, centred frames with reflect padding, no log — and then standardises every
time frame across its mel bins ((x − mean) / (unbiased std + 1e-9)). The site's documentation says
MFCC; the code computes this (docs/research/m5product.md §2.2). We compute the same with torch.stft
and our own filterbank, so torchaudio is not a dependency. A silent (or missing, zero-imputed) clip
gives all zeros.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from vlpbench.methods.config import StrictModel


class MelConfig(StrictModel):
    sample_rate: int = Field(16000, gt=0)
    n_fft: int = Field(1024, gt=0)
    hop_length: int = Field(256, gt=0)
    n_mels: int = Field(80, gt=0)
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = Field(None, description="None = sample_rate / 2.")
    log: bool = Field(False, description="log(x + 1e-6) before normalising; the toolkit takes no log.")
    normalise: Literal["per_frame", "none"] = Field(
        "per_frame", description="per_frame: each time frame standardised across its mel bins (the toolkit).")
    tokens: Literal["time", "mel"] = Field(
        "time", description="time: one token per frame, n_mels wide (M5Product_toolkit); mel: one token per mel "
                            "bin, frames wide (SCALE_code's saved features).")


def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int) -> torch.Tensor:
    """(n_freqs, n_mels) triangular HTK-mel filters, unnormalised (torchaudio's melscale_fbanks defaults)."""
    freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)
    mel_points = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    f_pts = mel_to_hz(mel_points)
    width = f_pts[1:] - f_pts[:-1]                                   # (n_mels + 1,)
    slopes = f_pts[None, :] - freqs[:, None]                          # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / width[:-1]
    falling = slopes[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class MelSpectrogram:
    """Waveform (..., samples) at `sample_rate` -> features (..., tokens, width) as MelConfig says."""

    def __init__(self, config: MelConfig | None = None) -> None:
        self.config = config or MelConfig()
        c = self.config
        f_max = c.f_max if c.f_max is not None else c.sample_rate / 2
        self.filters = mel_filterbank(c.n_fft // 2 + 1, c.f_min, f_max, c.n_mels, c.sample_rate)
        self.window = torch.hann_window(c.n_fft, periodic=True)

    def frames(self, n_samples: int) -> int:
        return n_samples // self.config.hop_length + 1

    def power_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(..., samples) -> (..., n_mels, frames) power mel spectrogram."""
        c = self.config
        lead = wave.shape[:-1]
        flat = wave.reshape(-1, wave.shape[-1]).float()
        spec = torch.stft(flat, c.n_fft, hop_length=c.hop_length, win_length=c.n_fft, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)
        power = spec.abs() ** 2                                          # (N, n_freqs, frames)
        mel = torch.einsum("nft,fm->nmt", power, self.filters)
        return mel.reshape(*lead, c.n_mels, mel.shape[-1])

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        c = self.config
        mel = self.power_mel(wave)
        if c.log:
            mel = torch.log(mel + 1e-6)
        if c.normalise == "per_frame":
            mean = mel.mean(dim=-2, keepdim=True)
            std = mel.std(dim=-2, keepdim=True, unbiased=True) if mel.shape[-2] > 1 else torch.zeros_like(mean)
            mel = (mel - mean) / (std + 1e-9)
        return mel.transpose(-1, -2) if c.tokens == "time" else mel


def fit_length(wave: torch.Tensor, seconds: float, sample_rate: int) -> torch.Tensor:
    """Zero-pad or cut the last axis to `seconds` (the toolkit's audio_len, 12 s there)."""
    n = int(math.floor(seconds * sample_rate))
    if wave.shape[-1] >= n:
        return wave[..., :n]
    return torch.nn.functional.pad(wave, (0, n - wave.shape[-1]))
