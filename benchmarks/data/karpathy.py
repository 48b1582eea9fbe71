"""Flickr30K and COCO in the Karpathy split, from the annotation files labs actually have.

Two annotation formats are read (`format: auto` tells them apart by shape):

- ``albef``: ALBEF/TCL's ``data.tar.gz`` files and LAVIS' copies — ``flickr30k_{train,val,test}.json``,
  ``coco_{train,val,test}.json`` or ``coco_karpathy_{train,val,test}.json``: a JSON list; train has one record per
  caption ``{"image": "flickr30k-images/1000092795.jpg", "caption": "...", "image_id": ...}``, val/test one record
  per image ``{"image": ..., "caption": ["...", ...]}``. Image paths are relative to the image root and carry their
  sub-folder (``flickr30k-images/``, ``val2014/``).
- ``karpathy``: the original ``dataset_flickr30k.json`` / ``dataset_coco.json``: ``{"images": [{"filename",
  "filepath" (COCO only), "split": train|val|test|restval, "sentences": [{"raw", ...}, ...]}, ...]}``. Flickr30K
  images are looked up under ``flickr30k-images/`` (the folder the Flickr30K archive extracts to), COCO's under
  ``<filepath>/`` (``train2014``/``val2014``), so both formats share one image layout. ``restval`` joins ``train``
  (Karpathy's 113,287 COCO training images) unless ``train_includes_restval`` is false.

Captions are kept raw: lower-casing, punctuation stripping and truncation belong to the method's tokenizer.
Every image of a split is checked to exist when the split is opened, so a wrong root fails at once, with the
ALBEF ``flickr30k-images/`` sub-folder trap (ALBEF #136: github.com/salesforce/ALBEF/issues/136) named when that
is what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from vlpbench.benchmarks.data.files import DatasetError, FileImages, combined_fingerprint, read_json, sha256_file
from vlpbench.benchmarks.data.types import DatasetRef, PairCorpus, RetrievalSplit
from vlpbench.methods.config import StrictModel

KARPATHY_DATASETS = ("flickr30k", "coco")
SPLITS = ("train", "val", "test")
ANNOTATION_DIRS = ("", "annotations", "data")  # where data.tar.gz / LAVIS caches put the files, relative to root


class KarpathyLayout(StrictModel):
    format: Literal["auto", "albef", "karpathy"] = Field(
        "auto", description="albef: per-split JSON lists (ALBEF/TCL/LAVIS); karpathy: one dataset_*.json.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotation file per split (albef) or under the key 'all' (karpathy), "
                                          "relative to root; default: the usual names, searched in root, "
                                          "root/annotations and root/data.")
    image_root: str = Field(".", description="Folder the annotation image paths are relative to, under root.")
    image_size: int = Field(384, ge=16, description="Images are decoded and resized to this square (ALBEF/TCL's "
                                                    "retrieval transform Resize((s, s)); the model resizes again "
                                                    "only when its resolution differs).")
    image_resize: Literal["squash", "shortest"] = Field(
        "squash", description="squash: Resize((s, s)), aspect not kept (ALBEF/TCL); shortest: shorter side to s, "
                              "centre crop (CLIP). The model's own eval transform sets it (preprocess.resize_mode).")
    train_includes_restval: bool = Field(True, description="karpathy format: COCO's 'restval' images join train.")


@dataclass(frozen=True)
class KarpathyItem:
    image: str              # path relative to the image root
    captions: tuple[str, ...]


def _candidates(name: str, split: str, fmt: str) -> list[str]:
    if fmt == "karpathy":
        return [f"dataset_{name}.json"]
    names = [f"{name}_{split}.json"]
    if name == "coco":
        names.append(f"coco_karpathy_{split}.json")
    return names


class KarpathyDataset:
    """Flickr30K or COCO (Karpathy split) under one root folder."""

    def __init__(self, name: str, root: Path, layout: KarpathyLayout | None = None) -> None:
        if name not in KARPATHY_DATASETS:
            raise DatasetError(f"unknown Karpathy-split dataset {name!r}; available: {', '.join(KARPATHY_DATASETS)}")
        self.name = name
        self.root = Path(root)
        self.layout = layout or KarpathyLayout()
        if not self.root.is_dir():
            raise DatasetError(f"{name}: dataset root {self.root} does not exist; set dataset.root to the folder "
                               f"holding the annotation files and the images")
        self.format = self._detect_format()
        self.image_root = self.root / self.layout.image_root
        self._items: dict[str, list[KarpathyItem]] = {}

    # --- annotation files -------------------------------------------------------------------------
    def _find(self, names: list[str]) -> Path | None:
        for sub in ANNOTATION_DIRS:
            for n in names:
                p = self.root / sub / n
                if p.is_file():
                    return p
        return None

    def _detect_format(self) -> str:
        if self.layout.format != "auto":
            return self.layout.format
        if "all" in self.layout.annotations or self._find([f"dataset_{self.name}.json"]) is not None:
            if not any(s in self.layout.annotations for s in SPLITS):
                return "karpathy"
        return "albef"

    def annotation_file(self, split: str) -> Path:
        if split not in SPLITS:
            raise DatasetError(f"{self.name}: unknown split {split!r}; the Karpathy splits are {', '.join(SPLITS)}")
        key = "all" if self.format == "karpathy" else split
        if key in self.layout.annotations:
            path = self.root / self.layout.annotations[key]
            if not path.is_file():
                raise DatasetError(f"{path} is missing (dataset.layout.annotations.{key}); fix the path or "
                                   "remove the entry to use the default names")
            return path
        names = _candidates(self.name, split, self.format)
        path = self._find(names)
        if path is None:
            where = ", ".join(str(self.root / d) if d else str(self.root) for d in ANNOTATION_DIRS)
            raise DatasetError(f"{self.name} {split}: no annotation file {' or '.join(names)} in {where}; "
                               f"extract ALBEF's data.tar.gz (or Karpathy's caption_datasets.zip) into "
                               f"{self.root}, or set dataset.layout.annotations.{key}")
        return path

    def available_splits(self) -> list[str]:
        out = []
        for s in SPLITS:
            try:
                self.annotation_file(s)
                out.append(s)
            except DatasetError:
                pass
        return out

    @cached_property
    def fingerprint(self) -> str:
        files = {p.name: sha256_file(p) for p in {self.annotation_file(s) for s in self.available_splits()}}
        return combined_fingerprint(files)

    def ref(self, split: str) -> DatasetRef:
        path = self.annotation_file(split)
        parts = {path.name: sha256_file(path), "split": split}
        if self.format == "karpathy":
            parts["restval"] = str(self.layout.train_includes_restval)
        return DatasetRef(self.name, f"karpathy-{split}", combined_fingerprint(parts), self.fingerprint)

    # --- records ----------------------------------------------------------------------------------
    def parse(self, split: str) -> list[KarpathyItem]:
        """The split's images with their captions, in annotation order, without looking at the image files."""
        path = self.annotation_file(split)
        data = read_json(path, f"the {self.name} {split} annotations")
        items = _parse_karpathy(data, path, split, self.layout.train_includes_restval, self.name) \
            if self.format == "karpathy" else _parse_albef(data, path)
        if not items:
            raise DatasetError(f"{path}: no {split} records; is this the right file?")
        return items

    def items(self, split: str) -> list[KarpathyItem]:
        """`parse`, with every image checked to exist (parsed and checked once per split)."""
        if split not in self._items:
            items = self.parse(split)
            self._check_images(items, self.annotation_file(split))
            self._items[split] = items
        return self._items[split]

    def _check_images(self, items: list[KarpathyItem], ann: Path) -> None:
        missing = [it.image for it in items if not (self.image_root / it.image).is_file()]
        if not missing:
            return
        first = missing[0]
        head = Path(first).parts[0] if len(Path(first).parts) > 1 else None
        hint = ""
        if head is not None and self.image_root.name == head and (self.image_root / Path(*Path(first).parts[1:])).is_file():
            hint = (f" The annotation paths already start with '{head}/' and the root points inside that folder "
                    f"(ALBEF #136): set the root (or dataset.layout.image_root) to {self.image_root.parent} "
                    "(github.com/salesforce/ALBEF/issues/136).")
        elif head is not None and (self.image_root / Path(first).name).is_file():
            hint = (f" The images lie directly in {self.image_root} but the annotation paths start with '{head}/': "
                    f"move them into {self.image_root / head}/.")
        raise DatasetError(f"{ann}: {len(missing)} of {len(items)} images are missing under {self.image_root}, "
                           f"e.g. {self.image_root / first}.{hint} `vlpbench data verify {self.name} --root "
                           f"{self.root}` lists them all.")

    # --- harness data types -----------------------------------------------------------------------
    def retrieval_split(self, split: str = "test") -> RetrievalSplit:
        items = self.items(split)
        texts = [c for it in items for c in it.captions]
        txt2img = np.repeat(np.arange(len(items)), [len(it.captions) for it in items])
        images = FileImages([self.image_root / it.image for it in items], self.layout.image_size,
                            self.layout.image_resize)
        return RetrievalSplit(ref=self.ref(split), images=images, texts=texts, txt2img=txt2img)

    def pretrain_corpus(self, split: str = "train") -> PairCorpus:
        """Every (image, caption) pair of a split, as ALBEF's fine-tuning set has them (one row per caption)."""
        items = self.items(split)
        paths = [self.image_root / it.image for it in items for _ in it.captions]
        texts = [c for it in items for c in it.captions]
        image_ids = np.repeat(np.arange(len(items)), [len(it.captions) for it in items])
        return PairCorpus(ref=self.ref(split), texts=texts,
                          images=FileImages(paths, self.layout.image_size, self.layout.image_resize),
                          extras={"image_id": image_ids})

    def tokenizer_corpus(self) -> list[str]:
        return [c for it in self.items("train") for c in it.captions]


