"""Image-caption corpora stored as Parquet, read through Hugging Face `datasets`.

Parquet is how corpora travel today: Hugging Face Hub datasets (images embedded with the `Image` feature, a
``{bytes, path}`` struct per row), img2dataset/LAION metadata (image paths or keys beside the files) and
`Dataset.to_parquet` exports. `datasets` converts each file once into a memory-mapped Arrow table in its cache
(``$HF_DATASETS_CACHE``, default ``~/.cache/huggingface/datasets``), which gives the random access by row that
deterministic per-sample augmentation and exact resume need, without holding the images in memory. Nothing is
downloaded: only the local files named in ``dataset.layout.files`` are read.

The image column may hold
- an embedded image: the `Image` feature's ``{bytes, path}`` struct, or plain binary;
- a path (string), relative to ``dataset.layout.image_root`` under the corpus root (also used for an `Image`
  struct whose bytes are null).

The corpus fingerprint is the sha256 of the Parquet files, as for CSV/JSONL corpora.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlpbench.benchmarks.data.files import DatasetError, combined_fingerprint, decode_image, sha256_file


@dataclass(frozen=True)
class _Part:
    """One Parquet file's rows: their Arrow table, where they start in the corpus, how images are stored."""

    path: Path
    table: Any          # datasets.Dataset
    start: int
    kind: str           # "struct" | "binary" | "path"


class ParquetImages:
    """An ImageSource over the image column of Parquet files (decoded on access, resized to one square)."""

    def __init__(self, parts: Sequence[_Part], image_key: str, image_root: Path, size: int) -> None:
        self.parts = list(parts)
        self.image_key = image_key
        self.image_root = image_root
        self.size = int(size)
        self._starts = np.array([p.start for p in self.parts], dtype=np.int64)
        self._n = self.parts[-1].start + len(self.parts[-1].table) if self.parts else 0

    def __len__(self) -> int:
        return self._n

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        for k, i in enumerate(idx):
            if not 0 <= i < self._n:
                raise IndexError(f"row {int(i)} of a corpus of {self._n}")
            part = self.parts[int(np.searchsorted(self._starts, i, side="right")) - 1]
            row = int(i) - part.start
            value = part.table[row][self.image_key]
            out[k] = self._decode(value, part, row)
        return out

    def _decode(self, value: Any, part: _Part, row: int) -> np.ndarray:
        where = f"{part.path}: row {row}, column {self.image_key!r}"
        if part.kind == "struct" and isinstance(value, dict):
            if value.get("bytes"):
                return decode_image(bytes(value["bytes"]), self.size, where)
            value = value.get("path")
        elif part.kind == "binary" and value:
            return decode_image(bytes(value), self.size, where)
        if not isinstance(value, str) or not value:
            raise DatasetError(f"{where}: no image (neither bytes nor a path); drop the row or restore its image")
        path = self.image_root / value
        if not path.is_file():
            raise DatasetError(f"{where}: the image file {path} is missing; fix dataset.layout.image_root or "
                               "remove the row")
        return decode_image(path, self.size, f"{where} ({path})")


def _image_kind(feature: Any, path: Path, key: str) -> str:
    from datasets import Image, Value

    if isinstance(feature, Image):
        return "struct"
    if isinstance(feature, Value) and feature.dtype in ("binary", "large_binary"):
        return "binary"
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "path"
    if isinstance(feature, dict) and "bytes" in feature and "path" in feature:
        return "struct"
    raise DatasetError(f"{path}: column {key!r} is {feature}; dataset.layout.image_key must name a column of "
                       "images (the Image feature or binary bytes) or of image paths (strings)")


def read_parquet_pairs(files: Sequence[Path], image_key: str, caption_key: str, image_root: Path,
                       size: int) -> tuple[ParquetImages, list[str], str]:
    """(images, captions, fingerprint) of the Parquet files, rows in file order."""
    from datasets import Image, load_dataset
    from datasets.exceptions import DatasetGenerationError

    parts: list[_Part] = []
    texts: list[str] = []
    for path in files:
        try:
            table = load_dataset("parquet", data_files=str(path), split="train")
        except (DatasetGenerationError, OSError, ValueError) as err:
            cause = err.__cause__ or err
            raise DatasetError(f"{path}: not a readable Parquet file ({type(cause).__name__}: {cause}); the file "
                               "is truncated or not Parquet — re-create or re-download it") from None
        for key, what in ((image_key, "image_key"), (caption_key, "caption_key")):
            if key not in table.column_names:
                raise DatasetError(f"{path}: no column {key!r} (dataset.layout.{what}); the file has "
                                   f"{table.column_names}")
        kind = _image_kind(table.features[image_key], path, image_key)
        if kind == "struct" and isinstance(table.features[image_key], Image):
            table = table.cast_column(image_key, Image(decode=False))   # the stored bytes, decoded by us
        captions = table[caption_key]
        for row, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise DatasetError(f"{path}: row {row}: empty caption in {caption_key!r}; drop the row or fill it")
        if kind == "path":   # as for CSV/JSONL corpora: every missing file is found before any job starts
            names = table[image_key]
            missing = [n for n in names if not isinstance(n, str) or not (image_root / n).is_file()]
            if missing:
                raise DatasetError(f"{path}: {len(missing)} of {len(names)} images are missing under {image_root}, "
                                   f"e.g. {image_root / str(missing[0])}; fix dataset.layout.image_root or remove "
                                   "their rows")
        parts.append(_Part(path, table.select_columns([image_key]), len(texts), kind))
        texts.extend(c.strip() for c in captions)
    fingerprint = combined_fingerprint({p.name: sha256_file(p) for p in files})
    return ParquetImages(parts, image_key, image_root, size), texts, fingerprint
