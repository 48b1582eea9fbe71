"""Video files decoded with PyAV: N frames sampled uniformly over the clip, resized to a square.

Sampling: the clip's frames are cut into N equal segments and the middle frame of each is kept
(``floor((i + 0.5) * T / N)``), the TSN/CLIP4Clip-style uniform sampling without randomness, so evaluation is
deterministic. The frame count T comes from the container (``stream.frames``) or, when the container does not
say (WebM), from counting the demuxed packets. A clip that decodes fewer frames than it announced repeats its
last decoded frame; a clip that decodes none is an error naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlpbench.benchmarks.data.files import DatasetError


def uniform_frame_indices(n_available: int, n: int) -> np.ndarray:
    """The middle frame of each of n equal segments of n_available frames (repeats when the clip is short)."""
    if n_available <= 0 or n <= 0:
        raise ValueError(f"need n_available > 0 and n > 0, got {n_available}, {n}")
    return np.floor((np.arange(n) + 0.5) * n_available / n).astype(np.int64)


def _frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


def decode_video(path: Path, n_frames: int, size: int) -> np.ndarray:
    """(n_frames, size, size, 3) uint8 RGB frames of one video file."""
    import av
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: the video file is missing; restore it or drop it from the split "
                           "(`vlpbench data verify` lists every missing file)")
    try:
        total = _frame_count(path)
        if total == 0:
            raise DatasetError(f"{path}: the video has no frames; re-encode or replace it")
        wanted = uniform_frame_indices(total, n_frames)
        keep = set(int(i) for i in wanted)
        frames: dict[int, np.ndarray] = {}
        last: np.ndarray | None = None
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i in keep:
                    img = frame.to_image().convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
                    frames[i] = np.asarray(img, dtype=np.uint8)
                    last = frames[i]
                if i >= int(wanted[-1]):
                    break
    except (av.FFmpegError, IndexError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: the video does not decode ({type(err).__name__}: {err}); re-encode it, e.g. "
                           "`ffmpeg -i in.mp4 -c:v libx264 out.mp4`, or drop it from the split") from None
    if last is None:
        raise DatasetError(f"{path}: no frame decoded; re-encode or replace the video")
    out = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    for k, i in enumerate(wanted):
        got = frames.get(int(i))
        if got is None:  # fewer decodable frames than the container announced
            got = last
        out[k] = got
    return out


class VideoFiles:
    """A VideoSource over video files: get(indices) -> (B, n_frames, size, size, 3) uint8."""

    def __init__(self, paths: Sequence[Path], n_frames: int, size: int) -> None:
        self.paths = list(paths)
        self.n_frames = int(n_frames)
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.n_frames, self.size, self.size, 3), dtype=np.uint8)
        for k, i in enumerate(idx):
            out[k] = decode_video(self.paths[int(i)], self.n_frames, self.size)
        return out


def write_video(path: Path, frames: np.ndarray, fps: int = 8, codec: str = "mpeg4") -> None:
    """Encode (T, H, W, 3) uint8 frames (H, W even) into a video file (tests and fixtures)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
