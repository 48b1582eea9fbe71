"""Offline tokenizer (incl. the 5-token trap) and towers loading local weights strictly."""

from __future__ import annotations

import random
import string
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from vlpbench.methods.tokenizer import SPECIAL_TOKENS, TextTokenizer, TokenizerError, word_counts
from vlpbench.methods.towers import TextTower, TextTowerConfig, VisionTower, VisionTowerConfig, WeightsError

CORPUS = ["a red circle to the left of a blue square", "two green stars", "a small yellow ring above a cross"] * 20


def test_wordpiece_training_is_deterministic_and_offline() -> None:
    a = TextTokenizer.train_wordpiece(CORPUS, vocab_size=200)
    b = TextTokenizer.train_wordpiece(CORPUS, vocab_size=200)
    assert a.fingerprint() == b.fingerprint()
    assert a.backend.encode("A Red CIRCLE").tokens == ["[CLS]", "a", "red", "circle", "[SEP]"]
    assert (a.pad_id, a.unk_id, a.cls_id, a.sep_id, a.mask_id) == tuple(range(5))


def _tokenizers_word_counts(texts: list[str]) -> Counter[str]:
    """The reference: BERT's normalizer and pre-tokenizer from `tokenizers`, one text at a time."""
    probe = Tokenizer(models.WordPiece({"[UNK]": 0}, unk_token="[UNK]"))
    probe.normalizer = normalizers.BertNormalizer(lowercase=True)
    probe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    out: Counter[str] = Counter()
    for text in texts:
        out.update(w for w, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(text)))
    return out


def test_word_counts_equal_the_bert_normalizer_and_pre_tokenizer() -> None:
    rng = random.Random(0)
    alphabet = string.ascii_letters + string.digits + string.punctuation + "   "
    printable = [
        "A Red CIRCLE, left of a blue square.", "x-ray's (big) [box]; {a}|b~c`d^e_f@g#h$i%j&k*l+m=n<o>p?q/r\\s\"t",
        "", "   ", "multiple   spaces  here ", "...!!!", "don't", "3.14 and 2,718",
        *("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300))]
    # not printable ASCII: through tokenizers' own normalizer (accents, CJK, controls, tabs and newlines)
    others = ["Café CRÈME brûlée", "naïve\tTAB\nnew line\r", "漢字 mixed 汉字", "nul\x00byte and bell\x07",
              "vertical\x0btab \x0cfeed", "ﬁ ligature — em dash “quotes”", "ΣΊΣΥΦΟΣ", "\u00a0nbsp\u2003em space"]
    texts = printable + others
    rng.shuffle(texts)
    assert word_counts(texts) == _tokenizers_word_counts(texts)
    assert word_counts(printable) == _tokenizers_word_counts(printable)
    assert word_counts(["A b, A!"]) == Counter({"a": 2, "b": 1, ",": 1, "!": 1})


def test_padding_truncation_keeps_sep() -> None:
    tok = TextTokenizer.train_wordpiece(CORPUS, vocab_size=200)
    batch = tok(["a red circle", "a red circle to the left of a blue square"], max_length=6)
    assert batch.input_ids.shape == (2, 6)
    assert batch.input_ids[0].tolist()[:5] == [tok.cls_id, *tok.backend.encode("a red circle").ids[1:-1], tok.sep_id]
    assert batch.input_ids[0, 5] == tok.pad_id and batch.attention_mask[0].tolist() == [1, 1, 1, 1, 1, 0]
    assert batch.input_ids[1, -1] == tok.sep_id and batch.attention_mask[1].sum() == 6


def test_save_load_round_trip(tmp_path: Path) -> None:
    tok = TextTokenizer.train_wordpiece(CORPUS, vocab_size=200)
    tok.save(tmp_path)
    again = TextTokenizer.from_dir(tmp_path)
    assert again.fingerprint() == tok.fingerprint()
    assert torch.equal(again(["two green stars"], 8).input_ids, tok(["two green stars"], 8).input_ids)


def test_vocab_txt_directory_loads_wordpiece(tmp_path: Path) -> None:
    words = list(SPECIAL_TOKENS) + ["a", "red", "circle", "##s", "blue"] + [f"w{i}" for i in range(40)]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = TextTokenizer.from_dir(tmp_path)
    assert tok.backend.encode("red circles").tokens == ["[CLS]", "red", "circle", "##s", "[SEP]"]


def test_five_token_vocab_trap_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS) + "\n")
    with pytest.raises(TokenizerError, match=f"{tmp_path}.*only 5 tokens"):
        TextTokenizer.from_dir(tmp_path)


def test_missing_tokenizer_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no tokenizer in .*nothing-here"):
        TextTokenizer.from_dir(tmp_path / "nothing-here")


VIT = dict(image_size=32, patch_size=8, width=32, depth=2, heads=2)


