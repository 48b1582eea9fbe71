"""Same-category product retrieval of a model (M5Product's protocol) on a product corpus.

Every item of the split is a query and the gallery is the split itself (the SCALE scripts' leave-one-out
setting); features come from the model's `encode_product` — one ranking per feature type (image, text,
image+text for every method; SCALE adds table, video, audio and its joint features). The metrics are the
toolkit's (product_retrieval.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from vlpbench.benchmarks.data.fields import field_builder
from vlpbench.benchmarks.data.types import PairCorpus
from vlpbench.benchmarks.evaluation.product_retrieval import ProductRetrievalProtocol, leave_one_out
from vlpbench.benchmarks.runtime import autocast, eval_mode
from vlpbench.methods import PretrainBatch, VLPModel


class ProductEvalProtocol(ProductRetrievalProtocol):
    batch_size: int = 256


@dataclass
class ProductOutcome:
    metrics: dict[str, float]            # "<feature>/mAP@K", "<feature>/Prec@K"
    feature_types: list[str]
    timings: dict[str, float]


def encode_products(model: VLPModel, corpus: PairCorpus, batch_size: int, device: torch.device, precision: str
                    ) -> dict[str, torch.Tensor]:
    builders = {name: field_builder(name, model, corpus, training=False) for name in sorted(model.product_fields)}
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for start in range(0, len(corpus), batch_size):
            idx = np.arange(start, min(start + batch_size, len(corpus)))
            batch = PretrainBatch(images=model.preprocess.eval(corpus.images.get(idx)),
                                  text=model.tokenize([corpus.texts[i] for i in idx]),
                                  index=torch.from_numpy(idx),
                                  extras={n: b(idx) for n, b in builders.items()}).to(device)
            with autocast(device, precision):
                feats = model.encode_product(batch)
            for name, f in feats.items():
                parts.setdefault(name, []).append(f.float().cpu())
    return {name: torch.cat(p) for name, p in parts.items()}


def evaluate_products(model: VLPModel, corpus: PairCorpus, protocol: ProductEvalProtocol, device: torch.device,
                      precision: str) -> ProductOutcome:
    labels = corpus.extras.get("category")
    if labels is None:
        raise ValueError(f"{corpus.ref.dataset}/{corpus.ref.split} has no category labels ('category'); "
                         "product retrieval needs one label per item")
    timings: dict[str, float] = {}
    with eval_mode(model):
        t0 = time.perf_counter()
        feats = encode_products(model, corpus, protocol.batch_size, device, precision)
        timings["encode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics: dict[str, float] = {}
    for name, f in feats.items():
        for key, value in leave_one_out(f @ f.t(), list(labels), protocol).items():
            metrics[f"{name}/{key}"] = value
    timings["rank_s"] = time.perf_counter() - t0
    return ProductOutcome(metrics=metrics, feature_types=list(feats), timings=timings)
