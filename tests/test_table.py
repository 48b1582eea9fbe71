"""Property–value tables: the M5Product pv string, pair maps for entity masking, whole-pair truncation."""

from __future__ import annotations

import pytest
import torch

from vlpbench.methods.masking import mask_entities
from vlpbench.methods.table import TableFormatError, parse_pv, tokenize_tables
from vlpbench.methods.tokenizer import TextTokenizer


def test_pv_strings_parse_and_bad_ones_name_the_pair() -> None:
    assert parse_pv("shape#:#star#;#colour#:#dark red") == [("shape", "star"), ("colour", "dark red")]
    assert parse_pv("") == [] and parse_pv("-") == []                     # the dataset's 'missing' marker
    with pytest.raises(TableFormatError, match=r"item 7: pair 1 'colour red' has no '#:#'"):
        parse_pv("shape#:#star#;#colour red", where="item 7")


def test_pairs_map_to_their_tokens_and_truncation_keeps_whole_pairs(tokenizer: TextTokenizer) -> None:
    tables = [[("shape", "star"), ("colour", "red"), ("material", "glass")], []]
    batch = tokenize_tables(tokenizer, tables, max_length=32)
    row = batch.tokens.input_ids[0]
    assert int(row[0]) == tokenizer.cls_id
    n = int(batch.tokens.attention_mask[0].sum())
    assert int(row[n - 1]) == tokenizer.sep_id and batch.n_pairs.tolist() == [3, 0]
    for p, (prop, value) in enumerate(tables[0]):
        here = batch.entity_index[0] == p
        assert tokenizer.decode(row[here & ~batch.is_value[0]].tolist()) == prop
        assert tokenizer.decode(row[here & batch.is_value[0]].tolist()) == value
    assert batch.tokens.attention_mask[1].sum() == 2 and (batch.entity_index[1] == -1).all()   # [CLS] [SEP]
    # A budget that cannot hold the third pair drops it whole.
    lens = [len(tokenizer.backend.encode(t, add_special_tokens=False).ids) for pair in tables[0] for t in pair]
    short = tokenize_tables(tokenizer, tables, max_length=2 + sum(lens[:4]) + lens[4])
    assert short.n_pairs.tolist()[0] == 2 and int(short.entity_index[0].max()) == 1
    masked = mask_entities(batch.tokens.input_ids, batch.entity_index, batch.is_value, mask_id=tokenizer.mask_id,
                           probability=1.0, generator=torch.Generator().manual_seed(0))
    assert int(masked.chosen[0].sum()) > 0 and not masked.chosen[1].any()
