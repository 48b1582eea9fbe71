"""Datasets: the built-in generated world (default) and, later, real formats from local files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.data.builtin.build import BuiltinConfig, ensure_built
from benchmarks.data.builtin.dataset import BuiltinDataset, DatasetError
from methods.config import validate

__all__ = ["BuiltinConfig", "BuiltinDataset", "DatasetError", "open_dataset"]


def open_dataset(name: str, root: str | None = None, options: dict[str, Any] | None = None,
                 cache_root: Path | None = None) -> BuiltinDataset:
    """Open a dataset by name: a given root folder, or the built-in one generated into the cache."""
    if name != "builtin":
        raise DatasetError(f"unknown dataset {name!r}; available: builtin")
    if root is not None:
        if options:
            raise DatasetError("give either dataset.root (a built folder) or dataset.options (to generate), not both")
        return BuiltinDataset(Path(root))
    cfg = validate(BuiltinConfig, options or {}, where="dataset.options")
    return BuiltinDataset(ensure_built(cfg, cache_root))
