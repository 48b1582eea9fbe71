"""Shared fixtures: a small built-in world, its tokenizer, and a micro CLIP that trains in seconds."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from vlpbench.benchmarks.data import BuiltinConfig, BuiltinDataset, open_dataset  # noqa: E402
from vlpbench.methods import TextTokenizer, create_method  # noqa: E402

SMALL_WORLD: dict[str, Any] = dict(n_pretrain=600, n_train=120, n_val=60, n_test=100, n_video_train=20,
                                   n_video_test=20)

# A CLIP small enough that a training step takes milliseconds (shapes as the tiny preset, fewer units).
MICRO_CLIP: dict[str, Any] = {
    "vision": {"width": 32, "depth": 1, "heads": 2, "patch_size": 16},
    "text": {"width": 32, "depth": 1, "heads": 2},
    "embed_dim": 16,
}


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vlpbench-cache")
    os.environ["VLPBENCH_CACHE"] = str(root)
    return root


@pytest.fixture(scope="session")
def small_world(cache_root: Path) -> BuiltinDataset:
    return open_dataset("builtin", options=SMALL_WORLD, cache_root=cache_root)


@pytest.fixture(scope="session")
def small_world_config() -> BuiltinConfig:
    return BuiltinConfig(**SMALL_WORLD)


@pytest.fixture(scope="session")
def tokenizer(small_world: BuiltinDataset) -> TextTokenizer:
    return TextTokenizer.train_wordpiece(small_world.tokenizer_corpus(), vocab_size=500)


@pytest.fixture
def micro_clip(tokenizer: TextTokenizer):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    return create_method("clip", "tiny", tokenizer=tokenizer, overrides=MICRO_CLIP)
