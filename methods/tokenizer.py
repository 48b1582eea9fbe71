"""An offline text tokenizer that travels with the model.

Sources, none touching a hub:
- `TextTokenizer.train_wordpiece(corpus)`: a BERT-style WordPiece vocabulary built
  deterministically from a text corpus (the built-in dataset's default);
- `TextTokenizer.from_dir(path)`: a local directory holding `tokenizer.json` or a BERT
  `vocab.txt` (a downloaded BERT, for `base` configs), a Hugging Face CLIP tokenizer folder, or a
  tokenizer saved by `save` (any kind: the `vlpbench_tokenizer.json` beside `tokenizer.json` says
  which, with its options);
- `methods.clip_tokenizer.CLIPBPETokenizer`: CLIP's byte-level BPE (open_clip or Hugging Face ids).

Options that change ids are part of a tokenizer's identity (saved with it, in its fingerprint):
`template` (`cls_text_sep`: `[CLS] X [SEP]`, stock BERT; `cls_text`: `[CLS] X`, the vendored BERT
tokenizer of ALBEF/TCL) and `clean` (text cleaning before encoding, `methods.text_clean`).

Loading is validated: transformers 5 silently returns a 5-token BERT tokenizer when a vocab is
missing offline, so a vocabulary with fewer than `MIN_VOCAB` entries or without the special
tokens is an error naming the directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from vlpbench.methods.text_clean import NONE as NONE_CLEAN
from vlpbench.methods.text_clean import canonical_clean_spec, make_cleaner

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
MIN_VOCAB = 32
TEMPLATES: tuple[str, ...] = ("cls_text_sep", "cls_text")
DEFAULT_TEMPLATE = "cls_text_sep"
META_FILE = "vlpbench_tokenizer.json"   # kind and options of a tokenizer written by `save`, beside tokenizer.json
META_FORMAT = 1


class TokenizerError(ValueError):
    pass


@dataclass(frozen=True)
class TokenBatch:
    input_ids: torch.Tensor       # (B, L) int64, right-padded with pad_id
    attention_mask: torch.Tensor  # (B, L) int64, 1 = real token

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device, non_blocking=non_blocking),
                          self.attention_mask.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "TokenBatch":
        return TokenBatch(self.input_ids.pin_memory(), self.attention_mask.pin_memory())

    def __getitem__(self, idx: torch.Tensor | slice) -> "TokenBatch":
        return TokenBatch(self.input_ids[idx], self.attention_mask[idx])

    def trimmed(self) -> "TokenBatch":
        """Drop padding columns beyond the longest sequence (outputs are unchanged: pads are masked)."""
        longest = int(self.attention_mask.sum(dim=1).max()) if self.attention_mask.numel() else 0
        if longest == self.input_ids.shape[1]:
            return self
        return TokenBatch(self.input_ids[:, :longest], self.attention_mask[:, :longest])


class TextTokenizer:
    """Lower-cased BERT WordPiece with fixed-length right padding.

    `template` (saved, fingerprinted):
    - `cls_text_sep` (default): `[CLS] X [SEP]` as stock BERT (transformers' `BertTokenizer`);
      truncation keeps `[CLS]`, the first `max_length - 2` text tokens and `[SEP]`.
    - `cls_text`: `[CLS] X` with no `[SEP]`, as the BERT tokenizer vendored by ALBEF and TCL
      (salesforce/ALBEF and uta-smile/TCL, models/tokenization_bert.py:
      `build_inputs_with_special_tokens` returns `[cls] + token_ids_0` for one sequence);
      truncation keeps `[CLS]` and the first `max_length - 1` text tokens (transformers counts one
      special token to add for that template, so nothing is appended after truncating).
    `clean` (saved, fingerprinted): text cleaning applied before encoding (`methods.text_clean`),
    e.g. `pre_caption:30` for ALBEF/TCL captions.
    """

    kind = "wordpiece"

    def __init__(self, backend: Tokenizer, source: str, *, template: str = DEFAULT_TEMPLATE,
                 clean: str = NONE_CLEAN) -> None:
        self.backend = backend
        self.source = source
        vocab = backend.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise TokenizerError(f"tokenizer from {source}: special tokens {missing} are missing from the "
                                 f"vocabulary; a BERT-style vocab with {SPECIAL_TOKENS} is required")
        if len(vocab) < MIN_VOCAB:
            raise TokenizerError(
                f"tokenizer from {source} has only {len(vocab)} tokens (fewer than {MIN_VOCAB}); this is what "
                "transformers returns offline when the vocab file is missing. Point to a directory with "
                "tokenizer.json or vocab.txt, or train one with TextTokenizer.train_wordpiece")
        if template not in TEMPLATES:
            raise TokenizerError(f"tokenizer from {source}: unknown template {template!r}; expected one of {TEMPLATES}")
        self.template = template
        self.clean = canonical_clean_spec(clean)
        self._cleaner = make_cleaner(self.clean)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in SPECIAL_TOKENS)
        if template == "cls_text":
            _add_template(self.backend, with_sep=False)
        self.backend.no_padding()
        self.backend.no_truncation()

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

    def options(self) -> dict[str, Any]:
        """What, besides tokenizer.json, decides the ids: written to vlpbench_tokenizer.json by `save`."""
        return {"kind": self.kind, "template": self.template, "clean": self.clean}

    def fingerprint(self) -> str:
        """sha256 of the backend (and of the options when they are not the defaults, so tokenizers saved
        before options existed keep their fingerprint)."""
        text = self.backend.to_str()
        if (self.template, self.clean) != (DEFAULT_TEMPLATE, NONE_CLEAN):
            text += json.dumps(self.options(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def cleaned(self, texts: Sequence[str]) -> list[str]:
        """The texts after this tokenizer's `clean` step (unchanged for 'none')."""
        return list(texts) if self._cleaner is None else [self._cleaner(t) for t in texts]

    def encode_text(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text after cleaning, without special tokens and untruncated."""
        texts = self.cleaned(texts)
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)] if texts else []

    def __call__(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        if max_length < 2:
            raise ValueError("max_length must leave room for [CLS] and [SEP]")
        texts = self.cleaned(texts)
        seqs = [enc.ids for enc in self.backend.encode_batch(texts)] if texts else []
        if self.template == "cls_text":
            seqs = [seq[:max_length] for seq in seqs]
        else:
            seqs = [seq[: max_length - 1] + [self.sep_id] if len(seq) > max_length else seq for seq in seqs]
        return pad_batch(seqs, max_length, self.pad_id)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of the ids, special tokens (padding included) dropped: a backend built by `train_wordpiece`
        does not mark them special, so `skip_special_tokens` alone would keep them."""
        special = set(self.special_ids)
        return self.backend.decode([i for i in ids if i not in special], skip_special_tokens=True)

    def with_options(self, *, template: str | None = None, clean: str | None = None) -> "TextTokenizer":
        """The same vocabulary with another template and/or cleaning (None keeps the current one)."""
        backend = Tokenizer.from_str(self.backend.to_str())
        template = self.template if template is None else template
        if template == DEFAULT_TEMPLATE and self.template != DEFAULT_TEMPLATE:
            _add_template(backend, with_sep=True)
        return TextTokenizer(backend, self.source, template=template, clean=self.clean if clean is None else clean)

    def save(self, directory: Path) -> Path:
        """tokenizer.json (the backend) and vlpbench_tokenizer.json (kind and options) in `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "tokenizer.json"
        self.backend.save(str(path))
        meta = {"format": META_FORMAT, **self.options()}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dir(cls, directory: Path | str) -> "TextTokenizer":
        """A tokenizer from a local directory, by what it holds:
        - `vlpbench_tokenizer.json` + `tokenizer.json` (written by `save`): the kind and options it names;
        - a Hugging Face CLIP tokenizer folder (`tokenizer.json` with a BPE model whose words end in
          `</w>`, or `vocab.json` + `merges.txt`): `CLIPBPETokenizer.from_hf`;
        - `tokenizer.json` (BERT WordPiece) or `vocab.txt`: WordPiece, `[CLS] X [SEP]`, no cleaning. From a
          `vocab.txt` the ids equal transformers' `BertTokenizer(vocab_file, do_lower_case=True)` (truncation
          keeps [SEP]; special tokens written in the text map to their ids). One known difference from the
          Python BERT tokenizer (`BertTokenizerLegacy`, and the one ALBEF/TCL vendor): `tokenizers` lower-cases
          character by character, so a word-final capital sigma becomes σ, not ς as Python's str.lower() gives.
        """
        directory = Path(directory)
        if (directory / META_FILE).is_file():
            return _from_saved(directory)
        tokenizer_json = directory / "tokenizer.json"
        for kind in _KINDS.values():
            if kind.reads_folder is not None and kind.reads_folder(directory):
                return kind.from_folder(directory)
        if tokenizer_json.is_file():
            return cls(Tokenizer.from_file(str(tokenizer_json)), str(directory))
        if (directory / "vocab.txt").is_file():
            backend = _bert_backend(models.WordPiece(read_vocab_txt(directory / "vocab.txt"), unk_token=UNK))
            # As transformers' BertTokenizer: the special tokens written in a text are those tokens ("[MASK]" -> 103).
            backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                        for t in SPECIAL_TOKENS if t in backend.get_vocab()])
            return cls(backend, str(directory))
        raise TokenizerError(f"no tokenizer in {directory}: expected tokenizer.json or vocab.txt there "
                             "(or vocab.json + merges.txt for a CLIP tokenizer)")

    @classmethod
    def train_wordpiece(cls, corpus: Iterable[str], vocab_size: int = 2000, min_frequency: int = 1, *,
                        template: str = DEFAULT_TEMPLATE, clean: str = NONE_CLEAN) -> "TextTokenizer":
        """A WordPiece vocabulary from a corpus, deterministically.

        The vocabulary is the special tokens, every character seen (as a word start and as a
        `##` continuation, so any word in the corpus' alphabet is encodable), then whole words by
        decreasing frequency (ties alphabetical) up to `vocab_size`. `tokenizers`' own
        WordPieceTrainer is not used: it breaks frequency ties in hash order, so two trainings on
        the same corpus give different vocabularies (and different models). The corpus is cleaned
        with `clean` first, as the texts the tokenizer will encode are.
        """
        cleaner = make_cleaner(clean)
        counts = word_counts(corpus if cleaner is None else (cleaner(t) for t in corpus))
        chars = sorted({c for w in counts for c in w})
        vocab_list = list(SPECIAL_TOKENS) + chars + [f"##{c}" for c in chars]
        seen = set(vocab_list)
        for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if len(vocab_list) >= vocab_size or n < min_frequency:
                break
            if word not in seen:
                vocab_list.append(word)
                seen.add(word)
        vocab = {tok: i for i, tok in enumerate(vocab_list)}
        tok = _bert_backend(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
        return cls(tok, f"wordpiece(vocab_size={vocab_size}, built from corpus: {len(vocab)} tokens)",
                   template=template, clean=clean)


# BertPreTokenizer's split of printable-ASCII text (tokenizers' `is_bert_punc` is ASCII punctuation there):
# runs of other characters, and each punctuation character alone; spaces separate and are dropped.
_ASCII_PUNCT = r"!-/:-@\[-`{-~"
_ASCII_WORDS = re.compile(rf"[^ {_ASCII_PUNCT}]+|[{_ASCII_PUNCT}]")
_PRINTABLE_ASCII = re.compile(r"[ -~]*")


def word_counts(texts: Iterable[str]) -> Counter[str]:
    """How often each word occurs after BERT's normalizer (lower-casing, accents stripped, control characters
    dropped) and pre-tokenizer (whitespace and punctuation split), as `tokenizers` computes them. Printable-ASCII
    texts (where both reduce to `str.lower` and a split; tests/test_tokenizer_and_towers.py checks the two agree)
    take a pure-Python path (the built-in world's 359,032 texts: 1.3 s instead of 10.5 s for the whole training);
    any other text goes through `tokenizers` itself."""
    probe = Tokenizer(models.WordPiece({UNK: 0}, unk_token=UNK))
    _configure(probe)
    counts: Counter[str] = Counter()
    ascii_texts: list[str] = []
    for text in texts:
        if _PRINTABLE_ASCII.fullmatch(text):
            ascii_texts.append(text)
        else:
            normalized = probe.normalizer.normalize_str(text)  # type: ignore[union-attr]
            counts.update(w for w, _ in probe.pre_tokenizer.pre_tokenize_str(normalized))  # type: ignore[union-attr]
    counts.update(_ASCII_WORDS.findall(" ".join(ascii_texts).lower()))
    return counts


def pad_batch(seqs: Sequence[Sequence[int]], max_length: int, pad_id: int) -> TokenBatch:
    """Sequences no longer than max_length, right-padded with pad_id; attention_mask marks the real tokens."""
    ids = torch.full((len(seqs), max_length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), max_length), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[i, : len(seq)] = 1
    return TokenBatch(ids, mask)


def read_vocab_txt(path: Path) -> dict[str, int]:
    """A BERT vocab.txt as transformers reads it (models/bert/tokenization_bert.py:load_vocab): one token per
    line, split on newlines only (a token may hold other line-breaking characters), id = line number."""
    with open(path, encoding="utf-8") as reader:   # universal newlines, as transformers opens it
        lines = reader.readlines()
    vocab = {line.rstrip("\n"): i for i, line in enumerate(lines)}
    vocab.pop("", None)
    return vocab


def read_meta(directory: Path) -> dict[str, Any]:
    """vlpbench_tokenizer.json of a saved tokenizer, checked for its format."""
    path = directory / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise TokenizerError(f"{path} is not readable JSON ({err}); save the tokenizer again") from err
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT or "kind" not in meta:
        raise TokenizerError(f"{path}: expected {{'format': {META_FORMAT}, 'kind': ...}}, got {meta!r}; "
                             "it was written by another vlpbench version: save the tokenizer again")
    if not (directory / "tokenizer.json").is_file():
        raise TokenizerError(f"{directory} has {META_FILE} but no tokenizer.json beside it")
    return meta


def _from_saved(directory: Path) -> TextTokenizer:
    meta = read_meta(directory)
    if meta["kind"] == TextTokenizer.kind:
        return TextTokenizer(Tokenizer.from_file(str(directory / "tokenizer.json")), str(directory),
                             template=meta.get("template", DEFAULT_TEMPLATE), clean=meta.get("clean", NONE_CLEAN))
    if meta["kind"] in _KINDS:
        return _KINDS[meta["kind"]].from_saved(directory, meta)
    raise TokenizerError(f"{directory / META_FILE}: unknown tokenizer kind {meta['kind']!r}; expected one of "
                         f"{[TextTokenizer.kind, *_KINDS]}")


@dataclass(frozen=True)
class TokenizerKind:
    """Another tokenizer family saved with a model (e.g. CLIP's byte-level BPE, methods/clip_tokenizer.py), which
    registers how it is read back: `from_saved(directory, meta)` for folders written by its `save`, and
    optionally `reads_folder(directory)` + `from_folder(directory)` for the third-party folders it recognises."""

    kind: str
    from_saved: Callable[[Path, dict[str, Any]], TextTokenizer]
    reads_folder: Callable[[Path], bool] | None = None
    from_folder: Callable[[Path], TextTokenizer] | None = None


_KINDS: dict[str, TokenizerKind] = {}


def register_tokenizer_kind(kind: TokenizerKind) -> None:
    _KINDS[kind.kind] = kind


def tokenizer_json_model(path: Path) -> dict:
    """The "model" section of a Hugging Face tokenizer.json ({} when it has none)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model") or {}
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{path} is not valid JSON ({err})") from err


def is_clip_bpe_folder(directory: Path) -> bool:
    """A Hugging Face CLIP tokenizer folder: tokenizer.json with a BPE model marking word ends with `</w>`,
    or (without tokenizer.json) vocab.json + merges.txt."""
    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        model = tokenizer_json_model(tokenizer_json)
        return bool(model.get("type") == "BPE" and model.get("end_of_word_suffix") == "</w>")
    return (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()


def _configure(tok: Tokenizer) -> None:
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()


def _add_template(tok: Tokenizer, with_sep: bool = True) -> None:
    vocab = tok.get_vocab()
    single = f"{CLS} $A {SEP}" if with_sep else f"{CLS} $A"
    tok.post_processor = processors.TemplateProcessing(
        single=single, pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])])


def _bert_backend(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    _configure(tok)
    vocab = tok.get_vocab()
    if CLS in vocab and SEP in vocab:
        _add_template(tok)
    return tok
