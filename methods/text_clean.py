"""Caption cleaning that released checkpoints were trained with, as a named, saveable option.

A tokenizer carries a `clean` spec (saved beside it and part of its fingerprint), so the text
preprocessing a model was trained with travels with the model:

- `"none"`: the text as given;
- `"open_clip"`: open_clip's default `SimpleTokenizer` cleaning (`clean='lower'`), see `open_clip_clean`;
- `"open_clip:whitespace"`, `"open_clip:canonicalize"`: its two other modes;
- `"pre_caption:N"`: ALBEF/TCL's `pre_caption(caption, max_words=N)`, see `pre_caption`
  (`"pre_caption"` alone means `"pre_caption:30"`, the value their caption datasets use).

`ftfy` is imported only when an `open_clip` mode is used.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Callable
from functools import lru_cache

NONE = "none"
OPEN_CLIP_MODES: tuple[str, ...] = ("lower", "whitespace", "canonicalize")
PRE_CAPTION_DEFAULT_WORDS = 30

# salesforce/ALBEF and uta-smile/TCL, dataset/utils.py:pre_caption (identical in both repositories).
_PRE_CAPTION_DELETE = re.compile(r"([,.'!?\"()*#:;~])")
_PRE_CAPTION_RUNS = re.compile(r"\s{2,}")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class CleanSpecError(ValueError):
    pass


def pre_caption(text: str, max_words: int = PRE_CAPTION_DEFAULT_WORDS) -> str:
    """ALBEF/TCL caption preprocessing (salesforce/ALBEF and uta-smile/TCL, dataset/utils.py:pre_caption).

    In order: lower-case; delete each of ``,.'!?"()*#:;~``; `-` and `/` become spaces; `<person>`
    becomes `person`; every run of two or more whitespace characters (Python `re` `\\s`, Unicode)
    becomes one space; trailing newlines, then leading/trailing spaces, are stripped; the text is
    split on single spaces and only the first `max_words` pieces are kept.

    Quirks kept on purpose: a lone tab or newline inside the text survives (only runs of two or
    more whitespace characters are collapsed) and does not separate words for the word limit;
    a leading newline is not stripped; `'` is deleted, so "it's" becomes "its".
    """
    text = _PRE_CAPTION_DELETE.sub("", text.lower()).replace("-", " ").replace("/", " ")
    text = text.replace("<person>", "person")
    text = _PRE_CAPTION_RUNS.sub(" ", text)
    text = text.rstrip("\n").strip(" ")
    words = text.split(" ")
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


@lru_cache(maxsize=1)
def _fix_text() -> Callable[[str], str]:
    try:
        import ftfy
    except ImportError as err:  # pragma: no cover - ftfy ships with open_clip_torch
        raise CleanSpecError("text cleaning 'open_clip' needs the ftfy package (open_clip runs ftfy.fix_text "
                             "on every caption): install ftfy, or use clean='none'") from err
    fix: Callable[[str], str] = ftfy.fix_text
    return fix


def _basic_clean(text: str) -> str:
    # open_clip (mlfoundations/open_clip, src/open_clip/tokenizer.py:basic_clean): ftfy with its default
    # configuration, HTML entities unescaped twice ("&amp;amp;" -> "&"), then outer whitespace stripped.
    return html.unescape(html.unescape(_fix_text()(text))).strip()


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


def open_clip_clean(text: str, mode: str = "lower") -> str:
    """open_clip's `SimpleTokenizer` cleaning (mlfoundations/open_clip, src/open_clip/tokenizer.py:
    `_clean_lower`, `_clean_whitespace`, `_clean_canonicalize`).

    All modes first run `ftfy.fix_text` (default options: mojibake repair, curly quotes to straight,
    ligatures and full-width characters to plain ones, control characters removed, NFC), unescape
    HTML entities twice and strip. Then:
    - `lower` (the default of `open_clip.tokenize`): whitespace runs become one space, then lower-case;
    - `whitespace`: whitespace runs become one space (case kept);
    - `canonicalize`: `_` becomes a space, ASCII punctuation is deleted, lower-case, whitespace runs
      become one space.
    """
    text = _basic_clean(text)
    if mode == "lower":
        return _whitespace_clean(text).lower()
    if mode == "whitespace":
        return _whitespace_clean(text)
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
        return " ".join(text.split()).strip()
    raise CleanSpecError(f"unknown open_clip cleaning mode {mode!r}; expected one of {OPEN_CLIP_MODES}")


def canonical_clean_spec(spec: str) -> str:
    """The spec in its one saved spelling (`open_clip:lower` -> `open_clip`, `pre_caption` -> `pre_caption:30`);
    an unknown spec is an error listing the known ones."""
    head, _, arg = spec.strip().partition(":")
    if head == NONE and not arg:
        return NONE
    if head == "open_clip":
        mode = arg or "lower"
        if mode not in OPEN_CLIP_MODES:
            raise CleanSpecError(f"clean {spec!r}: open_clip mode must be one of {OPEN_CLIP_MODES}")
        return "open_clip" if mode == "lower" else f"open_clip:{mode}"
    if head == "pre_caption":
        words = arg or str(PRE_CAPTION_DEFAULT_WORDS)
        if not words.isdigit() or int(words) < 1:
            raise CleanSpecError(f"clean {spec!r}: pre_caption takes a positive word limit, e.g. 'pre_caption:30'")
        return f"pre_caption:{int(words)}"
    raise CleanSpecError(f"unknown text cleaning {spec!r}; expected 'none', 'open_clip', 'open_clip:whitespace', "
                         "'open_clip:canonicalize' or 'pre_caption:N' (N = word limit)")


def make_cleaner(spec: str) -> Callable[[str], str] | None:
    """The function a spec names; None for 'none' (the text is used as given)."""
    spec = canonical_clean_spec(spec)
    if spec == NONE:
        return None
    head, _, arg = spec.partition(":")
    if head == "open_clip":
        mode = arg or "lower"
        _fix_text()  # fail now, not on the first batch, when ftfy is missing
        return lambda text: open_clip_clean(text, mode)
    words = int(arg)
    return lambda text: pre_caption(text, words)
