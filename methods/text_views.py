"""Textual views derived from a caption, for corpora that have no second text of their own.

`caption_words` is the "tags derived from the caption" fallback of ERNIE-ViL 2.0's object-tag
view: the caption's content words in order (lower-cased, function words and punctuation
removed), a word sequence shaped like a detector's tag list ("a small blue star above a red
ring." -> "small blue star red ring"). It needs no tagger, so it runs offline on any corpus.
"""

from __future__ import annotations

import re

# Function words: articles, prepositions, conjunctions, pronouns, auxiliaries, spatial relations and
# picture-framing words that name no object or attribute.
STOP_WORDS: frozenset[str] = frozenset("""
a an the this that these those there here it its they them their he she his her we our you your i my me
is are was were be been being am has have had do does did will would can could may might shall should
and or but nor so yet of in on at to from by with without into onto over under above below between
among through during before after up down out off about against along around behind beside near
next left right top bottom center centre middle front back other another some any each every all both
either neither such own same than too very just also only not no one two three four five six seven
eight nine ten photo picture image shot view showing shows shown featuring
""".split())

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def caption_words(caption: str) -> str:
    """The caption's content words, in order, separated by single spaces ("" if none remain)."""
    return " ".join(w for w in _WORD.findall(caption.lower()) if w not in STOP_WORDS)
