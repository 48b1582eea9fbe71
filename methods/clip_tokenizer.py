"""CLIP's byte-level BPE tokenizer, giving the token ids of the released checkpoints exactly.

Two references, two constructors, each matching its own reference id for id:

- `CLIPBPETokenizer.from_open_clip(bpe_path=None)`: `open_clip.tokenize(texts, context_length=L)`
  (mlfoundations/open_clip, src/open_clip/tokenizer.py: `SimpleTokenizer` with `clean='lower'`,
  the vocabulary `bpe_simple_vocab_16e6.txt.gz`; the same tokenizer as openai/CLIP, clip/simple_tokenizer.py).
  Its cleaning (ftfy, HTML unescaping, whitespace, lower case) runs in Python (`methods.text_clean`),
  the text is split with open_clip's regex in Python (the `regex` module, as open_clip does, so the
  Unicode tables are the same), and the byte-level BPE of every piece runs in `tokenizers`.
  Padding id 0 (the ordinary token `!`), as open_clip pads.
- `CLIPBPETokenizer.from_hf(directory)`: transformers' `CLIPTokenizer` (transformers 5:
  models/clip/tokenization_clip.py, a `tokenizers` pipeline: NFC, whitespace runs to one space,
  lower case, the CLIP regex split, byte-level BPE) called with `padding="max_length",
  truncation=True, max_length=L`; the pipeline is rebuilt from the folder's vocabulary and merges
  exactly as that class rebuilds it, and the padding token is the folder's.

Where the two references give different ids for the same text (both are right for their checkpoints):
- open_clip runs `ftfy.fix_text` and unescapes HTML twice; Hugging Face does neither. So mojibake
  ("doesnâ€™t"), curly quotes (’ “ ”, uncurled by ftfy), ligatures and full-width letters ("ﬁ",
  "ＡＢＣ"), control characters and HTML entities ("&amp;") are encoded differently.
- Special-token literals in the text: open_clip's regex turns "<start_of_text>"/"<end_of_text>"
  into the SOT/EOT ids; Hugging Face does that for "<|startoftext|>"/"<|endoftext|>" instead.
- Padding: open_clip pads with 0; Hugging Face pads with its pad token (`<|endoftext|>` = 49407 for
  openai/clip-*, `!` = 0 for folders that declare it). A folder whose pad token is "!" also makes
  "!" a special token in transformers, so each "!" in a text becomes id 0 there (open_clip: the
  BPE pieces of "!", e.g. "!</w>" = 256).
- Truncation agrees: SOT, the first L - 2 text tokens, EOT.

The vocabulary has no mask token: `mask_id` raises (no CLIP objective masks text). There is no
unknown token either (every byte is in the vocabulary); `unk_id` is EOT, as transformers declares.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from vlpbench.methods.text_clean import NONE as NONE_CLEAN
from vlpbench.methods.text_clean import canonical_clean_spec, make_cleaner
from vlpbench.methods.tokenizer import (DEFAULT_TEMPLATE, META_FILE, TextTokenizer, TokenBatch, TokenizerError, TokenizerKind,
                               is_clip_bpe_folder, pad_batch, read_meta, register_tokenizer_kind,
                               tokenizer_json_model)

OPEN_CLIP_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
# open_clip uses the first 49152 - 256 - 2 merges of its file: 49408 tokens = 256 bytes + 256 word-final
# bytes + 48894 merges + SOT + EOT (mlfoundations/open_clip, src/open_clip/tokenizer.py:SimpleTokenizer).
OPEN_CLIP_MERGES = 49152 - 256 - 2
OPEN_CLIP_SOT, OPEN_CLIP_EOT = "<start_of_text>", "<end_of_text>"
HF_SOT, HF_EOT = "<|startoftext|>", "<|endoftext|>"
WORD_END = "</w>"
_CLIP_PIECES = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
# open_clip's split (case-insensitive, its special tokens first); the Python `regex` module, as open_clip.
OPEN_CLIP_SPLIT = f"{OPEN_CLIP_SOT}|{OPEN_CLIP_EOT}|{_CLIP_PIECES}"
# transformers' CLIPTokenizer split (case-sensitive, on the normalized text; Rust regex in `tokenizers`).
HF_SPLIT = r"<\|startoftext\|>|<\|endoftext\|>|" + _CLIP_PIECES
FLAVORS = ("open_clip", "hf")


def byte_alphabet() -> dict[int, str]:
    """The byte -> character table of byte-level BPE (GPT-2's; CLIP's `bytes_to_unicode`): printable
    Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, 0x7f-0xa0, 0xad) get the
    characters U+0100 onwards in byte order. The dict's order is the vocabulary's order: printable first."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def find_open_clip_bpe() -> Path:
    """open_clip's vocabulary file inside an installed open_clip package, found without importing it."""
    spec = importlib.util.find_spec("open_clip")
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / OPEN_CLIP_BPE_FILE
        if path.is_file():
            return path
    raise TokenizerError(f"{OPEN_CLIP_BPE_FILE} not found: open_clip_torch is not installed here. Pass the file's "
                         "path: CLIPBPETokenizer.from_open_clip(bpe_path=...) (it ships in the open_clip_torch "
                         "package and in openai/CLIP, clip/bpe_simple_vocab_16e6.txt.gz)")


