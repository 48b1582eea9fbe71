"""The vocabulary of the built-in world: what exists in it and how it is named.

Everything here is data. The scene sampler (`scene.py`) draws from these tables, the renderer
(`render.py`) turns them into pixels and sound, and the text generator (`language.py`) into
words. Changing a table changes the world, so the generator version in `build.py` must be
bumped with it.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "ring",
)

# Nominal sRGB of each colour word; the renderer jitters around it.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 200),
    "yellow": (240, 210, 30),
    "purple": (140, 70, 180),
    "orange": (250, 130, 20),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "sand": (196, 176, 140),
    "teal": (70, 130, 135),
}

SIZES: tuple[str, ...] = ("small", "large")
# Object radius as a fraction of the image side.
SIZE_RADIUS: dict[str, float] = {"small": 0.095, "large": 0.15}

# Hidden (not visible) product attribute: heard in the audio, written in the table.
MATERIALS: tuple[str, ...] = ("wood", "metal", "plastic", "glass")
MATERIAL_ADJECTIVE: dict[str, str] = {
    "wood": "wooden", "metal": "metal", "plastic": "plastic", "glass": "glass",
}
BRANDS: tuple[str, ...] = ("acme", "zenith", "orbit", "nova", "pico", "umbra")

MOTIONS: tuple[str, ...] = ("still", "left", "right", "up", "down")
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "still": ("stays still", "does not move", "stays in place"),
    "left": ("moves to the left", "slides left", "drifts to the left"),
    "right": ("moves to the right", "slides right", "drifts to the right"),
    "up": ("moves up", "rises", "slides upward"),
    "down": ("moves down", "falls", "slides downward"),
}

# 3x3 layout grid: (row, col) -> words.
ROW_WORDS: tuple[str, ...] = ("top", "middle", "bottom")
COL_WORDS: tuple[str, ...] = ("left", "center", "right")


def cell_phrase(row: int, col: int) -> str:
    """'top left', 'top', 'center', 'bottom right', ... for a grid cell."""
    if row == 1 and col == 1:
        return "center"
    if row == 1:
        return COL_WORDS[col]
    if col == 1:
        return ROW_WORDS[row]
    return f"{ROW_WORDS[row]} {COL_WORDS[col]}"


SIZE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little", "tiny"),
    "large": ("large", "big"),
}
OBJECT_NOUNS: tuple[str, ...] = ("shape", "object", "figure")
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}

# Words that make alt-text look like text scraped with web images.
ALT_NOISE: tuple[str, ...] = (
    "stock photo", "img", "jpg", "free download", "hd", "wallpaper", "clipart",
    "new", "sale", "buy now", "design", "pattern", "vector", "cute",
)