def test_vision_tower_loads_local_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = VisionTower(VisionTowerConfig(**VIT)).eval()
    save_file(src.vit.state_dict(), str(tmp_path / "vit.safetensors"))
    torch.save(src.vit.state_dict(), tmp_path / "vit.pth")
    x = torch.randn(2, 3, 32, 32)
    for name in ("vit.safetensors", "vit.pth"):
        torch.manual_seed(1)
        dst = VisionTower(VisionTowerConfig(**VIT, weights=str(tmp_path / name))).eval()
        torch.testing.assert_close(dst(x).pooled, src(x).pooled, rtol=0, atol=0)
    out = src(x)
    assert out.tokens.shape == (2, 1 + 16, 32) and torch.equal(out.pooled, out.tokens[:, 0])


def test_mismatched_weights_are_refused_with_the_keys(tmp_path: Path) -> None:
    deeper = VisionTower(VisionTowerConfig(**{**VIT, "depth": 3}))
    save_file(deeper.vit.state_dict(), str(tmp_path / "deeper.safetensors"))
    with pytest.raises(WeightsError, match=r"unexpected: blocks\.2\."):
        VisionTower(VisionTowerConfig(**VIT, weights=str(tmp_path / "deeper.safetensors")))
    with pytest.raises(WeightsError, match="does not exist"):
        VisionTower(VisionTowerConfig(**VIT, weights=str(tmp_path / "absent.pth")))


def test_bert_text_tower_pools_cls_and_clip_pools_eot() -> None:
    ids = torch.tensor([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]])
    mask = (ids != 0).long()
    bert = TextTower(TextTowerConfig(arch="bert", width=32, depth=1, heads=2, dropout=0.0), 50, 0, 2, 3).eval()
    out = bert(ids, mask)
    assert torch.equal(out.pooled, out.tokens[:, 0])
    clip = TextTower(TextTowerConfig(arch="clip", width=32, depth=1, heads=2, max_length=8), 50, 0, 2, 3).eval()
    out = clip(ids, mask)
    assert torch.equal(out.pooled[0], out.tokens[0, 3]) and torch.equal(out.pooled[1], out.tokens[1, 2])


@pytest.mark.parametrize("arch", ["bert", "clip"])
def test_text_tower_loads_a_local_hf_directory(tmp_path: Path, arch: str) -> None:
    cfg = TextTowerConfig(arch=arch, width=32, depth=1, heads=2, max_length=8, dropout=0.0)
    torch.manual_seed(0)
    src = TextTower(cfg, 50, 0, 2, 3).eval()
    src.model.save_pretrained(tmp_path / "hf")
    torch.manual_seed(1)
    dst = TextTower(cfg.model_copy(update={"pretrained_dir": str(tmp_path / "hf")}), 50, 0, 2, 3).eval()
    ids = torch.tensor([[2, 7, 8, 3]])
    mask = torch.ones_like(ids)
    torch.testing.assert_close(dst(ids, mask).pooled, src(ids, mask).pooled, rtol=0, atol=0)
    with pytest.raises(WeightsError, match="vocab_size 50 but the tokenizer has 60"):
        TextTower(cfg.model_copy(update={"pretrained_dir": str(tmp_path / "hf")}), 60, 0, 2, 3)


def test_a_local_hf_directory_that_lacks_weights_is_refused_and_loading_logs_no_report(tmp_path: Path) -> None:
    """transformers fills missing weights at random and only logs a report: the harness refuses instead, and
    keeps transformers' report about the keys it drops on purpose (the pooler) out of its log."""
    import logging

    from transformers import BertForMaskedLM

    from vlpbench.methods.bert_mlm import BertWithMLM

    cfg = TextTowerConfig(arch="bert", width=32, depth=1, heads=2, max_length=8, dropout=0.0)
    src = TextTower(cfg, 50, 0, 2, 3)
    src.model.save_pretrained(tmp_path / "encoder-only")        # no MLM head
    BertForMaskedLM(src.model.config).save_pretrained(tmp_path / "mlm")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append                                # type: ignore[method-assign]
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    level = hf_logger.level
    hf_logger.setLevel(logging.WARNING)     # transformers' default (this test session starts it at error)
    try:
        TextTower(cfg.model_copy(update={"pretrained_dir": str(tmp_path / "mlm")}), 50, 0, 2, 3)   # pooler dropped
        BertWithMLM(cfg.model_copy(update={"pretrained_dir": str(tmp_path / "mlm")}), 50, 0, 2, 3)
    finally:
        hf_logger.removeHandler(handler)
        hf_logger.setLevel(level)
    assert not [r for r in records if "LOAD REPORT" in r.getMessage()]
    with pytest.raises(WeightsError, match=r"encoder-only lacks 6 weight\(s\) a BertForMaskedLM needs "
                                           r"\(cls\.predictions\.bias, cls\.predictions\.decoder\.bias"):
        BertWithMLM(cfg.model_copy(update={"pretrained_dir": str(tmp_path / "encoder-only")}), 50, 0, 2, 3)
