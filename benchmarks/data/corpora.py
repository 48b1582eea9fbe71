"""Image-caption pretraining corpora from local files: CSV/TSV, JSON lines, WebDataset tar shards and Parquet.

- ``csv`` (open_clip's ``--csv-img-key filepath --csv-caption-key title`` layout, ``.tsv`` tab-separated):
  one row per pair, image paths relative to ``image_root``.
- ``jsonl``: one JSON object per line with the same two keys.
- ``webdataset``: tar shards (``{00000..00099}.tar`` brace patterns expand as in webdataset), a sample being the
  files that share a key — the member path up to the first dot of its base name — with an image
  (``jpg``/``jpeg``/``png``/``webp``) and a caption (``txt``, or ``json`` with a ``caption`` field).
- ``parquet``: Hugging Face Hub / img2dataset / `Dataset.to_parquet` files, read through `datasets`
  (benchmarks/data/parquet.py): an image column of embedded images or of paths, a caption column.

Shards are indexed once (member offsets), so images are read at random access like every other ImageSource and
sharding/resume work by sample index. A CSV/JSONL corpus is fingerprinted by its file's sha256; shards by their
member list and caption text (hashing hundreds of gigabytes of images at every run is not practical — say so
in a report that compares corpora).

We read tar files with the standard library rather than the `webdataset` package: it streams shards as an
IterableDataset, while the harness needs indexed access for deterministic per-sample augmentation and exact
resume.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from vlpbench.benchmarks.data.files import DatasetError, FileImages, combined_fingerprint, decode_image, iter_jsonl, sha256_file
from vlpbench.benchmarks.data.parquet import ParquetImages, read_parquet_pairs
from vlpbench.benchmarks.data.types import DatasetRef, PairCorpus
from vlpbench.methods.config import StrictModel

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSIONS = ("txt", "json")


class PairFilesLayout(StrictModel):
    format: Literal["auto", "csv", "jsonl", "webdataset", "parquet"] = Field(
        "auto", description="auto: from the file extension (.csv/.tsv, .jsonl, .tar, .parquet).")
    files: list[str] = Field(default_factory=lambda: ["*.csv"],
                             description="Files relative to root: names, globs or {a..b} brace patterns.")
    image_key: str = Field("image", description="CSV/Parquet column or JSON field of the image path (open_clip: "
                                                "filepath); Parquet: or of the embedded image.")
    caption_key: str = Field("caption", description="CSV/Parquet column or JSON field of the caption (open_clip: "
                                                    "title).")
    separator: str | None = Field(None, description="CSV delimiter; default ',' (.csv) or tab (.tsv).")
    image_root: str = Field(".", description="Folder CSV/JSONL image paths are relative to, under root.")
    image_size: int = Field(256, ge=16, description="Images are decoded and resized to this square.")


def expand_braces(pattern: str) -> list[str]:
    """webdataset's shard patterns: ``{000..012}`` (zero-padded numeric range) and ``{a,b}`` alternatives."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    head, body, tail = pattern[:m.start()], m.group(1), pattern[m.end():]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = int(rng.group(1)), int(rng.group(2))
        width = len(rng.group(1))
        options = [str(i).zfill(width) for i in range(lo, hi + 1)]
    else:
        options = body.split(",")
    return [p for o in options for p in expand_braces(head + o + tail)]


def resolve_files(root: Path, patterns: list[str]) -> list[Path]:
    out: list[Path] = []
    for pattern in patterns:
        for pat in expand_braces(pattern):
            if any(ch in pat for ch in "*?["):
                hits = sorted(root.glob(pat))
                if not hits:
                    raise DatasetError(f"{root / pat}: no file matches (dataset.layout.files)")
                out.extend(hits)
            else:
                p = root / pat
                if not p.is_file():
                    raise DatasetError(f"{p} is missing (dataset.layout.files lists it)")
                out.append(p)
    return out


@dataclass(frozen=True)
class TarMember:
    shard: Path
    offset: int
    size: int
    name: str


