"""Read a built dataset folder into the harness' data types."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from vlpbench.benchmarks.data.builtin.build import SPLIT_ORDER, iter_records
from vlpbench.benchmarks.data.builtin.media import BuiltinMedia, BuiltinVideos
from vlpbench.benchmarks.data.builtin.scene import Scene
from vlpbench.benchmarks.data.files import DatasetError
from vlpbench.methods.media import PRODUCT_MODALITIES
from vlpbench.benchmarks.data.types import (ArrayImages, DatasetRef, IndexedImages, LabelledImages, PairCorpus, RetrievalSplit,
                                   TextCorpus, VideoRetrievalSplit)

IMAGE_SPLITS = ("train", "val", "test")
VIDEO_SPLITS = ("video_train", "video_test")


class BuiltinDataset:
    """A generated dataset folder (see build.py for the layout)."""

    name = "builtin"

    def __init__(self, root: Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist; build it with "
                               "`vlpbench data build` or leave `root` unset to use the cache")
        manifest = root / "manifest.json"
        if not manifest.is_file():
            raise DatasetError(f"{root} is not a built-in dataset: {manifest.name} is missing "
                               "(an interrupted build? delete the folder and build again)")
        self.root = root
        self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        for split in SPLIT_ORDER:
            for fname in ("items.jsonl", "images.npy"):
                if not (root / split / fname).is_file():
                    raise DatasetError(f"{root / split / fname} is missing; the dataset folder is incomplete")

    @property
    def fingerprint(self) -> str:
        return str(self.manifest["fingerprint"])

    def ref(self, split: str) -> DatasetRef:
        return DatasetRef(self.name, split, self.manifest["splits"][split]["fingerprint"], self.fingerprint)

    def records(self, split: str) -> list[dict[str, Any]]:
        self._check_split(split)
        return list(iter_records(self.root / split))

    def images(self, split: str) -> ArrayImages:
        self._check_split(split)
        return ArrayImages(np.load(self.root / split / "images.npy", mmap_mode="r"))

    def _check_split(self, split: str) -> None:
        if split not in SPLIT_ORDER:
            raise DatasetError(f"unknown split {split!r} of the built-in dataset; splits: {', '.join(SPLIT_ORDER)}")

    @cached_property
    def _pretrain_records(self) -> list[dict[str, Any]]:
        return self.records("pretrain")

    def pretrain_corpus(self) -> PairCorpus:
        recs = self._pretrain_records
        return PairCorpus(
            ref=self.ref("pretrain"), images=self.images("pretrain"), texts=[r["alt_text"] for r in recs],
            extras={"noisy": np.array([r["noisy"] for r in recs], dtype=bool),
                    "tags": [" ".join(r["tags"]) for r in recs],
                    # another caption of the same image (ERNIE-ViL 2.0's text-view fallback): its first reference caption
                    "other_caption": [r["captions"][0] for r in recs],
                    **self._product_extras("pretrain", recs)})

    def product_corpus(self, split: str = "test") -> PairCorpus:
        """A split as products (M5Product's record shape): the alt-text as title, the image, the table, video
        and audio (rendered from the scene), the missing flags and the category label (material-shape)."""
        recs = self._pretrain_records if split == "pretrain" else self.records(split)
        return PairCorpus(ref=self.ref(split), images=self.images(split), texts=[r["alt_text"] for r in recs],
                          extras=self._product_extras(split, recs))

    def _product_extras(self, split: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
        missing = np.zeros((len(recs), len(PRODUCT_MODALITIES)), dtype=bool)
        for i, r in enumerate(recs):
            for m in r["missing"]:
                missing[i, PRODUCT_MODALITIES.index(m)] = True
        media = BuiltinMedia([Scene.from_json(r["scene"]) for r in recs], self.root / "derived" / split,
                             self.manifest["splits"][split]["fingerprint"])
        return {"category": [r["category"] for r in recs], "table": [[tuple(pv) for pv in r["table"]] for r in recs],
                "missing": missing, "media": media}

    def retrieval_split(self, split: str = "test") -> RetrievalSplit:
        if split not in IMAGE_SPLITS:
            raise DatasetError(f"image-text retrieval splits of the built-in dataset: {IMAGE_SPLITS}, not {split!r}")
        recs = self.records(split)
        texts = [c for r in recs for c in r["captions"]]
        txt2img = np.array([i for i, r in enumerate(recs) for _ in r["captions"]], dtype=np.int64)
        return RetrievalSplit(ref=self.ref(split), images=self.images(split), texts=texts, txt2img=txt2img)

    def finetune_corpus(self, split: str = "train") -> PairCorpus:
        """Every (image, reference caption) pair of a retrieval split, one row per caption, with the image id
        each caption belongs to (ALBEF/TCL's fine-tuning files have the same shape)."""
        if split not in IMAGE_SPLITS:
            raise DatasetError(f"fine-tuning splits of the built-in dataset: {IMAGE_SPLITS}, not {split!r}")
        recs = self.records(split)
        image_id = np.array([i for i, r in enumerate(recs) for _ in r["captions"]], dtype=np.int64)
        return PairCorpus(ref=self.ref(split), images=IndexedImages(self.images(split), image_id),
                          texts=[c for r in recs for c in r["captions"]], extras={"image_id": image_id})

    def video_split(self, split: str = "video_test", size: int = 64, n_frames: int | None = None
                    ) -> VideoRetrievalSplit:
        """Clips with their video captions (several per clip: v2t counts the best-ranked), frames rendered at
        `size` px; n_frames defaults to the dataset's `video_frames`."""
        if split not in VIDEO_SPLITS:
            raise DatasetError(f"video retrieval splits of the built-in dataset: {VIDEO_SPLITS}, not {split!r}")
        recs = self.records(split)
        media = BuiltinMedia([Scene.from_json(r["scene"]) for r in recs], None,
                             self.manifest["splits"][split]["fingerprint"])
        frames = int(n_frames or self.manifest["config"]["video_frames"])
        texts = [c for r in recs for c in r["video_captions"]]
        owner = np.array([i for i, r in enumerate(recs) for _ in r["video_captions"]], dtype=np.int64)
        return VideoRetrievalSplit(ref=self.ref(split), videos=BuiltinVideos(media, frames, size), texts=texts,
                                   txt2vid=owner)

    def tokenizer_corpus(self) -> list[str]:
        """Text a tokenizer may be trained on: the pretraining and training splits, never val/test."""
        out = []
        for split in ("pretrain", "train", "video_train"):
            for r in (self._pretrain_records if split == "pretrain" else self.records(split)):
                out.append(r["alt_text"])
                out.extend(r["captions"])
                out.extend(r["video_captions"])
                out.append(" ".join(r["tags"]))
                out.append(" ".join(f"{p} {v}" for p, v in r["table"]))
        return out

    def main_object_labels(self, split: str) -> list[str]:
        """One class per image, the ImageNet analogue: its most salient object ("red star")."""
        return [Scene.from_json(r["scene"]).main.label for r in self.records(split)]

    def labelled_images(self) -> LabelledImages:
        """Pretraining images labelled with their main object (held out: val), for unimodal pretraining."""
        return LabelledImages(images=self.images("pretrain"), labels=self.main_object_labels("pretrain"),
                              heldout_images=self.images("val"), heldout_labels=self.main_object_labels("val"),
                              source={"train": self.ref("pretrain").to_json(), "heldout": self.ref("val").to_json(),
                                      "label": "main object (colour shape)"})

    def text_corpus(self) -> TextCorpus:
        """Text for unimodal (masked-LM) pretraining: the tokenizer corpus; held out: val captions."""
        heldout = [c for r in self.records("val") for c in r["captions"]]
        return TextCorpus(train=self.tokenizer_corpus(), heldout=heldout,
                          source={"train": "tokenizer corpus (pretrain + train + video_train text)",
                                  "heldout": self.ref("val").to_json()})
