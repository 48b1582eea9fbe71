"""What every loader of local files needs: one error type, one file hash, JSON/JSONL reading and image decoding
that say which file is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vlpbench.methods.config import sha256_json


class DatasetError(ValueError):
    """Bad or missing dataset input; the message names the file (and field or item) and the fix."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def combined_fingerprint(parts: dict[str, str]) -> str:
    """One sha256 over named file hashes (order-independent)."""
    return sha256_json(parts)


def read_json(path: Path, what: str) -> Any:
    """Parse a JSON file; a missing, truncated or malformed file raises DatasetError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} is missing: {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); re-export the file "
                           "as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                           "the file is truncated or corrupt — download or extract it again") from None


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for every non-empty line of a JSON-lines file."""
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({err.msg}); each line must be one JSON "
                                   "object") from None


ResizeMode = Literal["squash", "shortest"]


def resize_pil(im: Any, size: int, resize: ResizeMode) -> Any:
    """A Pillow image to (size, size), bicubic: ``squash`` resizes to the square, aspect not kept (the ALBEF/TCL/LAVIS
    retrieval transform ``Resize((size, size))``); ``shortest`` resizes the shorter side to ``size`` and takes the
    centre square (CLIP's ``Resize(size)`` + ``CenterCrop(size)``, open_clip ``transform.py`` with resize_mode
    'shortest', transformers' ``CLIPImageProcessor``), with torchvision's size and crop-offset arithmetic."""
    from PIL import Image

    if resize == "squash":
        return im.resize((size, size), Image.Resampling.BICUBIC)
    w, h = im.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return im.crop((left, top, left + size, top + size))


def decode_image(data: bytes | Path, size: int, where: str, resize: ResizeMode = "squash") -> np.ndarray:
    """(size, size, 3) uint8 RGB, decoded with Pillow and resized bicubically (`resize_pil`)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            rgb = resize_pil(im.convert("RGB"), size, resize)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{where}: cannot decode the image ({err}); replace the file or remove its "
                           "annotation") from None


def check_image_header(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, after a structural check that decodes no pixels (Pillow's
    verify; a JPEG must end with its end-of-image marker, which a cut download lacks). Fast enough for every image
    of a split; `decode_image` is the full check."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size, fmt = im.size, im.format
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable image ({err}); replace the file or remove its annotation") from None
    if fmt == "JPEG":
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 64))
            if b"\xff\xd9" not in f.read():
                raise DatasetError(f"{path}: a truncated JPEG (no end-of-image marker); download the file again or "
                                   "remove its annotation")
    if min(size) < 1:
        raise DatasetError(f"{path}: an image of size {size}; replace the file or remove its annotation")
    return size


class FileImages:
    """An ImageSource over image files, decoded on access and resized to one square size (`resize_pil`)."""

    def __init__(self, paths: Sequence[Path], size: int, resize: ResizeMode = "squash") -> None:
        self.paths = list(paths)
        self.size = int(size)
        self.resize: ResizeMode = resize

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        for k, i in enumerate(idx):
            path = self.paths[int(i)]
            if not path.is_file():
                raise DatasetError(f"{path}: the image file is missing; restore it or remove its annotation "
                                   "(`vlpbench data verify` lists every missing file)")
            out[k] = decode_image(path, self.size, str(path), self.resize)
        return out