class TarImages:
    """An ImageSource over image members of tar shards (read by offset, decoded on access)."""

    def __init__(self, members: list[TarMember], size: int) -> None:
        self.members = members
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.members)

    def get(self, indices: list[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.size, self.size, 3), dtype=np.uint8)
        for k, i in enumerate(idx):
            m = self.members[int(i)]
            with m.shard.open("rb") as f:
                f.seek(m.offset)
                data = f.read(m.size)
            if len(data) != m.size:
                raise DatasetError(f"{m.shard}: member {m.name} is cut short (the shard is truncated); "
                                   "re-create or re-download the shard")
            out[k] = decode_image(data, self.size, f"{m.shard}: {m.name}")
        return out


def _sample_key(name: str) -> tuple[str, str]:
    """(key, extension) of a tar member as webdataset splits it: at the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def _caption_from(data: bytes, ext: str, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: the caption is not UTF-8 text") from None
    if ext == "json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("caption"), str):
            raise DatasetError(f"{where}: expected a JSON object with a string 'caption'")
        text = obj["caption"]
    text = text.strip()
    if not text:
        raise DatasetError(f"{where}: empty caption; drop the sample or restore its text")
    return text


def index_shard(shard: Path) -> tuple[list[TarMember], list[str]]:
    """(image members, captions) of one shard, one per sample, in shard order."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    captions: dict[str, str] = {}
    end, last = 0, None
    try:
        with tarfile.open(shard, "r:") as tar:
            for info in tar:
                end, last = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE, info.name
                if not info.isfile():
                    continue
                key, ext = _sample_key(info.name)
                samples.setdefault(key, {})[ext] = info
                if ext in CAPTION_EXTENSIONS and key not in captions:
                    f = tar.extractfile(info)
                    captions[key] = _caption_from(f.read() if f else b"", ext, f"{shard}: {info.name}")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DatasetError(f"{shard}: not a readable tar shard ({err}); the file is truncated or not a tar — "
                           "re-create or re-download it") from None
    _check_end_of_archive(shard, end, last)
    members, texts = [], []
    for key, files in samples.items():
        image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
        if image is None:
            raise DatasetError(f"{shard}: sample {key!r} has no image ({'/'.join(IMAGE_EXTENSIONS)}); it has "
                               f"{sorted(files)}")
        if key not in captions:
            raise DatasetError(f"{shard}: sample {key!r} has no caption (.txt or .json); it has {sorted(files)}")
        members.append(TarMember(shard, image.offset_data, image.size, image.name))
        texts.append(captions[key])
    return members, texts


def _check_end_of_archive(shard: Path, end: int, last: str | None) -> None:
    """A tar ends with two zero blocks after its last member; a shard cut at a member boundary (a partial copy or
    download) reads as a shorter valid tar without them, so its missing samples would go unnoticed."""
    with shard.open("rb") as f:
        f.seek(end)
        tail = f.read(2 * tarfile.BLOCKSIZE)
    if len(tail) < 2 * tarfile.BLOCKSIZE or tail.strip(b"\0"):
        after = f"after member {last!r}" if last else "at its start"
        raise DatasetError(f"{shard}: the shard ends {after} without tar's end-of-archive marker: it was cut (a "
                           "partial copy or download), so samples are missing; copy or download it again")


def _format_of(path: Path) -> str:
    ext = path.suffix.lower()
    if ext in (".csv", ".tsv"):
        return "csv"
    if ext in (".jsonl", ".ndjson"):
        return "jsonl"
    if ext == ".tar":
        return "webdataset"
    if ext == ".parquet":
        return "parquet"
    raise DatasetError(f"{path}: cannot tell the corpus format from the extension {ext!r}; set "
                       "dataset.layout.format to csv, jsonl, webdataset or parquet")


