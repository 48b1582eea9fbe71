"""The shapes data takes inside the harness, independent of where it came from.

- `PairCorpus`: image-text pairs for pretraining (plus optional per-item extras).
- `RetrievalSplit`: a gallery of images and captions with ground truth, for retrieval.
- `VideoRetrievalSplit`: the same for videos (frames reached through `VideoSource`).

Images are reached through `ImageSource` (random access to uint8 HWC batches), so an in-memory
array, a memory-mapped file and a folder of JPEGs look the same to the training loop and the
evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """(len(indices), H, W, 3) uint8 images in the order given."""
        ...


@dataclass(frozen=True)
class ArrayImages:
    """An ImageSource over an (N, H, W, 3) uint8 array (memory-mapped or not)."""

    array: np.ndarray

    def __post_init__(self) -> None:
        if self.array.dtype != np.uint8 or self.array.ndim != 4 or self.array.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8 images, got {self.array.dtype} {self.array.shape}")

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        return np.ascontiguousarray(self.array[idx])


def check_ground_truth(ref: "DatasetRef", name: str, owner: np.ndarray, n_texts: int, n_gallery: int, item: str
                       ) -> None:
    """Every caption points at one gallery item, and every item has a caption."""
    owner = np.asarray(owner)
    if owner.shape != (n_texts,):
        raise ValueError(f"{name} has shape {owner.shape}, expected ({n_texts},)")
    if len(owner) and (owner.min() < 0 or owner.max() >= n_gallery):
        raise ValueError(f"{name} points outside the {item} gallery")
    missing = int((np.bincount(owner, minlength=n_gallery) == 0).sum())
    if missing:
        raise ValueError(f"{ref.dataset}/{ref.split}: {missing} {item}s have no caption")


def caption_counts(owner: np.ndarray, n_gallery: int) -> dict[str, float]:
    counts = np.bincount(np.asarray(owner), minlength=n_gallery)
    return {"min": int(counts.min()), "max": int(counts.max()), "mean": float(counts.mean())}


@dataclass(frozen=True)
class IndexedImages:
    """An ImageSource whose item i is item rows[i] of another source (one row per caption of an image)."""

    source: ImageSource
    rows: np.ndarray

    def __len__(self) -> int:
        return int(len(self.rows))

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.source.get(self.rows[np.asarray(indices, dtype=np.int64)])


@dataclass(frozen=True)
class DatasetRef:
    """Identity of a split: what a result must record to be comparable."""

    dataset: str            # e.g. "builtin", "flickr30k"
    split: str              # e.g. "test", "pretrain"
    fingerprint: str        # sha256 of the split's files
    dataset_fingerprint: str

    def to_json(self) -> dict[str, str]:
        return {"dataset": self.dataset, "split": self.split, "fingerprint": self.fingerprint,
                "dataset_fingerprint": self.dataset_fingerprint}


@dataclass(frozen=True)
class PairCorpus:
    ref: DatasetRef
    images: ImageSource
    texts: Sequence[str]
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.texts):
            raise ValueError(f"{self.ref.dataset}/{self.ref.split}: {len(self.images)} images but "
                             f"{len(self.texts)} texts")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class RetrievalSplit:
    ref: DatasetRef
    images: ImageSource
    texts: Sequence[str]
    txt2img: np.ndarray     # (N_txt,) int64: the one ground-truth image of each caption

    def __post_init__(self) -> None:
        check_ground_truth(self.ref, "txt2img", self.txt2img, len(self.texts), len(self.images), "image")

    @property
    def n_images(self) -> int:
        return len(self.images)

    @property
    def n_texts(self) -> int:
        return len(self.texts)

    def captions_per_image(self) -> dict[str, float]:
        return caption_counts(self.txt2img, self.n_images)


class VideoSource(Protocol):
    n_frames: int

    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """(len(indices), n_frames, H, W, 3) uint8 frames in the order given."""
        ...


@dataclass(frozen=True)
class VideoRetrievalSplit:
    """Videos and captions with ground truth (MSR-VTT 1k-A: one caption per video; others: several)."""

    ref: DatasetRef
    videos: VideoSource
    texts: Sequence[str]
    txt2vid: np.ndarray     # (N_txt,) int64: the one ground-truth video of each caption

    def __post_init__(self) -> None:
        check_ground_truth(self.ref, "txt2vid", self.txt2vid, len(self.texts), len(self.videos), "video")

    def captions_per_video(self) -> dict[str, float]:
        return caption_counts(self.txt2vid, self.n_videos)

    @property
    def n_videos(self) -> int:
        return len(self.videos)


@dataclass(frozen=True)
class LabelledImages:
    """Images with one class label each (the ImageNet analogue), and a held-out set to report accuracy."""

    images: ImageSource
    labels: Sequence[str]
    heldout_images: ImageSource
    heldout_labels: Sequence[str]
    source: dict[str, Any]


@dataclass(frozen=True)
class TextCorpus:
    train: Sequence[str]
    heldout: Sequence[str]
    source: dict[str, Any]