def read_open_clip_bpe(path: Path | str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocabulary, merges) as open_clip builds them from its gzipped merges file: the file's first line is
    a header; merge i (from 0) makes token 512 + i; SOT and EOT are the last two ids."""
    path = Path(path)
    try:
        lines = gzip.open(path).read().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise TokenizerError(f"{path} is not a gzipped CLIP merges file ({err}); expected open_clip's "
                             f"{OPEN_CLIP_BPE_FILE}") from err
    raw = lines[1: OPEN_CLIP_MERGES + 1]
    merges: list[tuple[str, str]] = []
    for n, line in enumerate(raw, start=2):
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerError(f"{path}, line {n}: expected a merge 'a b', got {line!r}")
        merges.append((parts[0], parts[1]))
    if len(merges) != OPEN_CLIP_MERGES:
        raise TokenizerError(f"{path} has {len(merges)} merges; open_clip's vocabulary needs {OPEN_CLIP_MERGES}")
    alphabet = list(byte_alphabet().values())
    tokens = alphabet + [c + WORD_END for c in alphabet] + [a + b for a, b in merges] + [OPEN_CLIP_SOT, OPEN_CLIP_EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise TokenizerError(f"{path}: the merges give duplicate tokens; not open_clip's vocabulary file")
    return vocab, merges


@lru_cache(maxsize=4)
def _compiled(pattern: str) -> Any:
    try:
        import regex
    except ImportError as err:  # pragma: no cover - a dependency of transformers
        raise TokenizerError("the open_clip tokenizer needs the `regex` package (open_clip splits text with "
                             "it): install regex") from err
    return regex.compile(pattern, regex.IGNORECASE)


def _special(content: str) -> AddedToken:
    return AddedToken(content, special=True, normalized=False)


class CLIPBPETokenizer(TextTokenizer):
    """CLIP byte-level BPE: `SOT text EOT`, truncated to SOT + the first L-2 text tokens + EOT, right padded.

    `flavor` says which reference the ids follow ("open_clip" or "hf", see the module docstring);
    `clean` is the text cleaning run first (`methods.text_clean`; "open_clip" for the open_clip
    flavor). Both are saved with the tokenizer and enter its fingerprint.
    """

    kind = "clip_bpe"

    def __init__(self, backend: Tokenizer, source: str, *, flavor: str, clean: str, pad_id: int,
                 sot_token: str, eot_token: str, split: str | None) -> None:
        if flavor not in FLAVORS:
            raise TokenizerError(f"CLIP tokenizer from {source}: unknown flavor {flavor!r}; expected one of {FLAVORS}")
        if flavor == "open_clip" and not split:
            raise TokenizerError(f"CLIP tokenizer from {source}: the open_clip flavor needs its split regex")
        self.backend = backend
        self.source = source
        self.flavor = flavor
        self.template = DEFAULT_TEMPLATE
        self.clean = canonical_clean_spec(clean)
        self._cleaner = make_cleaner(self.clean)
        self.split = split
        vocab = backend.get_vocab()
        missing = [t for t in (sot_token, eot_token) if t not in vocab]
        if missing:
            raise TokenizerError(f"CLIP tokenizer from {source}: tokens {missing} are not in the vocabulary")
        self.sot_token, self.eot_token = sot_token, eot_token
        self.cls_id, self.sep_id = vocab[sot_token], vocab[eot_token]
        self.unk_id = self.sep_id
        if not 0 <= pad_id < backend.get_vocab_size():
            raise TokenizerError(f"CLIP tokenizer from {source}: pad id {pad_id} is outside the vocabulary")
        self.pad_id = pad_id
        self.backend.no_padding()
        self.backend.no_truncation()

    @property  # type: ignore[override]
    def mask_id(self) -> int:
        raise TokenizerError(f"the CLIP BPE tokenizer ({self.source}) has no mask token; a method that masks "
                             "text (masked language modelling) needs a BERT WordPiece tokenizer")

    @property
    def special_ids(self) -> tuple[int, ...]:
        """SOT and EOT. The pad id is not added: it is EOT (openai/clip-* folders) or an ordinary token (open_clip
        pads with 0 = "!"); padding is told apart by the attention mask."""
        return (self.cls_id, self.sep_id)

    def options(self) -> dict[str, Any]:
        return {"kind": self.kind, "flavor": self.flavor, "clean": self.clean, "pad_id": self.pad_id,
                "sot_token": self.sot_token, "eot_token": self.eot_token, "split": self.split}

    def fingerprint(self) -> str:
        text = self.backend.to_str() + json.dumps(self.options(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def encode_text(self, texts: Sequence[str]) -> list[list[int]]:
        texts = self.cleaned(texts)
        if not texts:
            return []
        if self.split is not None:
            pattern = _compiled(self.split)
            pieces = [pattern.findall(t) for t in texts]
            encodings = self.backend.encode_batch(pieces, is_pretokenized=True, add_special_tokens=False)
        else:
            encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        return [e.ids for e in encodings]

    def __call__(self, texts: Sequence[str], max_length: int) -> TokenBatch:
        if max_length < 2:
            raise ValueError("max_length must leave room for the start and end tokens")
        seqs = []
        for ids in self.encode_text(texts):
            seq = [self.cls_id, *ids[: max_length - 2], self.sep_id]
            seqs.append(seq)
        return pad_batch(seqs, max_length, self.pad_id)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of the ids up to the first EOT (special tokens dropped, word ends as spaces)."""
        ids = list(ids)
        if self.sep_id in ids:
            ids = ids[: ids.index(self.sep_id)]
        ids = [i for i in ids if i != self.cls_id]
        return self.backend.decode(ids, skip_special_tokens=True).replace(WORD_END, " ").strip()

    def with_options(self, *, template: str | None = None, clean: str | None = None) -> "CLIPBPETokenizer":
        """The same vocabulary with another cleaning; CLIP has one template (SOT text EOT)."""
        if template not in (None, DEFAULT_TEMPLATE):
            raise TokenizerError(f"a CLIP tokenizer has the single template 'SOT text EOT'; template {template!r} "
                                 "is for BERT WordPiece tokenizers")
        return CLIPBPETokenizer(Tokenizer.from_str(self.backend.to_str()), self.source, flavor=self.flavor,
                                clean=self.clean if clean is None else clean, pad_id=self.pad_id,
                                sot_token=self.sot_token, eot_token=self.eot_token, split=self.split)

    @classmethod
    def from_saved(cls, directory: Path, meta: dict[str, Any] | None = None) -> "CLIPBPETokenizer":
        """A tokenizer written by `save` (`TextTokenizer.from_dir` comes here for kind 'clip_bpe')."""
        meta = read_meta(directory) if meta is None else meta
        try:
            return cls(Tokenizer.from_file(str(directory / "tokenizer.json")), str(directory), flavor=meta["flavor"],
                       clean=meta["clean"], pad_id=int(meta["pad_id"]), sot_token=meta["sot_token"],
                       eot_token=meta["eot_token"], split=meta["split"])
        except KeyError as err:
            raise TokenizerError(f"{directory / META_FILE} lacks {err}; save the tokenizer again") from err

    @classmethod
    def from_open_clip(cls, bpe_path: Path | str | None = None, *, clean: str = "open_clip") -> "CLIPBPETokenizer":
        """Ids equal to `open_clip.tokenize` (default `clean="open_clip"`, its cleaning) from open_clip's
        `bpe_simple_vocab_16e6.txt.gz` (found in the installed open_clip when `bpe_path` is None)."""
        path = Path(bpe_path) if bpe_path is not None else find_open_clip_bpe()
        vocab, merges = read_open_clip_bpe(path)
        backend = Tokenizer(models.BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix=WORD_END,
                                       fuse_unk=False))
        # Each piece of open_clip's split is one pre-tokenized word: bytes to characters, then BPE.
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
        backend.add_special_tokens([_special(OPEN_CLIP_SOT), _special(OPEN_CLIP_EOT)])
        backend.post_processor = processors.TemplateProcessing(
            single=f"{OPEN_CLIP_SOT} $A {OPEN_CLIP_EOT}",
            special_tokens=[(OPEN_CLIP_SOT, vocab[OPEN_CLIP_SOT]), (OPEN_CLIP_EOT, vocab[OPEN_CLIP_EOT])])
        return cls(backend, f"open_clip:{path}", flavor="open_clip", clean=clean, pad_id=0,
                   sot_token=OPEN_CLIP_SOT, eot_token=OPEN_CLIP_EOT, split=OPEN_CLIP_SPLIT)

    @classmethod
    def from_hf(cls, directory: Path | str, *, clean: str = NONE_CLEAN) -> "CLIPBPETokenizer":
        """Ids equal to transformers' `CLIPTokenizer.from_pretrained(directory)` called with
        `padding="max_length", truncation=True, max_length=L`, from a Hugging Face CLIP tokenizer folder:
        `tokenizer.json` (preferred, as transformers does), or `vocab.json` + `merges.txt`; the special
        tokens from `special_tokens_map.json`, then `tokenizer_config.json`, then CLIP's defaults."""
        directory = Path(directory)
        vocab, merges = _hf_vocab_and_merges(directory)
        names = _hf_special_tokens(directory)
        for role, token in names.items():
            if token not in vocab:
                raise TokenizerError(f"{directory}: the {role} {token!r} is not in the vocabulary; fix "
                                     "special_tokens_map.json / tokenizer_config.json")
        # As transformers 5 builds it (models/clip/tokenization_clip.py:CLIPTokenizer.__init__).
        backend = Tokenizer(models.BPE(vocab, merges, dropout=None, continuing_subword_prefix="",
                                       end_of_word_suffix=WORD_END, fuse_unk=False, unk_token=names["unk_token"]))
        backend.normalizer = normalizers.Sequence(
            [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(HF_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False)])
        backend.decoder = decoders.ByteLevel()
        # transformers registers every declared special token (a pad "!" included) as a special added token.
        backend.add_special_tokens([_special(t) for t in dict.fromkeys(
            [names["bos_token"], names["eos_token"], names["unk_token"], names["pad_token"]])])
        backend.post_processor = processors.RobertaProcessing(
            (names["eos_token"], vocab[names["eos_token"]]), (names["bos_token"], vocab[names["bos_token"]]),
            trim_offsets=False, add_prefix_space=False)
        return cls(backend, f"hf:{directory}", flavor="hf", clean=clean, pad_id=vocab[names["pad_token"]],
                   sot_token=names["bos_token"], eot_token=names["eos_token"], split=None)


