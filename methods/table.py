"""Property–value tables as token sequences (SCALE's table modality, M5Product's "pv" field).

A table becomes `[CLS] p1 v1 p2 v2 … [SEP]`, each property and value tokenised on its own, with
two per-token maps that masked entity modelling needs: which pair a token belongs to
(`entity_index`, -1 on [CLS]/[SEP]/[PAD]) and whether it is a value token (`is_value`).
Truncation drops whole pairs from the end, never part of one, so a masked side is always complete.

M5Product stores a table as one string "p1#:#v1#;#p2#:#v2"; `parse_pv` reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vlpbench.methods.tokenizer import TextTokenizer, TokenBatch

PAIR_SEP = "#;#"
KEY_SEP = "#:#"


class TableFormatError(ValueError):
    pass


def parse_pv(text: str, *, where: str = "pv") -> list[tuple[str, str]]:
    """Pairs of an M5Product pv string; '' or one character (the dataset's 'missing' marker) is no table."""
    if len(text.strip()) <= 1:
        return []
    pairs = []
    for i, chunk in enumerate(text.split(PAIR_SEP)):
        if not chunk.strip():
            continue
        if KEY_SEP not in chunk:
            raise TableFormatError(f"{where}: pair {i} {chunk!r} has no {KEY_SEP!r} between property and value "
                                   f"(expected 'p1{KEY_SEP}v1{PAIR_SEP}p2{KEY_SEP}v2')")
        prop, value = chunk.split(KEY_SEP, 1)
        pairs.append((prop.strip(), value.strip()))
    return pairs


@dataclass(frozen=True)
class TableBatch:
    tokens: TokenBatch
    entity_index: torch.Tensor   # (B, L) int64: the pair of each token, -1 on specials and padding
    is_value: torch.Tensor       # (B, L) bool: value tokens (False on property tokens, specials, padding)
    n_pairs: torch.Tensor        # (B,) pairs kept after truncation

    def __getitem__(self, idx: torch.Tensor | slice) -> "TableBatch":
        return TableBatch(self.tokens[idx], self.entity_index[idx], self.is_value[idx], self.n_pairs[idx])

    def to(self, device: torch.device | str) -> "TableBatch":
        return TableBatch(self.tokens.to(device), self.entity_index.to(device), self.is_value.to(device),
                          self.n_pairs.to(device))


def tokenize_tables(tokenizer: TextTokenizer, tables: Sequence[Sequence[tuple[str, str]]], max_length: int
                    ) -> TableBatch:
    if max_length < 2:
        raise ValueError("max_length must leave room for [CLS] and [SEP]")
    flat = [text for table in tables for pair in table for text in pair]
    encoded = iter(tokenizer.backend.encode_batch(flat, add_special_tokens=False) if flat else [])
    b = len(tables)
    ids = torch.full((b, max_length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((b, max_length), dtype=torch.long)
    entity = torch.full((b, max_length), -1, dtype=torch.long)
    is_value = torch.zeros((b, max_length), dtype=torch.bool)
    kept = torch.zeros(b, dtype=torch.long)
    for row, table in enumerate(tables):
        seq, ent, val = [tokenizer.cls_id], [-1], [False]
        full = False
        for pair_i in range(len(table)):
            prop, value = next(encoded).ids, next(encoded).ids
            if full or len(seq) + len(prop) + len(value) + 1 > max_length:   # + [SEP]; whole pairs only
                full = True
                continue
            seq += prop + value
            ent += [int(kept[row])] * (len(prop) + len(value))
            val += [False] * len(prop) + [True] * len(value)
            kept[row] += 1
        seq.append(tokenizer.sep_id)
        ent.append(-1)
        val.append(False)
        n = len(seq)
        ids[row, :n] = torch.tensor(seq)
        mask[row, :n] = 1
        entity[row, :n] = torch.tensor(ent)
        is_value[row, :n] = torch.tensor(val)
    return TableBatch(TokenBatch(ids, mask), entity, is_value, kept)
