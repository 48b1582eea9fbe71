"""Pixels and sound from a `Scene`; pure functions of (scene, parameters), deterministic.

Images are drawn at 2x and box-filtered down (cheap anti-aliasing), with per-object colour
jitter and a faint background texture from the scene's own render seed, so two renders of one
scene are byte-identical and two scenes never share noise. A video is the same drawing with
objects displaced along their motion; its first frame equals the image. Audio encodes hidden
and visible attributes: one note per object, pitch from colour, timbre and decay from the
scene's material, loudness from size.
"""

from __future__ import annotations

import numpy as np

from vlpbench.benchmarks.data.builtin import lexicon as lx
from vlpbench.benchmarks.data.builtin.scene import MOTION_SPAN, Scene, SceneObject

SUPERSAMPLE = 2

_MOTION_VECTORS: dict[str, tuple[float, float]] = {
    "still": (0.0, 0.0), "left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0),
}


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of a shape centred at the origin with radius r; dy grows downward."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8 * r
    if shape == "triangle":  # apex up
        h = 0.9 * r
        return (dy <= h) & (dy >= -h) & (np.abs(dx) <= (dy + h) * 0.6)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "cross":
        w = 0.34 * r
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if shape == "hexagon":
        ax, ay = np.abs(dx), np.abs(dy)
        return (ay <= 0.866 * r) & (0.866 * ax + 0.5 * ay <= 0.866 * r)
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "star":
        theta = np.arctan2(dy, dx) + np.pi / 2
        rad = np.sqrt(dx * dx + dy * dy)
        return rad <= r * (0.42 + 0.58 * ((1 + np.cos(5 * theta)) / 2) ** 2)
    raise ValueError(f"unknown shape {shape!r}; known: {lx.SHAPES}")


def _object_colours(scene: Scene, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for o in scene.objects:
        base = np.asarray(lx.COLOURS[o.colour], dtype=np.float32)
        out.append(np.clip(base + rng.normal(0.0, 10.0, size=3), 0, 255))
    return out


def _draw(scene: Scene, size: int, positions: list[tuple[float, float]], colours: list[np.ndarray],
          texture: np.ndarray) -> np.ndarray:
    s = size * SUPERSAMPLE
    canvas = np.empty((s, s, 3), dtype=np.float32)
    canvas[:] = np.asarray(lx.BACKGROUNDS[scene.background], dtype=np.float32)
    canvas += texture[:, :, None]
    coords = (np.arange(s, dtype=np.float32) + 0.5) / s
    # Large objects first so that small ones stay visible when clips make them overlap.
    order = sorted(range(len(scene.objects)), key=lambda i: scene.objects[i].size != "large")
    for i in order:
        o: SceneObject = scene.objects[i]
        cx, cy = positions[i]
        r = lx.SIZE_RADIUS[o.size]
        x0, x1 = np.searchsorted(coords, [cx - r - 0.01, cx + r + 0.01])
        y0, y1 = np.searchsorted(coords, [cy - r - 0.01, cy + r + 0.01])
        dx = coords[None, x0:x1] - cx
        dy = coords[y0:y1, None] - cy
        mask = _shape_mask(o.shape, dx, dy, r)
        canvas[y0:y1, x0:x1][mask] = colours[i]
    # Box-filter the supersampled canvas (explicit slices: much faster than a strided mean).
    small = sum(canvas[i::SUPERSAMPLE, j::SUPERSAMPLE] for i in range(SUPERSAMPLE) for j in range(SUPERSAMPLE))
    small = small * (1.0 / SUPERSAMPLE**2)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.normal(0.0, 4.0, size=(size // 4 + 1, size // 4 + 1)).astype(np.float32)
    tex = np.kron(coarse, np.ones((4 * SUPERSAMPLE, 4 * SUPERSAMPLE), dtype=np.float32))
    return tex[: size * SUPERSAMPLE, : size * SUPERSAMPLE]


def render_video(scene: Scene, size: int, frames: int) -> np.ndarray:
    """(frames, size, size, 3) uint8; frame 0 equals `render_image(scene, size)`."""
    rng = np.random.default_rng(scene.render_seed)
    colours = _object_colours(scene, rng)
    texture = _texture(rng, size)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        frac = t / max(frames - 1, 1)
        positions = []
        for o in scene.objects:
            vx, vy = _MOTION_VECTORS[o.motion]
            positions.append((o.x + vx * MOTION_SPAN * frac, o.y + vy * MOTION_SPAN * frac))
        out[t] = _draw(scene, size, positions, colours, texture)
    return out


def render_image(scene: Scene, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB picture of the scene at its initial positions."""
    return render_video(scene, size, frames=1)[0]


# One pitch per colour: a pentatonic-ish ladder from A3 so that notes are well separated.
_COLOUR_PITCH: dict[str, float] = {
    c: 220.0 * 2.0 ** (k * 3 / 12) for k, c in enumerate(lx.COLOURS)
}
# Material -> (partial frequency ratios, partial amplitudes, decay rate per second).
_TIMBRE: dict[str, tuple[tuple[float, ...], tuple[float, ...], float]] = {
    "wood": ((1.0, 2.0), (1.0, 0.3), 18.0),
    "metal": ((1.0, 2.76, 5.4), (1.0, 0.6, 0.4), 3.0),
    "plastic": ((1.0, 3.0, 5.0), (1.0, 0.33, 0.2), 9.0),
    "glass": ((1.0, 4.0), (1.0, 0.5), 6.0),
}


def render_audio(scene: Scene, sample_rate: int = 16000, seconds: float = 1.0) -> np.ndarray:
    """Mono float32 waveform in [-1, 1]: a note per object (salience order), then faint noise."""
    n = int(round(sample_rate * seconds))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = np.zeros(n, dtype=np.float64)
    ratios, amps, decay = _TIMBRE[scene.material]
    objs = sorted(scene.objects, key=lambda o: (o.size != "large", o.row, o.col))
    slot = seconds / max(len(objs), 1)
    for k, o in enumerate(objs):
        local = t - k * slot
        # The note sounds in its own slot only: compute it there (the samples outside would add exact zeros).
        inside = np.flatnonzero((local >= 0) & (local < slot))
        if inside.size == 0:
            continue
        seg = slice(int(inside[0]), int(inside[-1]) + 1)
        local = local[seg]
        env = np.exp(-decay * local)
        attack = np.clip(local / 0.005, 0.0, 1.0)
        loud = 0.6 if o.size == "large" else 0.3
        f0 = _COLOUR_PITCH[o.colour]
        tone = sum(a * np.sin(2 * np.pi * f0 * r * local) for r, a in zip(ratios, amps))
        wave[seg] += loud * env * attack * tone / sum(amps)
    rng = np.random.default_rng(scene.render_seed + 1)
    wave += rng.normal(0.0, 0.01, size=n)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)
