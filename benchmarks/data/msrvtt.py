"""MSR-VTT in the CLIP4Clip layout: the JSFusion 1k-A test list and the 7k/9k training lists.

Files (CLIP4Clip's ``msrvtt_data.zip``), searched in root, root/msrvtt_data and root/annotations::

    MSRVTT_JSFUSION_test.csv   key,vid_key,video_id,sentence   1,000 rows: the 1k-A test set, one caption per video
    MSRVTT_train.9k.csv        video_id (9,000 rows)           training videos, split "train-9k"
    MSRVTT_train.7k.csv        video_id (7,010 rows)           training videos, split "train-7k"
    MSRVTT_data.json           {"videos": [...], "sentences": [{"video_id", "caption", "sen_id"}, ...]}
                               the 20 captions of every video (training captions come from here)

Videos are ``<videos>/<video_id>.mp4`` (default folder: the first of videos/all, MSRVTT_Videos, videos, root that
exists). Split identifiers name the protocol, since which split was used is a recurring confusion
(github.com/microsoft/UniVL/issues/17, github.com/m-bain/frozen-in-time/issues/28): ``1k-A`` (alias ``test``;
1k-A "val" and "test" are the same file), ``train-9k``, ``train-7k``.
"""

from __future__ import annotations

import csv
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import Field

from vlpbench.benchmarks.data.files import DatasetError, combined_fingerprint, read_json, sha256_file
from vlpbench.benchmarks.data.types import DatasetRef, VideoRetrievalSplit
from vlpbench.benchmarks.data.video import VideoFiles
from vlpbench.methods.config import StrictModel

ANNOTATION_DIRS = ("", "msrvtt_data", "annotations")
VIDEO_DIRS = ("videos/all", "MSRVTT_Videos", "videos", "")
TEST_SPLITS = ("1k-A",)
TRAIN_SPLITS = ("train-9k", "train-7k")
SPLIT_ALIASES = {"test": "1k-A", "val": "1k-A"}


class MSRVTTLayout(StrictModel):
    test_csv: str = "MSRVTT_JSFUSION_test.csv"
    train_csv: dict[str, str] = Field(default_factory=lambda: {"train-9k": "MSRVTT_train.9k.csv",
                                                               "train-7k": "MSRVTT_train.7k.csv"})
    data_json: str = "MSRVTT_data.json"
    videos: str | None = Field(None, description="Video folder relative to root; default: searched.")
    video_extension: str = "mp4"
    n_frames: int = Field(12, ge=1, description="Frames sampled uniformly per video (CLIP4Clip: max_frames 12).")
    frame_size: int = Field(224, ge=16, description="Frames are resized to this square.")


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            lacking = [c for c in columns if c not in header]
            if lacking:
                raise DatasetError(f"{path}: no column(s) {lacking}; the header has {header} (is this a CLIP4Clip "
                                   "MSR-VTT file?)")
            rows = list(reader)
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None
    for lineno, row in enumerate(rows, 2):
        for c in columns:
            if not (row.get(c) or "").strip():
                raise DatasetError(f"{path}:{lineno}: empty {c!r}; restore the row from the original file")
    return rows


