"""M5Product-format product records from local files (the M5Product toolkit's and SCALE_code's loaders).

Layout of a dataset folder (names configurable, `M5ProductLayout`)::

    <root>/annotations.json          {item_id: {"title": str, "pv": "p1#:#v1#;#p2#:#v2", "label": str, ...}}
                                     (M5Product's *_id_label.json; the fields read are title, pv and label)
    <root>/images/<id>.jpg           the product's main image (required: every M5Product item has one)
    <root>/video_features/<id>.npy   (T, D) per-second video features, optional (M5Product: S3D, D = 1024)
    <root>/audio/<id>.wav            PCM WAV, optional (the toolkit reads .mp3: convert to WAV, no decoder here)
    <root>/items.txt                 optional: the ids of a split, one per line (default: every annotated id)

Any of title, table, video and audio may be missing for a product; it is then flagged in `missing` and the
model zero-imputes or masks it. Decoding follows the toolkit: the first T video vectors are kept; audio
channels are summed and halved (`sum(dim=0) / 2`), resampled to the model's rate (polyphase, scipy) and
cut or zero-padded. Every problem names the file, the item and what to fix.
"""

from __future__ import annotations

import hashlib
import json
import wave
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from vlpbench.benchmarks.data.files import DatasetError, FileImages, sha256_file
from vlpbench.benchmarks.data.types import DatasetRef, PairCorpus
from vlpbench.methods.config import StrictModel
from vlpbench.methods.media import PRODUCT_MODALITIES
from vlpbench.methods.table import TableFormatError, parse_pv


class M5ProductError(DatasetError):
    pass


class M5ProductLayout(StrictModel):
    annotations: str = Field("annotations.json", description="The item-id -> record JSON, relative to root.")
    images: str = "images"
    video_features: str = "video_features"
    audio: str = "audio"
    ids: str | None = Field(None, description="A file of item ids (one per line) naming the split; None = all.")
    image_size: int = Field(256, ge=16, description="Images are resized to this square (aspect not kept, as the "
                                                    "ALBEF/TCL evaluation transform does).")


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 in [-1, 1] and the sample rate of a PCM WAV file."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate, n = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError) as err:
        raise M5ProductError(f"{path}: not a readable PCM WAV file ({err}); convert it, e.g. "
                             "`ffmpeg -i clip.mp3 clip.wav`") from None
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        kind = np.int16 if width == 2 else np.int32
        data = np.frombuffer(raw, dtype=kind).astype(np.float32) / float(np.iinfo(kind).max)
    else:
        raise M5ProductError(f"{path}: {8 * width}-bit samples are not supported; use 8, 16 or 32-bit PCM")
    return data.reshape(-1, channels).T, rate


