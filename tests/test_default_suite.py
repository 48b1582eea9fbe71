"""The two shipped suites `make run` and `make run-full` run, and what a report says about which produced a row."""

from __future__ import annotations

from pathlib import Path

from vlpbench.benchmarks.suite import load_suite
from vlpbench.methods import default_suite_methods, method_config
from vlpbench.reports.markdown import _sizes_line

REPO = Path(__file__).resolve().parents[1]


def test_make_run_is_the_cpu_suite_and_make_run_full_the_tiny_one() -> None:
    default, full = load_suite(None), load_suite(REPO / "benchmarks" / "suites" / "tiny.yaml")
    assert default.sizes == ["cpu"] and full.sizes == ["tiny"]
    assert full.method_names() == default.method_names() == default_suite_methods()
    assert full.benchmarks == default.benchmarks
    makefile = (REPO / "Makefile").read_text()
    assert "\t$(VENV)/bin/vlpbench run\n" in makefile                                   # make run: no suite file
    assert "\t$(VENV)/bin/vlpbench run --suite benchmarks/suites/tiny.yaml\n" in makefile   # make run-full


def test_cpu_is_smaller_and_cheaper_than_tiny_for_every_default_method() -> None:
    default = load_suite(None)
    cpu, tiny = (default.budget(s) for s in ("cpu", "tiny"))
    # cpu runs a few more steps than tiny (270 against 250: COTS needs them, docs/calibration.md) on a quarter of the
    # pixels with narrower, shallower towers: the pixels it pretrains on stay well under tiny's
    assert cpu.batch_size == tiny.batch_size and cpu.steps <= 1.2 * tiny.steps
    assert default.unimodal_budget("cpu").vision_steps < default.unimodal_budget("tiny").vision_steps
    assert default.dvae_budget("cpu").steps < default.dvae_budget("tiny").steps
    assert default.finetune.budget_for("cpu").steps <= default.finetune.budget_for("tiny").steps
    for method in default_suite_methods():
        small, large = method_config(method, "cpu"), method_config(method, "tiny")
        assert small.vision.image_size < large.vision.image_size, method         # type: ignore[attr-defined]
        assert cpu.steps * small.vision.image_size ** 2 < 0.5 * tiny.steps * large.vision.image_size ** 2, method  # type: ignore[attr-defined]
        assert small.vision.width < large.vision.width, method                   # type: ignore[attr-defined]
        assert small.text.width < large.text.width, method                       # type: ignore[attr-defined]


def test_tcl_ernie_and_scale_share_one_unimodal_stage_at_cpu_and_cots_has_deeper_towers() -> None:
    from vlpbench.methods import unimodal_towers
    from vlpbench.methods.registry import image_preprocess_config

    configs = {m: method_config(m, "cpu") for m in ("tcl", "ernie_vil2", "scale", "cots")}
    towers = {m: unimodal_towers(m, c) for m, c in configs.items()}
    shared = ("tcl", "ernie_vil2", "scale")
    # the stage's cache key: both towers and the image preprocessing its ViT is trained with
    assert len({towers[m]["vision"].model_dump_json() for m in shared}) == 1
    assert len({towers[m]["text"].model_dump_json() for m in shared}) == 1
    assert len({image_preprocess_config(m, configs[m]).model_dump_json() for m in configs}) == 1  # type: ignore[union-attr]
    # COTS: tiny's depth at the cpu width and resolution (two layers left it near chance, docs/calibration.md)
    assert towers["cots"]["vision"].depth == towers["cots"]["text"].depth == 4
    assert towers["tcl"]["vision"].depth == towers["tcl"]["text"].depth == 2
    assert towers["cots"]["vision"].width == towers["tcl"]["vision"].width == 96


def test_the_report_names_the_sizes_its_rows_come_from() -> None:
    line = "".join(_sizes_line(["cpu", "cpu", "tiny"]))
    assert "`cpu`: the default suite's preset (`make run`" in line
    assert "`tiny`: the calibrated tiny suite's preset (`make run-full`" in line
    assert line.index("`cpu`") < line.index("`tiny`")
    assert "`micro`" in "".join(_sizes_line(["micro"]))     # a size without a note is still named
    assert _sizes_line([]) == []
