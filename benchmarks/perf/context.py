"""What every perf section starts from: the suite's dataset, tokenizer, device and precision, and its methods or
variants built untrained (timings do not depend on the weights) with the suite's overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vlpbench.benchmarks.data import open_dataset
from vlpbench.benchmarks.pipeline import build_tokenizer, pretrain_corpus
from vlpbench.benchmarks.runtime import resolve_device, resolve_precision, seed_everything
from vlpbench.benchmarks.suite import Suite, load_suite
from vlpbench.methods import VLPModel, create_method
from vlpbench.methods.tokenizer import TextTokenizer

# The model sizes the perf sections measure on a CPU; any other (base, a plugin's larger preset) needs a GPU.
CPU_SIZES = frozenset({"cpu", "tiny"})


def needs_gpu(size: str, device: torch.device) -> bool:
    """True when `size` is too large to measure on `device` (a CPU) in a perf run."""
    return size not in CPU_SIZES and device.type != "cuda"


@dataclass
class PerfContext:
    suite: Suite
    dataset: Any
    tokenizer: TextTokenizer
    device: torch.device
    precision: str
    corpus: Any = None      # the pretraining corpus, when the section trains

    def model(self, name: str, size: str, seed: int = 0) -> VLPModel:
        """A method or variant of the suite, untrained, with its suite overrides, on the device."""
        seed_everything(seed)
        return create_method(self.suite.method_of(name), size, tokenizer=self.tokenizer,
                             overrides=self.suite.overrides_for(name, "method")).to(self.device)


def open_context(suite: Suite | None = None, with_corpus: bool = False) -> PerfContext:
    suite = suite or load_suite(None)
    device = resolve_device(suite.device)
    dataset = open_dataset(suite.dataset.name, suite.dataset.root, suite.dataset.options)
    corpus = pretrain_corpus(suite, dataset) if with_corpus else None
    return PerfContext(suite, dataset, build_tokenizer(suite, dataset, corpus), device,
                       resolve_precision(suite.precision, device), corpus)
