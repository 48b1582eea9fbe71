"""Video and audio of built-in items, rendered from each item's scene on demand (methods/media.py's MediaSource).

Frames and waveforms are pure functions of the scene (render.py), so nothing is stored at build time; what a
model derives from all of a split's items (frame descriptors, mel tokens) is kept as one .npy per
(kind, settings) under `<dataset>/derived/<split>/`, written atomically, and reused by later jobs. A dataset
folder that cannot be written to is simply not cached into.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from vlpbench.benchmarks.data.builtin.render import render_audio, render_video
from vlpbench.benchmarks.data.builtin.scene import Scene
from vlpbench.reports.store import respect_umask


class BuiltinMedia:
    def __init__(self, scenes: Sequence[Scene], cache_dir: Path | None, fingerprint: str) -> None:
        self.scenes = list(scenes)
        self.cache_dir = cache_dir
        self.fingerprint = fingerprint   # the split's: a cache entry is tied to the items it was made from

    def __len__(self) -> int:
        return len(self.scenes)

    def video_frames(self, indices: np.ndarray, frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        clips = np.stack([render_video(self.scenes[int(i)], size, frames) for i in indices])
        return clips, np.full(len(indices), frames, dtype=np.int64)

    def video_features(self, indices: np.ndarray, frames: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        raise ValueError("the built-in dataset has video frames, not precomputed features: set video.input to "
                         "'frames' (the default)")

    def audio_waves(self, indices: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
        return np.stack([render_audio(self.scenes[int(i)], sample_rate, seconds) for i in indices])

    def cached(self, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if self.cache_dir is None:
            return compute()
        digest = hashlib.sha256(f"{self.fingerprint}\n{kind}\n{key}".encode()).hexdigest()[:16]
        path = self.cache_dir / f"{kind}-{digest}.npy"
        if path.is_file():
            return np.load(path)
        values = compute()
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".npy", dir=self.cache_dir)
            respect_umask(tmp)
            with os.fdopen(fd, "wb") as f:
                np.save(f, values, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:   # a read-only dataset folder: use the values without keeping them
            pass
        return values


class BuiltinVideos:
    """A VideoSource over a split's clips, rendered on access (frame 0 is the item's still image)."""

    def __init__(self, media: BuiltinMedia, n_frames: int, size: int) -> None:
        self.media = media
        self.n_frames = int(n_frames)
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.media)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        frames, _ = self.media.video_frames(np.asarray(indices, dtype=np.int64), self.n_frames, self.size)
        return frames
