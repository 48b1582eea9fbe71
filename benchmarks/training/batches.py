"""Deterministic pretraining batches: batch (epoch, step) is a pure function of the run seed.

The order of epoch e is a permutation drawn from (seed, e); the augmentation of a sample is
seeded by (seed, e, sample index). So the data position of a checkpoint is just (epoch, step),
resuming needs no sampler state, and the stream is the same whatever the number of workers.
Texts are tokenised once up front with the model's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vlpbench.benchmarks.data.fields import field_builder
from vlpbench.benchmarks.data.types import PairCorpus
from vlpbench.methods import PretrainBatch, TokenBatch, VLPModel

_MIX = np.uint64(0x9E3779B97F4A7C15)


def sample_seeds(seed: int, epoch: int, indices: np.ndarray, stream: int = 0) -> list[int]:
    """Per-sample augmentation seeds, distinct across (seed, epoch, index, stream)."""
    base = np.uint64((seed * 1_000_003 + epoch) * 1_000_033 + stream)
    with np.errstate(over="ignore"):
        mixed = (indices.astype(np.uint64) + np.uint64(1)) * _MIX ^ (base * np.uint64(0xBF58476D1CE4E5B9))
    return [int(x >> np.uint64(1)) for x in mixed]


class PretrainBatches:
    def __init__(self, corpus: PairCorpus, model: VLPModel, batch_size: int, seed: int,
                 fields: frozenset[str] | None = None, shard: tuple[int, int] = (0, 1)) -> None:
        """fields: the extra inputs every batch carries; default the model's pretraining data_fields (fine-tuning
        passes model.finetune_fields).

        batch_size is the global batch; shard = (rank, world size) makes batch() return this process's contiguous
        slice of it (batch_size / world rows). Order and augmentation depend on the sample, not on the process, so
        the union of the shards is exactly the one-process batch."""
        if batch_size > len(corpus):
            raise ValueError(f"batch_size {batch_size} exceeds the corpus size {len(corpus)} ({corpus.ref.split})")
        rank, world = shard
        if not 0 <= rank < world or batch_size % world:
            raise ValueError(f"the global batch {batch_size} must split evenly over {world} processes "
                             f"(rank {rank}); choose a batch size divisible by the world size")
        self.corpus = corpus
        self.batch_size = batch_size
        self.shard = (rank, world)
        self.seed = seed
        self.preprocess = model.preprocess
        tokens = model.tokenize(list(corpus.texts), training=True)
        self.input_ids, self.attention_mask = tokens.input_ids, tokens.attention_mask
        self._extra_builders: dict[str, Callable[[np.ndarray, int], object]] = {}
        for name in sorted(model.data_fields if fields is None else fields):
            self._extra_builders[name] = self._builder(name, model)
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _builder(self, name: str, model: VLPModel) -> Callable[[np.ndarray, int], object]:
        if name == "image_view2":  # a second, independently augmented view of each image
            return lambda idx, epoch: self.preprocess.train(
                self.corpus.images.get(idx), sample_seeds(self.seed, epoch, idx, stream=1))
        build = field_builder(name, model, self.corpus, training=True)
        return lambda idx, epoch: build(idx)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.corpus) // self.batch_size  # drop_last: every step has a full batch

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.corpus))
            self._perm_epoch = epoch
        return self._perm

    def indices(self, epoch: int, step: int) -> np.ndarray:
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside epoch of {self.steps_per_epoch} steps")
        return self.order(epoch)[step * self.batch_size:(step + 1) * self.batch_size]

    def batch(self, epoch: int, step: int) -> PretrainBatch:
        idx = self.indices(epoch, step)
        rank, world = self.shard
        if world > 1:
            local = self.batch_size // world
            idx = idx[rank * local:(rank + 1) * local]
        images = self.preprocess.train(self.corpus.images.get(idx), sample_seeds(self.seed, epoch, idx))
        t = torch.from_numpy(idx)
        extras = {name: build(idx, epoch) for name, build in self._extra_builders.items()}
        return PretrainBatch(images=images, text=TokenBatch(self.input_ids[t], self.attention_mask[t]).trimmed(),
                             index=t, extras=extras)
