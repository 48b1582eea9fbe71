"""Scenes of the built-in world: objects with attributes on a 3x3 layout, plus hidden product facts.

A `Scene` is the single source of truth for one item: the image, the video, the audio, every
caption, the tags, the table and the category are all functions of it. Scenes are plain frozen
dataclasses so they serialise to JSON and compare by value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from vlpbench.benchmarks.data.builtin import lexicon as lx

GRID = 3
# Total displacement of a moving object over a clip, as a fraction of the image side.
MOTION_SPAN = 0.22


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    row: int
    col: int
    # Centre in [0, 1] image coordinates (x to the right, y down); jittered inside the cell.
    x: float
    y: float
    motion: str = "still"

    @property
    def label(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.size)


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    material: str
    brand: str
    # Seed for everything rendered from this scene (texture noise, colour jitter, audio noise).
    render_seed: int

    @property
    def main(self) -> SceneObject:
        """The most salient object: the largest, then the top-most, then the left-most."""
        return min(self.objects, key=lambda o: (o.size != "large", o.row, o.col))

    @property
    def category(self) -> str:
        """Product category label (M5Product-style): material and main shape."""
        return f"{self.material}-{self.main.shape}"

    def visual_key(self) -> tuple[Any, ...]:
        """What a viewer of the image can see; equal keys mean the same picture up to noise."""
        objs = tuple(sorted((o.shape, o.colour, o.size, o.row, o.col) for o in self.objects))
        return (self.background, objs)

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["objects"] = [{f.name: getattr(o, f.name) for f in fields(o)} for o in self.objects]
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> "Scene":
        objs = tuple(SceneObject(**o) for o in d["objects"])
        return Scene(objects=objs, background=d["background"], material=d["material"],
                     brand=d["brand"], render_seed=int(d["render_seed"]))


def _cell_centre(row: int, col: int, rng: np.random.Generator) -> tuple[float, float]:
    jitter = 0.16 / GRID
    x = (col + 0.5) / GRID + rng.uniform(-jitter, jitter)
    y = (row + 0.5) / GRID + rng.uniform(-jitter, jitter)
    return float(x), float(y)


def _allowed_motions(row: int, col: int) -> list[str]:
    """Moves that keep the object inside the frame for the whole clip."""
    out = ["still"]
    if col > 0:
        out.append("left")
    if col < GRID - 1:
        out.append("right")
    if row > 0:
        out.append("up")
    if row < GRID - 1:
        out.append("down")
    return out


def sample_scene(rng: np.random.Generator, n_objects_p: tuple[float, ...] = (0.15, 0.35, 0.3, 0.2),
                 repeat_p: float = 0.25, moving_p: float = 0.6) -> Scene:
    """Draw one scene: 1-4 objects in distinct cells; some repeat an earlier object (counts)."""
    n = int(rng.choice(len(n_objects_p), p=np.asarray(n_objects_p))) + 1
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    objects: list[SceneObject] = []
    for cell in cells:
        row, col = divmod(int(cell), GRID)
        if objects and rng.random() < repeat_p:
            shape, colour, size = objects[int(rng.integers(len(objects)))].identity
        else:
            shape = str(rng.choice(lx.SHAPES))
            colour = str(rng.choice(list(lx.COLOURS)))
            size = str(rng.choice(lx.SIZES))
        x, y = _cell_centre(row, col, rng)
        moves = _allowed_motions(row, col)
        motion = "still" if rng.random() >= moving_p else str(rng.choice(moves[1:]))
        objects.append(SceneObject(shape, colour, size, row, col, x, y, motion))
    return Scene(
        objects=tuple(objects),
        background=str(rng.choice(list(lx.BACKGROUNDS))),
        material=str(rng.choice(lx.MATERIALS)),
        brand=str(rng.choice(lx.BRANDS)),
        render_seed=int(rng.integers(2**31 - 1)),
    )


def make_twin(scene: Scene, rng: np.random.Generator) -> tuple[Scene, str] | None:
    """A compositional hard negative: the same objects with swapped attributes or places.

    Returns (twin, kind) with kind in {"swap_colour", "swap_size", "swap_position"}, or None when
    the scene has no two objects that a swap would change. The twin's bag of visual words
    (shapes, colours, sizes, places) equals the original's; only the binding differs.
    """
    objs = list(scene.objects)
    pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))]
    rng.shuffle(pairs)
    kinds = ["swap_colour", "swap_size", "swap_position"]
    rng.shuffle(kinds)
    for kind in kinds:
        for i, j in pairs:
            a, b = objs[i], objs[j]
            if kind == "swap_colour" and a.colour != b.colour and a.shape != b.shape:
                objs[i], objs[j] = replace(a, colour=b.colour), replace(b, colour=a.colour)
            elif kind == "swap_size" and a.size != b.size and a.shape != b.shape:
                objs[i], objs[j] = replace(a, size=b.size), replace(b, size=a.size)
            elif kind == "swap_position" and a.identity != b.identity:
                objs[i] = replace(a, row=b.row, col=b.col, x=b.x, y=b.y, motion=b.motion)
                objs[j] = replace(b, row=a.row, col=a.col, x=a.x, y=a.y, motion=a.motion)
            else:
                continue
            twin = replace(scene, objects=tuple(objs), render_seed=int(rng.integers(2**31 - 1)))
            return twin, kind
    return None
