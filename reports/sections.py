"""Report sections, registered by the benchmarks that write the records (benchmarks/registry.py).

A section is how the records of one benchmark (record names `<benchmark>` and `<benchmark>@<dataset>`) are
shown: its title, its place in reading order and its table layout. The reports import nothing of the
benchmarks: a benchmark registers its sections here, and records of a benchmark that registered none are
still shown, under their own name, with a generic metric table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# image_text: recall table with bootstrap intervals, recall-bar figure and paired tests (i2t_*/t2i_* metrics);
# video: t2v/v2t recalls and ranks; products: mAP/Prec per feature type; latency: per-stage timings and the
# per-query cost of each retrieval design; metrics: every metric of the records as a column.
Layout = Literal["image_text", "video", "products", "latency", "metrics"]


@dataclass(frozen=True)
class ReportSection:
    benchmark: str           # record name before '@'
    title: str
    layout: Layout = "metrics"
    order: int = 100         # reading order of sections (smaller first); ties by name


_SECTIONS: dict[str, ReportSection] = {}


def register_section(section: ReportSection) -> None:
    if section.benchmark in _SECTIONS and _SECTIONS[section.benchmark] != section:
        raise ValueError(f"report section {section.benchmark!r} is registered twice")
    _SECTIONS[section.benchmark] = section


def unregister_section(benchmark: str) -> None:
    _SECTIONS.pop(benchmark, None)


def section_of(record_name: str) -> ReportSection:
    """The section of a record (by the name before '@'); an unregistered benchmark gets a generic one, last."""
    base = record_name.partition("@")[0]
    return _SECTIONS.get(base) or ReportSection(base, base, "metrics", 1_000)


def title_of(record_name: str) -> str:
    return section_of(record_name).title


def section_order(record_name: str) -> tuple[int, str]:
    return (section_of(record_name).order, record_name)
