"""Our tokenizers give the reference implementations' token ids exactly, offline.

- CLIP BPE vs `open_clip.tokenize` and transformers' `CLIPTokenizer` (a folder written here from
  open_clip's vocabulary), on text that exercises cleaning, Unicode, truncation and padding;
- ALBEF/TCL conventions: `pre_caption` (expected values checked against salesforce/ALBEF
  dataset/utils.py:pre_caption, commit b9727e4, and the identical copy in uta-smile/TCL) and the
  `[CLS] X` template of their vendored BERT tokenizer (reference: transformers' Python BERT
  tokenizer with that template, which truncates as theirs does);
- BERT vocab.txt vs transformers' `BertTokenizer` and its Python `BertTokenizerLegacy`.
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any

import pytest
import torch

from vlpbench.methods.clip_tokenizer import (OPEN_CLIP_MERGES, CLIPBPETokenizer, byte_alphabet, find_open_clip_bpe,
                                    read_open_clip_bpe)
from vlpbench.methods.text_clean import CleanSpecError, canonical_clean_spec, make_cleaner, open_clip_clean, pre_caption
from vlpbench.methods.tokenizer import META_FILE, SPECIAL_TOKENS, TextTokenizer, TokenizerError

HARD = [
    "A photo of a cat",
    "Café Noël, naïve façade",                                   # accents
    "東京タワーと富士山 我爱北京天安门",                              # CJK
    "犬が走る 🐶🐕‍🦺 👍🏽 🇫🇷",                                        # emoji, ZWJ sequence, modifier, flag
    "Tom &amp; Jerry &lt;3 &amp;amp; AT&T",                      # HTML entities (ftfy unescapes these)
    "<b>Tom &amp;amp; Jerry</b> x < y &quot;z&quot;",            # ftfy skips these ("<"): html.unescape twice
    "The Mona Lisa doesnâ€™t have eyebrows.",                    # mojibake ftfy repairs
    "it's don't we're they've I'm you'll he'd IT'S Can'T",       # contractions, upper case
    "“curly” ‘quotes’ ﬁne ＡＢＣ",                                 # ftfy uncurls, de-ligates, narrows
    "1234567 3.14 1,000,000 ٣٤ ½ ² 2024-01-01",                  # numbers: one digit per piece
    "wow!!! ... ?!?! --- (((x))) #$%^&* a!!b",                   # runs of punctuation
    "a\tb\nc\r\n  d   e \u00a0 f \u2028 g",                       # tabs, newlines, other spaces
    "\x1c\x1d control \x07 chars \u200b zero width",
    "İstanbul ǅ Straße ẞ x\u0301 e\u0301",                       # case mapping, combining marks
    "<start_of_text> hi <end_of_text> <|endoftext|> x<<end_of_text>",   # special-token literals
    "",
    "   ",
    "a " * 100,                                                   # longer than 77 tokens
    " ".join(f"word{i} number {i}" for i in range(60)),
]


# ---------------------------------------------------------------- CLIP: open_clip


@pytest.fixture(scope="module")
def open_clip_mod() -> Any:
    return pytest.importorskip("open_clip", reason="open_clip_torch is the reference for CLIP token ids")


@pytest.fixture(scope="module")
def oc_tok(open_clip_mod: Any) -> CLIPBPETokenizer:
    return CLIPBPETokenizer.from_open_clip()


@pytest.mark.parametrize("length", [77, 8, 2])
def test_open_clip_ids_equal_open_clip_tokenize(oc_tok: CLIPBPETokenizer, open_clip_mod: Any, length: int) -> None:
    ours = oc_tok(HARD, length)
    ref = open_clip_mod.tokenize(HARD, context_length=length)
    for i, text in enumerate(HARD):
        assert ours.input_ids[i].tolist() == ref[i].tolist(), repr(text)
    # open_clip has no mask: the real tokens run from SOT to the last EOT (texts may hold EOT literals)
    ends = length - 1 - (ref == oc_tok.sep_id).int().flip(1).argmax(dim=1)
    assert ours.attention_mask.tolist() == [[int(j <= e) for j in range(length)] for e in ends.tolist()]


def test_open_clip_known_ids_truncation_and_padding(oc_tok: CLIPBPETokenizer) -> None:
    assert (oc_tok.vocab_size, oc_tok.cls_id, oc_tok.sep_id, oc_tok.pad_id) == (49408, 49406, 49407, 0)
    batch = oc_tok(["a photo of a cat", "a photo of a cat on a red sofa"], 8)
    assert batch.input_ids.tolist() == [[49406, 320, 1125, 539, 320, 2368, 49407, 0],
                                        [49406, 320, 1125, 539, 320, 2368, 525, 49407]]
    assert batch.attention_mask.tolist() == [[1] * 7 + [0], [1] * 8]
    assert oc_tok(["&amp;"], 4).input_ids.tolist() == oc_tok(["&"], 4).input_ids.tolist()
    assert oc_tok(["<b> &amp;amp;"], 8).input_ids.tolist() == oc_tok(["<b> &"], 8).input_ids.tolist()
    ids = oc_tok(["Hello, World! it's 3.14"], 20).input_ids[0].tolist()
    assert oc_tok.decode(ids) == "hello , world ! it 's 3 . 1 4"
    assert oc_tok.special_ids == (49406, 49407)
    with pytest.raises(TokenizerError, match="no mask token"):
        oc_tok.mask_id  # noqa: B018
    with pytest.raises(ValueError, match="max_length"):
        oc_tok(["x"], 1)


@pytest.mark.parametrize("mode", ["lower", "whitespace", "canonicalize"])
def test_open_clip_cleaning_modes_equal_open_clips(open_clip_mod: Any, mode: str) -> None:
    from open_clip.tokenizer import get_clean_fn
    reference = get_clean_fn(mode)
    for text in HARD + ["snake_case_name", "Hello, World!!"]:
        assert open_clip_clean(text, mode) == reference(text), repr(text)


def test_open_clip_vocabulary_file_is_read_as_open_clip_reads_it(open_clip_mod: Any) -> None:
    vocab, merges = read_open_clip_bpe(find_open_clip_bpe())
    ref = open_clip_mod.tokenizer.SimpleTokenizer()
    assert ref.encoder == vocab
    assert len(merges) == OPEN_CLIP_MERGES and {m: i for i, m in enumerate(merges)} == ref.bpe_ranks
    assert list(byte_alphabet().values())[:3] == ["!", '"', "#"] and byte_alphabet()[ord(" ")] == "Ġ"


def test_missing_open_clip_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TokenizerError, match="bpe_simple_vocab_16e6.txt.gz not found.*Pass the file's path"):
        find_open_clip_bpe()


def test_a_file_that_is_not_the_vocabulary_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "vocab.txt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(TokenizerError, match="vocab.txt.gz is not a gzipped CLIP merges file"):
        CLIPBPETokenizer.from_open_clip(bad)


# ---------------------------------------------------------------- CLIP: Hugging Face


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory: pytest.TempPathFactory, open_clip_mod: Any) -> Path:
    """vocab.json + merges.txt in Hugging Face's CLIP format, from open_clip's own tables (not ours)."""
    ref = open_clip_mod.tokenizer.SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(t, t): i for t, i in ref.encoder.items()}
    merges = [f"{a} {b}" for (a, b), _ in sorted(ref.bpe_ranks.items(), key=lambda kv: kv[1])]
    d = tmp_path_factory.mktemp("clip_files")
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def transformers_mod() -> Any:
    return pytest.importorskip("transformers", reason="transformers' CLIPTokenizer / BertTokenizer are the references")


@pytest.fixture(scope="module")
def hf_dirs(hf_files: Path, transformers_mod: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders as `save_pretrained` writes them: pad <|endoftext|> (openai/clip-*), pad "!" (as some LAION folders
    declare in special_tokens_map.json), and vocab.json + merges.txt only."""
    root = tmp_path_factory.mktemp("clip_hf")
    tok = transformers_mod.CLIPTokenizer(str(hf_files / "vocab.json"), str(hf_files / "merges.txt"))
    tok.save_pretrained(str(root / "eot_pad"))
    bang = root / "bang_pad"
    tok.save_pretrained(str(bang))
    (bang / "special_tokens_map.json").write_text(json.dumps({"pad_token": {"content": "!", "special": True}}))
    files_only = root / "files_only"
    files_only.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (files_only / name).write_bytes((hf_files / name).read_bytes())
    return {"eot_pad": root / "eot_pad", "bang_pad": bang, "files_only": files_only}


