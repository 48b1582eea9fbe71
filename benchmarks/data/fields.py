"""The extra inputs a method needs beyond image and caption, made from a corpus the same way for training and
evaluation (e.g. ERNIE-ViL 2.0's tags, SCALE's tables, video and audio); how a model declares them:
methods/interface.py (VLPModel: data_fields, field_builder, media_input, derive_field, field_hints)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vlpbench.benchmarks.data.media_features import media_field
from vlpbench.benchmarks.data.types import PairCorpus
from vlpbench.methods import VLPModel


def field_builder(name: str, model: VLPModel, corpus: PairCorpus, training: bool) -> Callable[[np.ndarray], object]:
    """Batch indices -> the value of extra input `name`: the model's own builder when it has one, else its media
    input made from the corpus' media (media_features.py), else the corpus' field (or one the model derives from
    the captions): arrays are indexed, strings tokenised."""
    own = model.field_builder(name, corpus, training)
    if own is not None:
        return own
    need = model.media_input(name)
    if need is not None:
        media = media_field(corpus, need)
        if media is not None:
            return media
    values = corpus.extras.get(name)
    if values is None:
        values = model.derive_field(name, list(corpus.texts))
    if isinstance(values, np.ndarray):
        array = values
        return lambda idx: torch.from_numpy(array[idx])
    if isinstance(values, list) and values and isinstance(values[0], str):
        tokens = model.tokenize(values, training=training)
        return lambda idx: tokens[torch.from_numpy(idx)].trimmed()
    hint = model.field_hints.get(name)
    raise ValueError(f"method {type(model).__name__} needs {name!r}, which the {corpus.ref.dataset} "
                     f"corpus does not provide (it has: {sorted(corpus.extras) + ['image_view2']})"
                     + (f"; {hint}" if hint else ""))
