"""Look at the HTML report as a person would: headless Chromium renders it to a PNG.

Used by `vlpbench report --screenshot` and by the browser test. Chromium (Debian's `chromium`) is optional: without
it `find_chromium()` returns None and callers say so. Every run gets its own throw-away profile folder, no network
features, and a time limit.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


class ScreenshotError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """The Chromium executable ($VLPBENCH_CHROMIUM, else the first of CANDIDATES on PATH), or None."""
    explicit = os.environ.get("VLPBENCH_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    exe = find_chromium()
    if exe is None:
        raise ScreenshotError("no Chromium found: install Debian's `chromium` (apt-get install chromium) or set "
                              "VLPBENCH_CHROMIUM to the browser's path")
    with tempfile.TemporaryDirectory(prefix="vlpbench-chromium-") as profile:
        try:
            return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                                  text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as err:
            raise ScreenshotError(f"Chromium did not finish within {timeout_s:.0f} s") from err


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 3000, timeout_s: float = 60.0) -> Path:
    """Render `html` in a width × height window and write the PNG (replacing any previous one)."""
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    tmp.unlink(missing_ok=True)
    done = _run([f"--window-size={width},{height}", f"--screenshot={tmp.resolve()}", html.resolve().as_uri()],
                timeout_s)
    if not tmp.is_file():
        raise ScreenshotError(f"Chromium wrote no screenshot of {html} (exit {done.returncode}): "
                              f"{done.stderr.strip()[-500:]}")
    os.replace(tmp, png)
    return png


def dump_dom(html: Path, *, timeout_s: float = 60.0) -> str:
    """The page's DOM after Chromium loaded it (what a browser actually parsed)."""
    done = _run(["--dump-dom", html.resolve().as_uri()], timeout_s)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise ScreenshotError(f"Chromium could not load {html} (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout
