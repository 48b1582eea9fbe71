"""An offline text tokenizer that travels with the model.

Two sources, neither touching a hub:
- `TextTokenizer.train_wordpiece(corpus)`: a BERT-style WordPiece vocabulary built
  deterministically from a text corpus (the built-in dataset's default);
- `TextTokenizer.from_dir(path)`: a local directory holding `tokenizer.json` or a BERT
  `vocab.txt` (a downloaded BERT, for `base` configs).

Loading is validated: transformers 5 silently returns a 5-token BERT tokenizer when a vocab is
missing offline (../shared/reference/environment.md, trap 1), so a vocabulary with fewer than
`MIN_VOCAB` entries or without the special tokens is an error naming the directory.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS, SEP, MASK)
MIN_VOCAB = 32


class TokenizerError(ValueError):
    pass


@dataclass(frozen=True)
class TokenBatch:
    input_ids: torch.Tensor       # (B, L) int64, right-padded with pad_id
    attention_mask: torch.Tensor  # (B, L) int64, 1 = real token

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(self.input_ids.to(device), self.attention_mask.to(device))

    def __getitem__(self, idx: torch.Tensor | slice) -> "TokenBatch":
        return TokenBatch(self.input_ids[idx], self.attention_mask[idx])

    def trimmed(self) -> "TokenBatch":
        """Drop padding columns beyond the longest sequence (outputs are unchanged: pads are masked)."""
        longest = int(self.attention_mask.sum(dim=1).max()) if self.attention_mask.numel() else 0
        if longest == self.input_ids.shape[1]:
            return self
        return TokenBatch(self.input_ids[:, :longest], self.attention_mask[:, :longest])


class TextTokenizer:
    """`[CLS] text [SEP]`, lower-cased WordPiece, fixed-length right padding, [SEP] kept on truncation."""

    def __init__(self, backend: Tokenizer, source: str) -> None:
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
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab[t] for t in SPECIAL_TOKENS)
        self.backend.no_padding()
        self.backend.no_truncation()

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.backend.to_str().encode()).hexdigest()

    def __call__(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        if max_length < 2:
            raise ValueError("max_length must leave room for [CLS] and [SEP]")
        encodings = self.backend.encode_batch(list(texts))
        ids = torch.full((len(encodings), max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encodings), max_length), dtype=torch.long)
        for i, enc in enumerate(encodings):
            seq = enc.ids
            if len(seq) > max_length:
                seq = seq[: max_length - 1] + [self.sep_id]
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[i, : len(seq)] = 1
        return TokenBatch(ids, mask)

    def decode(self, ids: Sequence[int]) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=True)

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "tokenizer.json"
        self.backend.save(str(path))
        return path

    @classmethod
    def from_dir(cls, directory: Path | str) -> "TextTokenizer":
        directory = Path(directory)
        if (directory / "tokenizer.json").is_file():
            return cls(Tokenizer.from_file(str(directory / "tokenizer.json")), str(directory))
        if (directory / "vocab.txt").is_file():
            vocab_lines = (directory / "vocab.txt").read_text(encoding="utf-8").splitlines()
            vocab = {tok: i for i, tok in enumerate(vocab_lines) if tok}
            return cls(_bert_backend(models.WordPiece(vocab, unk_token=UNK), vocab), str(directory))
        raise TokenizerError(f"no tokenizer in {directory}: expected tokenizer.json or vocab.txt there")

    @classmethod
    def train_wordpiece(cls, corpus: Iterable[str], vocab_size: int = 2000, min_frequency: int = 1
                        ) -> "TextTokenizer":
        """A WordPiece vocabulary from a corpus, deterministically.

        The vocabulary is the special tokens, every character seen (as a word start and as a
        `##` continuation, so any word in the corpus' alphabet is encodable), then whole words by
        decreasing frequency (ties alphabetical) up to `vocab_size`. `tokenizers`' own
        WordPieceTrainer is not used: it breaks frequency ties in hash order, so two trainings on
        the same corpus give different vocabularies (and different models).
        """
        probe = Tokenizer(models.WordPiece({UNK: 0}, unk_token=UNK))
        _configure(probe)
        counts: Counter[str] = Counter()
        for text in corpus:
            normalized = probe.normalizer.normalize_str(text)  # type: ignore[union-attr]
            counts.update(w for w, _ in probe.pre_tokenizer.pre_tokenize_str(normalized))  # type: ignore[union-attr]
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
        tok = _bert_backend(models.WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100), vocab)
        return cls(tok, f"wordpiece(vocab_size={vocab_size}, built from corpus: {len(vocab)} tokens)")


def _configure(tok: Tokenizer) -> None:
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()


def _add_template(tok: Tokenizer) -> None:
    vocab = tok.get_vocab()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])])


def _bert_backend(model: models.Model, vocab: dict[str, int]) -> Tokenizer:
    tok = Tokenizer(model)
    _configure(tok)
    if CLS in vocab and SEP in vocab:
        _add_template(tok)
    return tok
