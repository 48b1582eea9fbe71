"""Words about scenes: reference captions, noisy alt-text, video captions, tags and tables.

Reference captions imitate COCO/Flickr30K annotations: full sentences of varying detail, some
naming every object with its attributes, some only a relation, a position or a count. Alt-text
imitates what pretraining corpora scrape from the web: short keyword strings, often partial,
sometimes with the words jumbled (binding lost) and with junk tokens. Training on alt-text and
evaluating on reference captions is therefore a real zero-shot domain shift.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vlpbench.benchmarks.data.builtin import lexicon as lx
from vlpbench.benchmarks.data.builtin.scene import Scene, SceneObject


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _groups(scene: Scene) -> list[list[SceneObject]]:
    """Objects grouped by (shape, colour, size), in order of first appearance by salience."""
    ordered = sorted(scene.objects, key=lambda o: (o.size != "large", o.row, o.col))
    groups: dict[tuple[str, str, str], list[SceneObject]] = {}
    for o in ordered:
        groups.setdefault(o.identity, []).append(o)
    return list(groups.values())


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("x") else "s")


def _np(obj: SceneObject, count: int, rng: np.random.Generator, *, size_p: float = 0.6,
        colour: bool = True) -> str:
    """Noun phrase: 'a small red circle', 'two blue squares', 'an orange star'."""
    words: list[str] = []
    if rng.random() < size_p:
        words.append(_pick(rng, lx.SIZE_SYNONYMS[obj.size]))
    if colour:
        words.append(obj.colour)
    words.append(obj.shape if count == 1 else _plural(obj.shape))
    if count == 1:
        article = "an" if words[0][0] in "aeiou" else "a"
        return f"{article} {' '.join(words)}"
    return f"{lx.NUMBER_WORDS[count]} {' '.join(words)}"


def _join(parts: Sequence[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + "."


def _relation(a: SceneObject, b: SceneObject, rng: np.random.Generator) -> str | None:
    """A true spatial relation of a to b, or None if they share a cell line both ways."""
    options = []
    if a.col < b.col:
        options.append("to the left of")
    if a.col > b.col:
        options.append("to the right of")
    if a.row < b.row:
        options += ["above"]
    if a.row > b.row:
        options += ["below"]
    return _pick(rng, options) if options else None


def _background(scene: Scene, rng: np.random.Generator) -> str:
    return _pick(rng, (f" on a {scene.background} background", f" against a {scene.background} backdrop"))


def _cap_enumerate(scene: Scene, rng: np.random.Generator) -> str:
    groups = _groups(scene)
    phrases = [_np(g[0], len(g), rng) for g in groups]
    lead = _pick(rng, ("", "", "there is ", "a picture of ", "an image showing ")) if len(scene.objects) == 1 \
        else _pick(rng, ("", "", "there are ", "a picture of ", "an image showing "))
    bg = _background(scene, rng) if rng.random() < 0.5 else ""
    return _sentence(lead + _join(phrases) + bg)


def _cap_relation(scene: Scene, rng: np.random.Generator) -> str | None:
    objs = list(scene.objects)
    if len(objs) < 2:
        return None
    order = rng.permutation(len(objs))
    for i in order:
        for j in order:
            if i == j:
                continue
            rel = _relation(objs[i], objs[j], rng)
            if rel is None:
                continue
            text = f"{_np(objs[i], 1, rng)} {rel} {_np(objs[j], 1, rng)}"
            rest = [o for k, o in enumerate(objs) if k not in (i, j)]
            if rest and rng.random() < 0.5:
                text += ", plus " + _join([_np(o, 1, rng, size_p=0.3) for o in rest])
            if rng.random() < 0.2:
                text = "there is " + text
            return _sentence(text)
    return None


def _cap_positions(scene: Scene, rng: np.random.Generator) -> str:
    objs = sorted(scene.objects, key=lambda o: (o.row, o.col))
    parts = []
    for o in objs:
        where = lx.cell_phrase(o.row, o.col)
        if where == "center" or " " in where:
            prep = "in the"
        else:
            prep = "at the" if where in ("top", "bottom") else "on the"
        parts.append(f"{_np(o, 1, rng, size_p=0.4)} {prep} {where}")
    return _sentence(_join(parts))


def _cap_count(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    noun = _pick(rng, lx.OBJECT_NOUNS)
    head = f"{lx.NUMBER_WORDS[n]} {noun}{'s' if n > 1 else ''}"
    if rng.random() < 0.6:
        groups = _groups(scene)
        detail = _join([_np(g[0], len(g), rng, size_p=0.0, colour=rng.random() < 0.5) for g in groups])
        return _sentence(f"{head}{_background(scene, rng)}: {detail}")
    return _sentence(head + _background(scene, rng))


def _cap_main(scene: Scene, rng: np.random.Generator) -> str:
    main = scene.main
    others = len(scene.objects) - 1
    phrase = _np(main, 1, rng, size_p=0.8)
    if others == 0:
        return _sentence(_pick(rng, (f"{phrase} alone", f"a single {main.colour} {main.shape}",
                                     f"just {phrase}")) + _background(scene, rng))
    other = "other " + ("shape" if others == 1 else "shapes")
    return _sentence(f"{phrase} with {lx.NUMBER_WORDS[others]} {other}")


_CAPTION_STYLES = (
    (_cap_enumerate, 0.30),
    (_cap_relation, 0.25),
    (_cap_positions, 0.20),
    (_cap_main, 0.15),
    (_cap_count, 0.10),
)


def reference_captions(scene: Scene, n: int, rng: np.random.Generator) -> list[str]:
    """n distinct COCO-style captions of the image (distinct when the scene allows it)."""
    styles = [s for s, _ in _CAPTION_STYLES]
    weights = np.asarray([w for _, w in _CAPTION_STYLES])
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        style = styles[int(rng.choice(len(styles), p=weights))]
        cap = style(scene, rng)
        if cap is None or (cap in out and attempts < 50):
            continue
        out.append(cap)
    return out


def alt_text(scene: Scene, rng: np.random.Generator) -> str:
    """Short noisy web-style alt-text: keyword lists, short phrases, often partial, sometimes jumbled.

    Mixture (probabilities): keywords with binding kept 0.35, a short natural phrase 0.2, the
    main object only 0.15, a product listing 0.1, a relation fragment 0.1, a jumbled bag of
    words (binding lost) 0.1; then, independently, a lead-in ('photo of'), the background, junk
    tokens and a number.
    """
    objs = sorted(scene.objects, key=lambda o: (o.size != "large", o.row, o.col))
    style = int(rng.choice(6, p=[0.35, 0.2, 0.15, 0.1, 0.1, 0.1]))

    def bound(o: SceneObject) -> str:
        size = (_pick(rng, lx.SIZE_SYNONYMS[o.size]) + " ") if rng.random() < 0.4 else ""
        return f"{size}{o.colour} {o.shape}"

    if style == 0:  # keyword list, binding kept
        chosen = [bound(o) for o in objs]
        rng.shuffle(chosen)
        text = _pick(rng, (" ", ", ", " ", " | ")).join(chosen)
    elif style == 1:  # a short natural phrase, often leaving objects out
        keep = objs[: int(rng.integers(1, len(objs) + 1))]
        text = _join([_np(o, 1, rng, size_p=0.4) for o in keep])
    elif style == 2:  # partial: the main object only
        text = bound(objs[0])
    elif style == 3:  # product listing
        m = scene.main
        text = f"{lx.MATERIAL_ADJECTIVE[scene.material]} {m.colour} {m.shape} toy {scene.brand}"
    elif style == 4:  # relation fragment
        text = bound(objs[0])
        if len(objs) > 1:
            rel = _relation(objs[0], objs[1], rng)
            text = f"{text} {rel.replace('to the ', '') if rel else 'and'} {bound(objs[1])}"
    else:  # bag of words, binding lost
        words = " ".join(bound(o) for o in objs).split()
        rng.shuffle(words)
        text = " ".join(words)
    if rng.random() < 0.2:
        text = _pick(rng, ("photo of ", "image of ", "picture of ", "a photo of ")) + text
    if rng.random() < 0.25:
        text += f" {scene.background} background"
    if rng.random() < 0.5:
        junk = _pick(rng, lx.ALT_NOISE)
        text = f"{junk} {text}" if rng.random() < 0.5 else f"{text} {junk}"
    if rng.random() < 0.15:
        text += f" {int(rng.integers(100, 9999))}"
    return text


def _moving_np(o: SceneObject, rng: np.random.Generator) -> str:
    return _np(o, 1, rng, size_p=0.4)


def video_captions(scene: Scene, n: int, rng: np.random.Generator) -> list[str]:
    """Captions of the clip; every caption describes at least one object's motion."""
    objs = sorted(scene.objects, key=lambda o: (o.motion == "still", o.size != "large", o.row, o.col))
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        style = int(rng.integers(3))
        a = objs[0]
        if style == 0:
            text = f"{_moving_np(a, rng)} {_pick(rng, lx.MOTION_PHRASES[a.motion])}"
            if len(objs) > 1:
                b = objs[1]
                link = _pick(rng, (" while ", " and "))
                text += f"{link}{_moving_np(b, rng)} {_pick(rng, lx.MOTION_PHRASES[b.motion])}"
        elif style == 1:
            verb = lx.MOTION_PHRASES[a.motion][0]
            text = _pick(rng, ("a video of ", "a clip of ", "footage of ")) + \
                f"{_moving_np(a, rng)} that {verb}"
        else:
            parts = [f"{_moving_np(o, rng)} that {_pick(rng, lx.MOTION_PHRASES[o.motion])}" for o in objs[:3]]
            text = f"{lx.NUMBER_WORDS[len(objs)]} shape{'s' if len(objs) > 1 else ''}: " + _join(parts)
        cap = _sentence(text)
        if cap in out and attempts < 50:
            continue
        out.append(cap)
    return out


def tags(scene: Scene) -> list[str]:
    """Detector-style object tags ('colour shape' per instance), most salient first."""
    objs = sorted(scene.objects, key=lambda o: (o.size != "large", o.row, o.col))
    return [o.label for o in objs]


def table(scene: Scene) -> list[tuple[str, str]]:
    """Product-style property/value pairs (M5Product's table modality)."""
    m = scene.main
    return [
        ("shape", m.shape),
        ("colour", m.colour),
        ("size", m.size),
        ("pieces", str(len(scene.objects))),
        ("material", scene.material),
        ("brand", scene.brand),
        ("background", scene.background),
    ]