def _caption_list(value: Any, where: str) -> tuple[str, ...]:
    caps = [value] if isinstance(value, str) else value
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise DatasetError(f"{where}: 'caption' must be a string or a list of strings, got "
                           f"{type(value).__name__}")
    caps = [c.strip() for c in caps]
    if not caps or not all(caps):
        raise DatasetError(f"{where}: an empty caption {'list' if not caps else 'string'}; restore the captions "
                           "from the original file or drop the record")
    return tuple(caps)


def _parse_albef(data: Any, path: Path) -> list[KarpathyItem]:
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of {{'image', 'caption'}} records (ALBEF/LAVIS format), "
                           f"got a {type(data).__name__}; for Karpathy's dataset_*.json set dataset.layout.format: "
                           "karpathy")
    by_image: dict[str, list[str]] = {}
    first: dict[str, int] = {}
    for k, rec in enumerate(data):
        where = f"{path}: record {k}"
        if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
            raise DatasetError(f"{where}: needs a string field 'image' (the image path relative to the image root)")
        if "caption" not in rec:
            raise DatasetError(f"{where} ({rec['image']}): no field 'caption'")
        # val/test files hold one record per image with a caption list; train files one record per caption
        if isinstance(rec["caption"], list) and rec["image"] in first:
            raise DatasetError(f"{where}: image {rec['image']} already has record {first[rec['image']]}; an "
                               "evaluation file holds each image once (its captions as one list). Remove the "
                               "duplicate record or restore the file (`vlpbench data verify` checks its sha256)")
        first.setdefault(rec["image"], k)
        by_image.setdefault(rec["image"], []).extend(_caption_list(rec["caption"], f"{where} ({rec['image']})"))
    return [KarpathyItem(image, tuple(caps)) for image, caps in by_image.items()]