class PairFilesDataset:
    """An image-caption corpus from CSV/JSONL files or WebDataset shards (`pretrain_corpus`)."""

    def __init__(self, name: str, root: Path, layout: PairFilesLayout | None = None) -> None:
        self.name = name
        self.root = Path(root)
        self.layout = layout or PairFilesLayout()
        if not self.root.is_dir():
            raise DatasetError(f"{name}: corpus root {self.root} does not exist")
        self.files = resolve_files(self.root, self.layout.files)
        formats = {self.layout.format} if self.layout.format != "auto" else {_format_of(p) for p in self.files}
        if len(formats) != 1:
            raise DatasetError(f"{name}: dataset.layout.files mixes formats {sorted(formats)}; use one")
        self.format = formats.pop()
        self._corpus: PairCorpus | None = None

    def _rows(self, path: Path) -> list[tuple[str, str]]:
        lay = self.layout
        rows: list[tuple[str, str]] = []
        if self.format == "jsonl":
            for lineno, obj in iter_jsonl(path):
                where = f"{path}:{lineno}"
                if not isinstance(obj, dict):
                    raise DatasetError(f"{where}: expected a JSON object")
                rows.append(self._pair(obj.get(lay.image_key), obj.get(lay.caption_key), where))
            return rows
        sep = lay.separator or ("\t" if path.suffix.lower() == ".tsv" else ",")
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter=sep)
            header = reader.fieldnames or []
            for key, what in ((lay.image_key, "image_key"), (lay.caption_key, "caption_key")):
                if key not in header:
                    raise DatasetError(f"{path}: no column {key!r} (dataset.layout.{what}); the header has "
                                       f"{header}")
            for lineno, row in enumerate(reader, 2):
                rows.append(self._pair(row.get(lay.image_key), row.get(lay.caption_key), f"{path}:{lineno}"))
        return rows

    def _pair(self, image: object, caption: object, where: str) -> tuple[str, str]:
        if not isinstance(image, str) or not image.strip():
            raise DatasetError(f"{where}: no image path in {self.layout.image_key!r}")
        if not isinstance(caption, str) or not caption.strip():
            raise DatasetError(f"{where}: empty caption in {self.layout.caption_key!r}; drop the row or fill it")
        return image.strip(), caption.strip()

    def pretrain_corpus(self) -> PairCorpus:
        if self._corpus is not None:
            return self._corpus
        size = self.layout.image_size
        if self.format == "webdataset":
            members: list[TarMember] = []
            texts: list[str] = []
            digest = hashlib.sha256()
            for shard in self.files:
                m, t = index_shard(shard)
                members += m
                texts += t
                for member, text in zip(m, t):
                    digest.update(f"{shard.name}\0{member.name}\0{member.size}\0{text}\n".encode())
            fingerprint = digest.hexdigest()
            images: FileImages | TarImages | ParquetImages = TarImages(members, size)
        elif self.format == "parquet":
            images, texts, fingerprint = read_parquet_pairs(self.files, self.layout.image_key, self.layout.caption_key,
                                                            self.root / self.layout.image_root, size)
        else:
            pairs = [row for path in self.files for row in self._rows(path)]
            image_root = self.root / self.layout.image_root
            missing = [p for p, _ in pairs if not (image_root / p).is_file()]
            if missing:
                raise DatasetError(f"{self.name}: {len(missing)} of {len(pairs)} images are missing under "
                                   f"{image_root}, e.g. {image_root / missing[0]}; fix dataset.layout.image_root "
                                   "or remove their rows")
            images = FileImages([image_root / p for p, _ in pairs], size)
            texts = [c for _, c in pairs]
            fingerprint = combined_fingerprint({p.name: sha256_file(p) for p in self.files})
        if not texts:
            raise DatasetError(f"{self.name}: the corpus in {self.root} has no pairs")
        ref = DatasetRef(self.name, "pretrain", fingerprint, fingerprint)
        self._corpus = PairCorpus(ref=ref, images=images, texts=texts)
        return self._corpus

    @property
    def fingerprint(self) -> str:
        return self.pretrain_corpus().ref.fingerprint

    def ref(self, split: str = "pretrain") -> DatasetRef:
        if split != "pretrain":
            raise DatasetError(f"{self.name}: a pair corpus has one split, 'pretrain' (asked for {split!r})")
        return self.pretrain_corpus().ref

    def tokenizer_corpus(self) -> list[str]:
        return list(self.pretrain_corpus().texts)


def write_shard(path: Path, samples: list[tuple[str, bytes, str]], image_ext: str = "jpg") -> None:
    """Write a WebDataset shard of (key, encoded image, caption) samples (for tests and for converting corpora);
    image_ext names the encoding (jpg, png, webp)."""
    if image_ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"image_ext {image_ext!r}: the reader takes {IMAGE_EXTENSIONS}")
    with tarfile.open(path, "w") as tar:
        for key, image, caption in samples:
            for ext, data in ((image_ext, image), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
