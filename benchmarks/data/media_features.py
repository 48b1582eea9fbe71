"""Model inputs made from a corpus' video and audio (a model's `media_input`: SCALE's 'video' and 'audio').

The corpus' extras["media"] (a methods.media.MediaSource: the built-in renderer, M5Product's files) gives each
item's frames, stored frame features or waveform; the model gives what it asks for (VideoInput / AudioInput: the
frames, sizes and seconds in its config) and its own pure function from frames / waves to features. Here they are
read in chunks, turned into features once for the whole corpus and kept through the source's cache (`cached`, by
kind and the input config's key), so later jobs with the same settings reuse the same files.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vlpbench.benchmarks.data.types import PairCorpus
from vlpbench.methods.interface import AudioInput, MediaInput, VideoInput
from vlpbench.methods.media import MediaSource
from vlpbench.methods.scale_blocks import SequenceFeatures

VIDEO_CHUNK = 1024   # items read at a time
AUDIO_CHUNK = 512


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def video_features(media: MediaSource, n: int, need: VideoInput) -> tuple[np.ndarray, np.ndarray]:
    """((n, frames, dim) float16 features, (n, frames) valid) of the first n items. Cached as one array: the
    features flattened, then the valid flags (kind 'video', key: the VideoInputConfig's)."""
    v = need.config

    def compute() -> np.ndarray:
        out = np.empty((n, v.frames, v.dim), dtype=np.float16)
        valid = np.empty((n, v.frames), dtype=bool)
        for start in range(0, n, VIDEO_CHUNK):
            idx = np.arange(start, min(n, start + VIDEO_CHUNK))
            if v.input == "frames":
                frames, count = media.video_frames(idx, v.frames, v.frame_size)
                out[idx] = _numpy(need.describe(frames))
            else:
                feats, count = media.video_features(idx, v.frames, v.dim)
                out[idx] = feats
            valid[idx] = np.arange(v.frames)[None, :] < np.asarray(count)[:, None]
        return np.concatenate([out.reshape(n, -1), valid.astype(np.float16)], axis=1)

    packed = media.cached("video", v.key(), compute)
    values = packed[:, :-v.frames].reshape(n, v.frames, v.dim)
    return values, packed[:, -v.frames:].astype(bool)


def audio_features(media: MediaSource, n: int, need: AudioInput) -> tuple[np.ndarray, np.ndarray]:
    """((n, tokens, dim) float16 audio tokens, (n, tokens) valid: all) of the first n items (kind 'audio', key:
    the AudioInputConfig's)."""
    a = need.config

    def compute() -> np.ndarray:
        out = np.empty((n, a.tokens, a.dim), dtype=np.float16)
        for start in range(0, n, AUDIO_CHUNK):
            idx = np.arange(start, min(n, start + AUDIO_CHUNK))
            out[idx] = _numpy(need.tokens(media.audio_waves(idx, a.mel.sample_rate, a.seconds)))
        return out

    values = media.cached("audio", a.key(), compute)
    return values, np.ones(values.shape[:2], dtype=bool)


def media_field(corpus: PairCorpus, need: MediaInput) -> Callable[[np.ndarray], SequenceFeatures] | None:
    """Batch indices -> the batch's SequenceFeatures of a media input, every item made up front; None when the
    corpus has no media."""
    media = corpus.extras.get("media")
    if media is None:
        return None
    if isinstance(need, VideoInput):
        values, valid = video_features(media, len(corpus), need)
    else:
        values, valid = audio_features(media, len(corpus), need)
    return lambda idx: SequenceFeatures(torch.from_numpy(values[idx]).float(), torch.from_numpy(valid[idx]))