class MSRVTTDataset:
    name = "msrvtt"

    def __init__(self, root: Path, layout: MSRVTTLayout | None = None) -> None:
        self.root = Path(root)
        self.layout = layout or MSRVTTLayout()
        if not self.root.is_dir():
            raise DatasetError(f"msrvtt: dataset root {self.root} does not exist")

    def _annotation(self, name: str) -> Path:
        for sub in ANNOTATION_DIRS:
            p = self.root / sub / name
            if p.is_file():
                return p
        where = ", ".join(str(self.root / d) if d else str(self.root) for d in ANNOTATION_DIRS)
        raise DatasetError(f"msrvtt: {name} not found in {where}; extract CLIP4Clip's msrvtt_data.zip into "
                           f"{self.root}")

    @cached_property
    def video_dir(self) -> Path:
        if self.layout.videos is not None:
            d = self.root / self.layout.videos
            if not d.is_dir():
                raise DatasetError(f"msrvtt: video folder {d} does not exist (dataset.layout.videos)")
            return d
        ext = self.layout.video_extension
        for sub in VIDEO_DIRS:
            d = self.root / sub
            if d.is_dir() and any(d.glob(f"video*.{ext}")):
                return d
        raise DatasetError(f"msrvtt: no video*.{ext} in any of {', '.join(VIDEO_DIRS[:-1])} or the root of "
                           f"{self.root}; set dataset.layout.videos")

    def canonical_split(self, split: str) -> str:
        split = SPLIT_ALIASES.get(split, split)
        if split not in TEST_SPLITS + TRAIN_SPLITS:
            raise DatasetError(f"msrvtt: unknown split {split!r}; use one of {', '.join(TEST_SPLITS + TRAIN_SPLITS)}")
        return split

    def files(self, split: str) -> list[Path]:
        split = self.canonical_split(split)
        if split in TEST_SPLITS:
            return [self._annotation(self.layout.test_csv)]
        return [self._annotation(self.layout.train_csv[split]), self._annotation(self.layout.data_json)]

    @cached_property
    def fingerprint(self) -> str:
        found = {}
        for name in [self.layout.test_csv, self.layout.data_json, *self.layout.train_csv.values()]:
            try:
                path = self._annotation(name)
            except DatasetError:
                continue
            found[name] = sha256_file(path)
        return combined_fingerprint(found)

    def ref(self, split: str) -> DatasetRef:
        split = self.canonical_split(split)
        parts = {p.name: sha256_file(p) for p in self.files(split)}
        return DatasetRef(self.name, split, combined_fingerprint(parts), self.fingerprint)

    def entries(self, split: str) -> tuple[list[str], list[str], list[int]]:
        """(video ids, captions, the video index of each caption) of a split, from the annotation files only."""
        split = self.canonical_split(split)
        video_ids: list[str] = []
        texts: list[str] = []
        owner: list[int] = []
        if split in TEST_SPLITS:
            index: dict[str, int] = {}
            for row in _read_csv(self._annotation(self.layout.test_csv), ("video_id", "sentence")):
                vid = row["video_id"].strip()
                if vid not in index:
                    index[vid] = len(video_ids)
                    video_ids.append(vid)
                texts.append(row["sentence"].strip())
                owner.append(index[vid])
            return video_ids, texts, owner
        csv_path = self._annotation(self.layout.train_csv[split])
        video_ids = list(dict.fromkeys(r["video_id"].strip() for r in _read_csv(csv_path, ("video_id",))))
        json_path = self._annotation(self.layout.data_json)
        data = read_json(json_path, "MSR-VTT's caption file (CLIP4Clip's msrvtt_data.zip)")
        sentences = data.get("sentences") if isinstance(data, dict) else None
        if not isinstance(sentences, list):
            raise DatasetError(f"{json_path}: expected an object with a 'sentences' list")
        by_video: dict[str, list[str]] = {}
        for k, s in enumerate(sentences):
            if not isinstance(s, dict) or not isinstance(s.get("video_id"), str) or \
                    not isinstance(s.get("caption"), str):
                raise DatasetError(f"{json_path}: sentences[{k}] needs string 'video_id' and 'caption'")
            by_video.setdefault(s["video_id"], []).append(s["caption"].strip())
        for i, vid in enumerate(video_ids):
            caps = [c for c in by_video.get(vid, []) if c]
            if not caps:
                raise DatasetError(f"{json_path}: no caption for {vid} (listed in {csv_path.name}); the caption "
                                   "file does not match the split list")
            texts.extend(caps)
            owner.extend([i] * len(caps))
        return video_ids, texts, owner

    def video_paths(self, video_ids: list[str]) -> list[Path]:
        return [self.video_dir / f"{vid}.{self.layout.video_extension}" for vid in video_ids]

    def video_split(self, split: str = "1k-A") -> VideoRetrievalSplit:
        split = self.canonical_split(split)
        video_ids, texts, owner = self.entries(split)
        paths = self.video_paths(video_ids)
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DatasetError(f"msrvtt {split}: {len(missing)} of {len(paths)} videos are missing in "
                               f"{self.video_dir}, e.g. {missing[0].name}; restore them or set dataset.layout.videos")
        return VideoRetrievalSplit(ref=self.ref(split), videos=VideoFiles(paths, self.layout.n_frames,
                                                                          self.layout.frame_size),
                                   texts=texts, txt2vid=np.asarray(owner, dtype=np.int64))

    def tokenizer_corpus(self) -> list[str]:
        return list(self.video_split("train-9k").texts)