class M5ProductMedia:
    """The MediaSource of an M5Product folder: video features and WAV audio per item, zeros when absent."""

    def __init__(self, video_paths: list[Path | None], audio_paths: list[Path | None]) -> None:
        self.video_paths = video_paths
        self.audio_paths = audio_paths

    def video_frames(self, indices: np.ndarray, frames: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        raise M5ProductError("M5Product ships per-second video features, not frames: set the model's "
                             "`video: {input: features, feature_dim: 1024}`")

    def video_features(self, indices: np.ndarray, frames: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros((len(indices), frames, dim), dtype=np.float32)
        count = np.zeros(len(indices), dtype=np.int64)
        for k, i in enumerate(indices):
            path = self.video_paths[int(i)]
            if path is None:
                continue
            try:
                feats = np.load(path)
            except (OSError, ValueError) as err:
                raise M5ProductError(f"{path}: cannot read the video features ({err})") from None
            if feats.ndim != 2 or feats.shape[1] != dim:
                raise M5ProductError(f"{path}: video features of shape {feats.shape}, expected (T, {dim}); set "
                                     f"video.feature_dim to the stored width")
            n = min(frames, feats.shape[0])
            out[k, :n] = feats[:n]
            count[k] = n
        return out, count

    def audio_waves(self, indices: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
        from scipy.signal import resample_poly

        n = int(np.floor(seconds * sample_rate))
        out = np.zeros((len(indices), n), dtype=np.float32)
        for k, i in enumerate(indices):
            path = self.audio_paths[int(i)]
            if path is None:
                continue
            data, rate = read_wav(path)
            mono = data.sum(axis=0) / 2.0            # the toolkit: torch.sum(audios, dim=0) / 2
            if rate != sample_rate:
                ratio = Fraction(sample_rate, rate).limit_denominator(1000)
                mono = resample_poly(mono, ratio.numerator, ratio.denominator).astype(np.float32)
            out[k, :min(n, len(mono))] = mono[:n]
        return out

    def cached(self, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        return compute()


class M5ProductDataset:
    name = "m5product"

    def __init__(self, root: Path | str, layout: M5ProductLayout | None = None) -> None:
        self.root = Path(root)
        self.layout = layout or M5ProductLayout()
        lay = self.layout
        if not self.root.is_dir():
            raise M5ProductError(f"M5Product folder {self.root} does not exist")
        ann_path = self.root / lay.annotations
        if not ann_path.is_file():
            raise M5ProductError(f"{ann_path} is missing: the annotations (M5Product's *_id_label.json) must be at "
                                 f"{lay.annotations!r} under the root, or set layout.annotations")
        try:
            annotations = json.loads(ann_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise M5ProductError(f"{ann_path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                                 "the file may be truncated") from None
        if not isinstance(annotations, dict) or not annotations:
            raise M5ProductError(f"{ann_path}: expected a non-empty JSON object keyed by item id")
        fingerprint_parts = [sha256_file(ann_path)]
        if lay.ids is not None:
            ids_path = self.root / lay.ids
            if not ids_path.is_file():
                raise M5ProductError(f"{ids_path}: the split's id list is missing")
            ids = [line.strip() for line in ids_path.read_text(encoding="utf-8").splitlines() if line.strip()]
            unknown = [i for i in ids if i not in annotations]
            if unknown:
                raise M5ProductError(f"{ids_path}: {len(unknown)} id(s) not in {ann_path.name}, e.g. {unknown[:3]}")
            fingerprint_parts.append(sha256_file(ids_path))
            self.split = ids_path.stem
        else:
            ids = sorted(annotations)
            self.split = "all"
        self.ids = ids
        self.records = [self._record(ann_path, i, annotations[i]) for i in ids]
        self.fingerprint = hashlib.sha256("\n".join(fingerprint_parts).encode()).hexdigest()

    def _record(self, ann_path: Path, item_id: str, rec: Any) -> dict[str, Any]:
        where = f"{ann_path}: item {item_id!r}"
        if not isinstance(rec, dict):
            raise M5ProductError(f"{where}: expected an object with title, pv and label, got {type(rec).__name__}")
        label = rec.get("label")
        if label is None or (isinstance(label, str) and not label.strip()):
            raise M5ProductError(f"{where}: no 'label' (the category); every item needs one for same-category "
                                 "retrieval")
        title = rec.get("title", "")
        pv = rec.get("pv", "")
        for field, value in (("title", title), ("pv", pv)):
            if not isinstance(value, str):
                raise M5ProductError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
        try:
            table = parse_pv(pv, where=f"{where}: pv")
        except TableFormatError as err:
            raise M5ProductError(str(err)) from None
        image = self.root / self.layout.images / f"{item_id}.jpg"
        if not image.is_file():
            raise M5ProductError(f"{where}: image {image} is missing (every product needs its main image)")
        video = self.root / self.layout.video_features / f"{item_id}.npy"
        audio = self.root / self.layout.audio / f"{item_id}.wav"
        return {"id": item_id, "title": title, "table": table, "label": str(label), "image": image,
                "video": video if video.is_file() else None, "audio": audio if audio.is_file() else None}

    def ref(self) -> DatasetRef:
        return DatasetRef(self.name, self.split, self.fingerprint, self.fingerprint)

    def product_corpus(self) -> PairCorpus:
        """The split as products: title, image, table, video, audio, missing flags and category."""
        recs = self.records
        missing = np.zeros((len(recs), len(PRODUCT_MODALITIES)), dtype=bool)
        for k, r in enumerate(recs):
            missing[k, PRODUCT_MODALITIES.index("text")] = not r["title"].strip()
            missing[k, PRODUCT_MODALITIES.index("table")] = not r["table"]
            missing[k, PRODUCT_MODALITIES.index("video")] = r["video"] is None
            missing[k, PRODUCT_MODALITIES.index("audio")] = r["audio"] is None
        return PairCorpus(ref=self.ref(), images=FileImages([r["image"] for r in recs], self.layout.image_size),
                          texts=[r["title"] for r in recs],
                          extras={"category": [r["label"] for r in recs], "table": [r["table"] for r in recs],
                                  "missing": missing,
                                  "media": M5ProductMedia([r["video"] for r in recs], [r["audio"] for r in recs])})

    def pretrain_corpus(self) -> PairCorpus:
        """Pretraining reads the same records (SCALE pretrains on the products it later retrieves among)."""
        return self.product_corpus()
