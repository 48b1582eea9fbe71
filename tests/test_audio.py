"""The M5Product mel spectrogram: shapes, a direct DFT of one frame, a tone's bin, per-frame standardisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vlpbench.methods.audio import MelConfig, MelSpectrogram, fit_length, hz_to_mel, mel_to_hz


def test_the_toolkits_twelve_second_clip_gives_80_by_751() -> None:
    mel = MelSpectrogram()
    wave = fit_length(torch.randn(16000 * 5), 12.0, 16000)
    assert wave.shape == (192000,) and torch.equal(wave[80000:], torch.zeros(112000))
    assert mel(wave).shape == (751, 80)                                   # time tokens (toolkit)
    assert MelSpectrogram(MelConfig(tokens="mel"))(wave).shape == (80, 751)   # mel-bin tokens (SCALE_code)
    assert mel(torch.randn(3, 16000)).shape == (3, 63, 80)


def test_one_frame_equals_a_direct_dft_with_the_hann_window_and_htk_filters() -> None:
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(4000, generator=g, dtype=torch.float64).float()
    mel = MelSpectrogram(MelConfig(n_fft=256, hop_length=64, n_mels=20, sample_rate=8000))
    ours = mel.power_mel(wave)
    x = np.pad(wave.numpy().astype(np.float64), 128, mode="reflect")
    n = np.arange(256)
    hann = 0.5 - 0.5 * np.cos(2 * math.pi * n / 256)
    t = 17
    spectrum = np.abs(np.fft.rfft(x[t * 64:t * 64 + 256] * hann)) ** 2
    direct = spectrum @ mel.filters.double().numpy()
    np.testing.assert_allclose(ours[:, t].double().numpy(), direct, rtol=1e-4, atol=1e-4)


def test_a_tone_lands_in_the_mel_bin_around_its_frequency() -> None:
    mel = MelSpectrogram()
    t = torch.arange(16000) / 16000
    for freq in (300.0, 1000.0, 4000.0):
        power = mel.power_mel(torch.sin(2 * math.pi * freq * t))[:, 10]
        centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(8000.0)), 82, dtype=torch.float64))[1:-1]
        assert int(power.argmax()) in {int((centres - freq).abs().argmin()) + d for d in (-1, 0, 1)}, freq
    filters = mel.filters
    assert filters.shape == (513, 80) and float(filters.max()) <= 1.0 and bool((filters.sum(0) > 0).all())


def test_frames_are_standardised_across_mel_bins_and_silence_stays_zero() -> None:
    mel = MelSpectrogram()
    feats = mel(torch.randn(16000))
    assert torch.allclose(feats.mean(dim=-1), torch.zeros(63), atol=1e-4)
    assert torch.allclose(feats.std(dim=-1), torch.ones(63), atol=1e-3)
    assert torch.equal(mel(torch.zeros(16000)), torch.zeros(63, 80))      # missing audio, zero-imputed
    with pytest.raises(ValueError):
        MelConfig(tokens="frames")  # type: ignore[arg-type]
