"""A BERT text tower with its masked-LM head, loadable from a local BertForMaskedLM directory.

Two-stream methods that predict masked words from one stream (COTS's CMLM; SCALE's MLM) need the
text tower and BERT's prediction head together; ALBEF-style fusion methods split the BERT
instead (methods/tcl_checkpoint.py). The head's decoder is tied to the word embeddings.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import BertForMaskedLM

from vlpbench.methods.fusion import MLMHead
from vlpbench.methods.towers import TextTower, TextTowerConfig, TowerOutput, WeightsError, load_local_hf


class BertWithMLM(nn.Module):
    def __init__(self, config: TextTowerConfig, vocab_size: int, pad_id: int, cls_id: int, sep_id: int) -> None:
        super().__init__()
        if config.arch != "bert":
            raise ValueError("a masked-LM head needs a BERT text tower: text.arch must be 'bert'")
        self.tower = TextTower(config.model_copy(update={"pretrained_dir": None}), vocab_size, pad_id, cls_id, sep_id)
        self.mlm = MLMHead(self.tower.model.config, self.tower.model.embeddings.word_embeddings)
        if config.pretrained_dir:
            self.load_bert(Path(config.pretrained_dir), vocab_size)

    @property
    def width(self) -> int:
        return self.tower.width

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TowerOutput:
        return self.tower(input_ids, attention_mask)

    def load_bert(self, directory: Path, vocab_size: int) -> None:
        """Encoder and prediction head from a BertForMaskedLM directory (bert-base-uncased or the unimodal stage)."""
        bert = load_local_hf(BertForMaskedLM, directory, vocab_size, "text.pretrained_dir")
        state: dict[str, torch.Tensor] = {}
        for key, value in bert.state_dict().items():
            if key.startswith("bert.pooler.") or key.startswith("cls.predictions.decoder."):
                continue  # no pooler here; the decoder is the (tied) word embeddings
            if key.startswith("bert."):
                state["tower.model." + key[len("bert."):]] = value
            elif key.startswith("cls.predictions."):
                state["mlm.predictions." + key[len("cls.predictions."):]] = value
            else:
                state[key] = value
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or shape:
            raise WeightsError(f"BERT weights from {directory} do not fit a BERT with an MLM head: missing "
                               f"{missing[:8]}, unexpected {unexpected[:8]}, other shape {shape[:8]}")
        self.load_state_dict(state, strict=True)