def _parse_karpathy(data: Any, path: Path, split: str, restval: bool, name: str) -> list[KarpathyItem]:
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: expected Karpathy's format {{'images': [...], 'dataset': ...}}; for per-split "
                           "JSON lists set dataset.layout.format: albef")
    wanted = {split} | ({"restval"} if split == "train" and restval else set())
    items = []
    seen: dict[str, int] = {}
    for k, rec in enumerate(data["images"]):
        where = f"{path}: images[{k}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("filename"), str) or "split" not in rec:
            raise DatasetError(f"{where}: needs 'filename' and 'split'")
        if rec["split"] not in wanted:
            continue
        sentences = rec.get("sentences")
        if not isinstance(sentences, list) or not all(isinstance(s, dict) and isinstance(s.get("raw"), str)
                                                      for s in sentences):
            raise DatasetError(f"{where} ({rec['filename']}): 'sentences' must be a list of {{'raw': str, ...}}")
        folder = rec.get("filepath") or ("flickr30k-images" if name == "flickr30k" else "")
        image = f"{folder}/{rec['filename']}" if folder else rec["filename"]
        if image in seen:
            raise DatasetError(f"{where}: image {image} already appears at images[{seen[image]}] of the {split} "
                               "split; each image is listed once. Remove the duplicate or restore the file "
                               "(`vlpbench data verify` checks its sha256)")
        seen[image] = k
        items.append(KarpathyItem(image, _caption_list([s["raw"] for s in sentences], f"{where} ({image})")))
    return items
