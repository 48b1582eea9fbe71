"""The report as one self-contained HTML page: the Markdown report rendered, its figures embedded.

The page is the Markdown report itself (same sections, same tables: one source of content), rendered with
markdown-it (CommonMark + tables). Every figure the Markdown links (`figures/<name>.png`, relative to the report)
is embedded as a base64 data URI, and the style sheet is inline, so the file opens anywhere, offline, alone: no
external script, font or image. Raw HTML in the Markdown is not passed through (escaped instead).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; margin: 0;
       background: #fafafa; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 26px; border-bottom: 2px solid #0173b2; padding-bottom: 6px; }
h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 16px; margin-top: 24px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 12.5px; display: block; overflow-x: auto;
        max-width: 100%; }
th, td { border: 1px solid #d8d8d8; padding: 3px 7px; text-align: left; white-space: nowrap; }
th { background: #eef3f8; position: sticky; top: 0; }
tr:nth-child(even) td { background: #f8f9fb; }
code { background: #f1f1f1; padding: 0 3px; border-radius: 3px; font-size: 12.5px; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0 4px; border: 1px solid #eee; }
p em { color: #555; }
"""


class FigureMissing(FileNotFoundError):
    pass


def _embed(src: str, base: Path) -> str:
    if src.startswith("data:"):
        return src
    path = (base / src).resolve()
    if not path.is_file():
        raise FigureMissing(f"the report links the figure {src}, but {path} does not exist; re-run `vlpbench report`")
    mime = {"png": "image/png", "svg": "image/svg+xml", "jpg": "image/jpeg"}.get(path.suffix.lstrip(".").lower())
    if mime is None:
        raise FigureMissing(f"{path}: only PNG, SVG or JPEG figures can be embedded")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def render_html(markdown_text: str, *, title: str, base: Path) -> str:
    """HTML page for the Markdown report; figures (relative to `base`, the report's folder) embedded."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def image(renderer: Any, tokens: Sequence[Any], idx: int, options: Any, env: Any) -> str:
        token = tokens[idx]
        src = _embed(str(token.attrGet("src") or ""), base)
        alt = html.escape("".join(c.content for c in (token.children or [])), quote=True)
        return f'<img src="{src}" alt="{alt}" loading="eager">'

    md.add_render_rule("image", image)
    body = md.render(markdown_text)
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n<main>\n{body}</main>\n</body>\n</html>\n")
