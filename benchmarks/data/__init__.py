"""Datasets: the built-in generated world (the default) and real formats read from local files.

`open_dataset(name, root, options)` is the one entry point: ``builtin`` (generated into the cache unless a built
folder is given), ``flickr30k`` / ``coco`` (Karpathy split: ALBEF/LAVIS or Karpathy JSON), ``msrvtt`` (CLIP4Clip
layout), ``m5product`` (product records) and ``pairs`` (CSV/JSONL/WebDataset image-caption corpora). For a real
dataset ``options`` are its layout fields (file names, image size, ...) and ``root`` is required.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlpbench.benchmarks.data.builtin.build import BuiltinConfig, ensure_built
from vlpbench.benchmarks.data.builtin.dataset import BuiltinDataset
from vlpbench.benchmarks.data.files import DatasetError
from vlpbench.methods.config import validate

__all__ = ["BuiltinConfig", "BuiltinDataset", "DatasetError", "REAL_DATASETS", "open_dataset"]


def _karpathy(name: str) -> Callable[[Path, dict[str, Any]], Any]:
    def open_(root: Path, options: dict[str, Any]) -> Any:
        from vlpbench.benchmarks.data.karpathy import KarpathyDataset, KarpathyLayout

        return KarpathyDataset(name, root, validate(KarpathyLayout, options, where="dataset.options"))
    return open_


def _msrvtt(root: Path, options: dict[str, Any]) -> Any:
    from vlpbench.benchmarks.data.msrvtt import MSRVTTDataset, MSRVTTLayout

    return MSRVTTDataset(root, validate(MSRVTTLayout, options, where="dataset.options"))


def _m5product(root: Path, options: dict[str, Any]) -> Any:
    from vlpbench.benchmarks.data.m5product import M5ProductDataset, M5ProductLayout

    return M5ProductDataset(root, validate(M5ProductLayout, options, where="dataset.options"))


def _pairs(root: Path, options: dict[str, Any]) -> Any:
    from vlpbench.benchmarks.data.corpora import PairFilesDataset, PairFilesLayout

    opts = dict(options)
    name = str(opts.pop("name", "pairs"))
    return PairFilesDataset(name, root, validate(PairFilesLayout, opts, where="dataset.options"))


REAL_DATASETS: dict[str, Callable[[Path, dict[str, Any]], Any]] = {
    "flickr30k": _karpathy("flickr30k"), "coco": _karpathy("coco"), "msrvtt": _msrvtt,
    "m5product": _m5product, "pairs": _pairs}


def open_dataset(name: str, root: str | Path | None = None, options: dict[str, Any] | None = None,
                 cache_root: Path | None = None) -> Any:
    """Open a dataset by name: a real one from its root folder, or the built-in one (generated into the cache)."""
    if name in REAL_DATASETS:
        if root is None:
            raise DatasetError(f"dataset {name!r} is read from local files: give its root folder (dataset.root / "
                               "--root); nothing is downloaded")
        return REAL_DATASETS[name](Path(root), options or {})
    if name != "builtin":
        raise DatasetError(f"unknown dataset {name!r}; available: builtin, {', '.join(REAL_DATASETS)}")
    if root is not None:
        if options:
            raise DatasetError("give either dataset.root (a built folder) or dataset.options (to generate), not both")
        return BuiltinDataset(Path(root))
    cfg = validate(BuiltinConfig, options or {}, where="dataset.options")
    return BuiltinDataset(ensure_built(cfg, cache_root))