def _hf_vocab_and_merges(directory: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tokenizer_json = directory / "tokenizer.json"
    if tokenizer_json.is_file():
        model = tokenizer_json_model(tokenizer_json)
        if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise TokenizerError(f"{tokenizer_json} does not hold a BPE model; a CLIP tokenizer folder is needed")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
        bad = [m for m in merges if len(m) != 2]
        if bad:
            raise TokenizerError(f"{tokenizer_json}: malformed merges such as {bad[0]!r}")
        return dict(model["vocab"]), [(a, b) for a, b in merges]
    vocab_json, merges_txt = directory / "vocab.json", directory / "merges.txt"
    if not (vocab_json.is_file() and merges_txt.is_file()):
        raise TokenizerError(f"no CLIP tokenizer in {directory}: expected tokenizer.json, or vocab.json and merges.txt")
    try:   # the reader transformers' CLIPTokenizer uses for these two files
        vocab, merges = models.BPE.read_file(str(vocab_json), str(merges_txt))
    except Exception as err:  # tokenizers raises a plain Exception for malformed files
        raise TokenizerError(f"{directory}: vocab.json / merges.txt are not a BPE vocabulary ({err})") from err
    return dict(vocab), [tuple(m) for m in merges]  # type: ignore[misc]


def _hf_special_tokens(directory: Path) -> dict[str, str]:
    names = {"bos_token": HF_SOT, "eos_token": HF_EOT, "unk_token": HF_EOT, "pad_token": HF_EOT}
    found: dict[str, str] = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):   # the first file that names a token wins
        path = directory / file
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise TokenizerError(f"{path} is not valid JSON ({err})") from err
        for role in names:
            value = config.get(role)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str) and role not in found:
                found[role] = value
    return {**names, **found}


register_tokenizer_kind(TokenizerKind(CLIPBPETokenizer.kind, CLIPBPETokenizer.from_saved,
                                      reads_folder=is_clip_bpe_folder, from_folder=CLIPBPETokenizer.from_hf))
