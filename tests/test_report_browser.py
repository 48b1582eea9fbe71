"""The HTML report as a person sees it: headless Chromium loads it and takes a screenshot.

Skips (and says why) where Chromium is absent; CI installs Debian's `chromium` in .ci/run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlpbench.benchmarks import cli
from vlpbench.reports.build import build_report
from vlpbench.reports.plots import method_styles
from vlpbench.reports.screenshot import dump_dom, find_chromium
from vlpbench.reports.sources import from_folder
from tests.report_fixtures import make_suite

pytestmark = [pytest.mark.integration,   # a browser process: make test-integration (CI)
              pytest.mark.skipif(find_chromium() is None,
                                 reason="Chromium is absent: `apt-get install chromium` (.ci/run installs it) or set "
                                        "VLPBENCH_CHROMIUM")]


def _hex(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def test_chromium_renders_tables_and_every_embedded_figure(tmp_path: Path) -> None:
    suite_dir = make_suite(tmp_path)
    files = build_report(from_folder(suite_dir), suite_dir, title="fixture", n_resamples=200)
    dom = dump_dom(files.html)
    assert dom.count("<img ") == 6 and dom.count("<table>") >= 8 and "Latency vs accuracy" in dom
    assert cli.main(["report", "--suite", str(_suite_file(tmp_path)), "--output", str(tmp_path), "--source", "files",
                     "--screenshot"]) == 0
    shot = suite_dir / "report.png"
    with Image.open(shot) as im:
        assert im.size == (1280, 3000)
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    # not a blank page: text, table shading and plots give many colours ...
    assert len(np.unique(pixels, axis=0)) > 200
    # ... and the figures were decoded and painted: CLIP's colour (every plot uses it) is on screen
    clip = np.array(_hex(method_styles(["clip"])["clip"].color))
    assert (np.abs(pixels.astype(int) - clip).sum(axis=1) < 30).sum() > 500


def _suite_file(tmp: Path) -> Path:
    path = tmp / "suite.yaml"
    path.write_text("name: fixture\nmethods: [clip, tcl]\n")
    return path