@pytest.mark.parametrize("folder", ["eot_pad", "bang_pad", "files_only"])
@pytest.mark.parametrize("length", [77, 8])
def test_hf_ids_equal_transformers_clip_tokenizer(hf_dirs: dict[str, Path], transformers_mod: Any, folder: str,
                                                  length: int) -> None:
    ref = transformers_mod.CLIPTokenizer.from_pretrained(str(hf_dirs[folder]))
    ours = CLIPBPETokenizer.from_hf(hf_dirs[folder])
    expected = ref(HARD, padding="max_length", truncation=True, max_length=length)
    got = ours(HARD, length)
    for i, text in enumerate(HARD):
        assert got.input_ids[i].tolist() == expected["input_ids"][i], repr(text)
        assert got.attention_mask[i].tolist() == expected["attention_mask"][i], repr(text)
    assert ours.pad_id == ref.pad_token_id == (0 if folder == "bang_pad" else 49407)


def test_from_dir_recognises_a_hf_clip_folder(hf_dirs: dict[str, Path]) -> None:
    for folder in hf_dirs.values():
        tok = TextTokenizer.from_dir(folder)
        assert isinstance(tok, CLIPBPETokenizer) and tok.flavor == "hf"


def test_where_open_clip_and_hf_differ(oc_tok: CLIPBPETokenizer, hf_dirs: dict[str, Path]) -> None:
    """Same vocabulary and ids on plain text; the documented differences (cleaning, pad id, "!" when it is
    the pad token) on the rest."""
    hf = CLIPBPETokenizer.from_hf(hf_dirs["eot_pad"])
    bang = CLIPBPETokenizer.from_hf(hf_dirs["bang_pad"])
    plain = ["a photo of a cat", "two dogs playing in the snow 3 times"]
    a, b = oc_tok(plain, 77), hf(plain, 77)
    assert torch.equal(a.attention_mask, b.attention_mask)
    assert torch.equal(a.input_ids * a.attention_mask, b.input_ids * b.attention_mask)   # equal but for padding
    assert hf(["x"], 4).input_ids.tolist() == [[49406, 343, 49407, 49407]]
    assert oc_tok(["x"], 4).input_ids.tolist() == [[49406, 343, 49407, 0]]
    for text in ("Tom &amp; Jerry", "doesnâ€™t", "“curly”", "ＡＢＣ"):
        assert not torch.equal(oc_tok([text], 16).input_ids, hf([text], 16).input_ids), text
    assert oc_tok(["wow!"], 4).input_ids.tolist() == hf(["wow!"], 4).input_ids.tolist() == [[49406, 2781, 256, 49407]]
    assert bang(["wow!"], 4).input_ids.tolist() == [[49406, 2781, 0, 49407]]


# ---------------------------------------------------------------- saving, options, fingerprints


def test_clip_save_reload_round_trip(tmp_path: Path, oc_tok: CLIPBPETokenizer, hf_dirs: dict[str, Path]) -> None:
    for name, tok in (("oc", oc_tok), ("hf", CLIPBPETokenizer.from_hf(hf_dirs["bang_pad"]))):
        tok.save(tmp_path / name)
        meta = json.loads((tmp_path / name / META_FILE).read_text())
        assert meta["kind"] == "clip_bpe" and meta["flavor"] == tok.flavor and meta["clean"] == tok.clean
        again = TextTokenizer.from_dir(tmp_path / name)
        assert isinstance(again, CLIPBPETokenizer) and again.fingerprint() == tok.fingerprint()
        assert torch.equal(again(HARD, 77).input_ids, tok(HARD, 77).input_ids)
        assert (again.pad_id, again.cls_id, again.sep_id) == (tok.pad_id, tok.cls_id, tok.sep_id)
    assert oc_tok.clean == "open_clip"
    raw = oc_tok.with_options(clean="none")
    assert raw.fingerprint() != oc_tok.fingerprint()
    assert raw(["&amp;"], 4).input_ids.tolist() != oc_tok(["&amp;"], 4).input_ids.tolist()
    with pytest.raises(TokenizerError, match="single template"):
        oc_tok.with_options(template="cls_text")


def _small_vocab(directory: Path) -> Path:
    words = list(SPECIAL_TOKENS) + ["a", "red", "circle", "##s", "blue", "square", "man", "dog", "person",
                                    "running", "fast", "its", "it", "'", "s"] + [f"w{i}" for i in range(40)]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    return directory


def test_cls_text_template_by_hand(tmp_path: Path) -> None:
    base = TextTokenizer.from_dir(_small_vocab(tmp_path / "v"))
    albef = base.with_options(template="cls_text")
    cls_, sep, pad = base.cls_id, base.sep_id, base.pad_id
    a, red, circle, s = (base.backend.token_to_id(t) for t in ("a", "red", "circle", "##s"))
    assert albef(["a red circles"], 7).input_ids.tolist() == [[cls_, a, red, circle, s, pad, pad]]
    assert albef(["a red circles"], 7).attention_mask.tolist() == [[1, 1, 1, 1, 1, 0, 0]]
    assert albef(["a red circles"], 3).input_ids.tolist() == [[cls_, a, red]]            # max_length - 1 text tokens
    assert base(["a red circles"], 3).input_ids.tolist() == [[cls_, a, sep]]             # max_length - 2, then [SEP]
    assert base(["a red circles"], 7).input_ids.tolist() == [[cls_, a, red, circle, s, sep, pad]]
    assert albef.fingerprint() != base.fingerprint()
    assert albef.with_options(template="cls_text_sep").fingerprint() == base.fingerprint()
    with pytest.raises(TokenizerError, match="unknown template"):
        base.with_options(template="sep_text")


def test_options_are_saved_and_default_fingerprint_is_unchanged(tmp_path: Path) -> None:
    base = TextTokenizer.from_dir(_small_vocab(tmp_path / "v"))
    assert base.fingerprint() == hashlib.sha256(base.backend.to_str().encode()).hexdigest()   # as before options
    albef = base.with_options(template="cls_text", clean="pre_caption")
    assert albef.clean == "pre_caption:30"
    albef.save(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / META_FILE).read_text()) == {
        "format": 1, "kind": "wordpiece", "template": "cls_text", "clean": "pre_caption:30"}
    again = TextTokenizer.from_dir(tmp_path / "saved")
    assert (again.template, again.clean, again.fingerprint()) == ("cls_text", "pre_caption:30", albef.fingerprint())
    text = ["A man's dog, running (fast)!", "<person> - red/blue"]
    assert torch.equal(again(text, 12).input_ids, base.with_options(template="cls_text")(
        [pre_caption(t) for t in text], 12).input_ids)
    assert again.decode(again(text, 12).input_ids[0].tolist()) == "a mans dog running fast"
    assert len({albef.fingerprint(), albef.with_options(clean="pre_caption:5").fingerprint(),
                albef.with_options(clean="none").fingerprint()}) == 3


def test_a_folder_saved_before_the_meta_file_loads_as_before(tmp_path: Path) -> None:
    tok = TextTokenizer.train_wordpiece(["a red circle, left of a blue square"] * 3, vocab_size=100)
    tok.save(tmp_path)
    (tmp_path / META_FILE).unlink()
    again = TextTokenizer.from_dir(tmp_path)
    assert type(again) is TextTokenizer and (again.template, again.clean) == ("cls_text_sep", "none")
    assert again.fingerprint() == tok.fingerprint()
    cleaned = TextTokenizer.train_wordpiece(["A red circle, left of a blue square!"] * 3, vocab_size=100,
                                            clean="pre_caption:30")
    assert "," in tok.backend.get_vocab() and "," not in cleaned.backend.get_vocab()   # trained on cleaned text


def test_a_bad_meta_file_is_named(tmp_path: Path) -> None:
    TextTokenizer.from_dir(_small_vocab(tmp_path / "v")).save(tmp_path / "s")
    (tmp_path / "s" / META_FILE).write_text(json.dumps({"format": 1, "kind": "sentencepiece"}))
    with pytest.raises(TokenizerError, match="unknown tokenizer kind 'sentencepiece'"):
        TextTokenizer.from_dir(tmp_path / "s")
    (tmp_path / "s" / META_FILE).write_text("{")
    with pytest.raises(TokenizerError, match="vlpbench_tokenizer.json is not readable JSON"):
        TextTokenizer.from_dir(tmp_path / "s")


# ---------------------------------------------------------------- ALBEF/TCL pre_caption


@pytest.mark.parametrize(("text", "words", "expected"), [
    ("A man's dog, running (fast)!", 30, "a mans dog running fast"),
    ("A man's dog, running (fast)!", 3, "a mans dog"),
    ("Two  dogs;\tplaying... on the  grass.\n", 30, "two dogs\tplaying on the grass"),
    ("Two  dogs;\tplaying... on the  grass.\n", 3, "two dogs\tplaying on"),     # a lone tab joins words
    ("<person> rides a bike-path / road", 30, "person rides a bike path road"),
    ('"Quoted" #hashtag *star* ~tilde~ a:b', 30, "quoted hashtag star tilde ab"),
    ("UPPER-CASE <PERSON> x", 3, "upper case person"),
    ("  leading and trailing  ", 30, "leading and trailing"),
    ("\nleading newline", 30, "\nleading newline"),                             # kept: only trailing \n go
    ("trailing newline\n", 30, "trailing newline"),
    ("trailing newlines\n\n", 30, "trailing newlines"),
    ("multi\n\nline", 30, "multi line"),
    ("don’t curly", 30, "don’t curly"),                                          # only ASCII ' is deleted
    ("a - b", 30, "a b"),
    ("é É ÀÉ", 30, "é é àé"),
    ("x\xa0y \xa0z", 30, "x\xa0y z"),
    ("", 30, ""),
])
def test_pre_caption_matches_albef(text: str, words: int, expected: str) -> None:
    assert pre_caption(text, words) == expected


def test_clean_specs() -> None:
    assert [canonical_clean_spec(s) for s in ("none", "open_clip:lower", "open_clip:canonicalize", "pre_caption",
                                              "pre_caption:25")] == [
        "none", "open_clip", "open_clip:canonicalize", "pre_caption:30", "pre_caption:25"]
    for bad in ("lowercase", "pre_caption:0", "pre_caption:x", "open_clip:upper", "none:1"):
        with pytest.raises(CleanSpecError):
            canonical_clean_spec(bad)
    assert make_cleaner("none") is None
    cleaner = make_cleaner("pre_caption:2")
    assert cleaner is not None and cleaner("One, two; three") == "one two"


# ---------------------------------------------------------------- BERT vocab.txt parity


BERT_TEXTS = [
    "Café NAÏVE façade", "我爱北京天安门!", "東京の日本タワー", "Hello,world!!! (really?)", "dogs 🐶 running 😀",
    "don't stop", "\t tabs\nand\r\nnewlines", "\x00\x07 zero\ufffd", "\u200b zero width", "Straße", "ﬁne",
    "x" * 101, "a" + "b" * 99, "e\u0301", "İstanbul", "unbelievable", "", "   ", "the cat " * 50,
    "ｆｕｌｌ ｗｉｄｔｈ", "3.14½° £5", "[CLS] literal [SEP] [MASK]", "a [UNK] b",
]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vocab.txt laid out like bert-base-uncased: [PAD], [unused0-98], [UNK] 100, [CLS] 101, [SEP] 102,
    [MASK] 103, single characters (ASCII and some Latin, Greek and CJK ones), their ## forms, words, pieces."""
    chars = (list(string.punctuation) + list(string.digits) + list(string.ascii_lowercase)
             + list("ßæø£°½σςαβ我爱北京天安门东日本のタワー"))
    words = ["the", "a", "cafe", "naive", "photo", "of", "cat", "dog", "on", "bed", "run", "hello", "world", "don",
             "stop", "fa", "istanbul", "straße", "zero", "tabs", "and", "new", "lines", "un", "literal", "really"]
    pieces = ["##ning", "##s", "##ed", "##cade", "##line", "##lines", "##believ", "##able", "##width"]
    vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
             + chars + [f"##{c}" for c in chars] + words + pieces)
    d = tmp_path_factory.mktemp("bert")
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return d


@pytest.mark.parametrize("length", [64, 16, 2])
def test_bert_vocab_ids_equal_transformers_bert_tokenizer(bert_dir: Path, transformers_mod: Any, length: int) -> None:
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    ours = TextTokenizer.from_dir(bert_dir)
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (0, 100, 101, 102, 103)
    got = ours(BERT_TEXTS, length)
    vocab_file = str(bert_dir / "vocab.txt")
    for ref in (transformers_mod.BertTokenizer(vocab_file, do_lower_case=True),
                BertTokenizerLegacy(vocab_file, do_lower_case=True)):
        expected = ref(BERT_TEXTS, padding="max_length", truncation=True, max_length=length)
        for i, text in enumerate(BERT_TEXTS):
            assert got.input_ids[i].tolist() == expected["input_ids"][i], (type(ref).__name__, repr(text))
            assert got.attention_mask[i].tolist() == expected["attention_mask"][i], (type(ref).__name__, repr(text))
    ids = got.input_ids[BERT_TEXTS.index("the cat " * 50)].tolist()
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) == length                 # truncation keeps [SEP]


def test_cls_text_truncates_as_albefs_tokenizer(bert_dir: Path, transformers_mod: Any) -> None:
    """ALBEF/TCL's tokenizer is transformers' Python BERT tokenizer with `[CLS] X` for one sequence; its
    truncation leaves max_length - 1 text tokens (one special token counted) and appends nothing."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    class ClsText(BertTokenizerLegacy):  # models/tokenization_bert.py:build_inputs_with_special_tokens in ALBEF/TCL
        def build_inputs_with_special_tokens(self, a: list[int], b: list[int] | None = None) -> list[int]:
            return [self.cls_token_id] + a if b is None else [self.cls_token_id] + a + [self.sep_token_id] + b + [
                self.sep_token_id]

    ref = ClsText(str(bert_dir / "vocab.txt"), do_lower_case=True)
    ours = TextTokenizer.from_dir(bert_dir).with_options(template="cls_text")
    for length in (64, 5, 2):
        expected = ref(BERT_TEXTS, padding="max_length", truncation=True, max_length=length)
        got = ours(BERT_TEXTS, length)
        assert got.input_ids.tolist() == expected["input_ids"] and got.attention_mask.tolist() == expected[
            "attention_mask"]


def test_final_sigma_follows_tokenizers_not_python_lower(bert_dir: Path, transformers_mod: Any) -> None:
    """The one difference found between transformers' BertTokenizer (the `tokenizers` normalizer, which we
    share) and the Python BERT tokenizer (as vendored by ALBEF/TCL): Python's str.lower() maps a word-final
    capital sigma to ς, `tokenizers` to σ."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    ours = TextTokenizer.from_dir(bert_dir)
    vocab = ours.backend.get_vocab()
    sigma, final_sigma, alpha = vocab["σ"], vocab["##ς"], vocab["##α"]
    assert ours(["ΣΑΣ"], 6).input_ids.tolist() == [[101, sigma, alpha, vocab["##σ"], 102, 0]]
    legacy = BertTokenizerLegacy(str(bert_dir / "vocab.txt"), do_lower_case=True)
    expected = [[101, sigma, alpha, final_sigma, 102, 0]]
    assert legacy(["ΣΑΣ"], padding="max_length", max_length=6)["input_ids"] == expected
