"""Benchmarks as registered objects, like methods (methods/registry.py).

A `BenchmarkSpec` owns everything the harness needs to know about one benchmark:

- its suite section (`section`, validated by `settings`): the YAML mapping a suite sets it with, e.g. ``video:``;
- which of those settings enter the job fingerprint (`fingerprinted`; evaluation settings do not change the
  trained weights, so by default none do and changing them re-evaluates without pretraining again);
- its runner (`run`: trained model -> evaluation records written atomically) and the records it writes for a
  model (`records`: finished work is reused);
- the split its log line names (`describe_split`) and the one line a finished record prints (`headline`);
- its report sections (`report`: reports/sections.py), registered with the reports when the benchmark is.

The built-in benchmarks live one per module in benchmarks/tasks/ and register on import of `benchmarks`.
A new benchmark is one module that calls `register_benchmark(BenchmarkSpec(...))`; docs/architecture.md walks
through it. This module imports no other run machinery: the suite (benchmarks/suite.py) subscribes to
registrations to add each benchmark's section to its schema.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlpbench.methods.config import ConfigError, StrictModel
from vlpbench.reports.sections import ReportSection, register_section, unregister_section

if TYPE_CHECKING:
    from vlpbench.benchmarks.data import BuiltinDataset
    from vlpbench.methods import VLPModel
    from vlpbench.reports.store import PretrainRecord

# (job: benchmarks.job.Job, job folder, trained model, the suite's built-in dataset, resolved job config, pretraining
# record) -> {record name: results.json path}. (Jobs are typed Any here: a job holds its suite, whose schema
# this registry extends, so naming the type would make an import cycle.)
Runner = Callable[[Any, Path, "VLPModel", "BuiltinDataset", dict[str, Any], "PretrainRecord"], dict[str, Path]]


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    section: str                               # the suite field holding its settings
    settings: type[StrictModel]                # that field's schema (every field has a default)
    run: Runner
    records: Callable[[Any, "VLPModel"], list[str]]         # (job, model) -> the records it writes
    headline: Callable[[Mapping[str, float]], str]
    describe_split: Callable[[Any], str]       # suite -> what the log line says the benchmark runs on
    description: str = ""
    fingerprinted: frozenset[str] = frozenset()   # settings fields that change the trained weights
    distributed: bool = False                  # evaluates in a process group and gives the one-process numbers
    in_default_suite: bool = False             # listed by a suite that names no benchmarks
    # The section is in every job's config.json, not only when the suite runs the benchmark (the built-in
    # sections always were: records written before benchmarks were registered keep matching their jobs).
    always_in_config: bool = False
    report: Sequence[ReportSection] = field(default_factory=tuple)


_REGISTRY: dict[str, BenchmarkSpec] = {}
_SUBSCRIBERS: list[Callable[[BenchmarkSpec, bool], None]] = []


def register_benchmark(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Register `spec`; its suite section and report sections become known. A name or section used twice is
    refused."""
    if spec.name in _REGISTRY:
        raise ValueError(f"benchmark {spec.name!r} is registered twice")
    taken = {s.section: s.name for s in _REGISTRY.values()}
    if spec.section in taken:
        raise ValueError(f"benchmark {spec.name!r}: suite section {spec.section!r} belongs to {taken[spec.section]!r}"
                         "; give it its own section")
    unknown = sorted(spec.fingerprinted - set(spec.settings.model_fields))
    if unknown:
        raise ValueError(f"benchmark {spec.name!r}: fingerprinted settings {unknown} are not fields of "
                         f"{spec.settings.__name__}")
    _REGISTRY[spec.name] = spec
    for section in spec.report:
        register_section(section)
    for notify in _SUBSCRIBERS:
        notify(spec, True)
    return spec


def unregister_benchmark(name: str) -> None:
    """Remove a benchmark (tests that register a toy one clean up with this)."""
    spec = _REGISTRY.pop(name)
    for section in spec.report:
        unregister_section(section.benchmark)
    for notify in _SUBSCRIBERS:
        notify(spec, False)


def subscribe(callback: Callable[[BenchmarkSpec, bool], None]) -> None:
    """`callback(spec, registered)` for every benchmark registered so far and every later (un)registration."""
    _SUBSCRIBERS.append(callback)
    for spec in list(_REGISTRY.values()):
        callback(spec, True)


def list_benchmarks(pattern: str = "*") -> list[str]:
    """Registered benchmark names in registration order (the order a suite runs them in by default)."""
    return [n for n in _REGISTRY if fnmatch.fnmatch(n, pattern)]


def default_benchmarks() -> list[str]:
    return [n for n, s in _REGISTRY.items() if s.in_default_suite]


def distributed_benchmarks() -> frozenset[str]:
    """Benchmarks whose evaluation shards across a process group and gives the one-process numbers."""
    return frozenset(n for n, s in _REGISTRY.items() if s.distributed)


def get_benchmark(name: str) -> BenchmarkSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}; registered: {', '.join(_REGISTRY)}") from None


def benchmark_of_record(record: str) -> BenchmarkSpec | None:
    """The benchmark whose records include `record` (a results folder name such as 'zeroshot_retrieval@coco')."""
    base = record.partition("@")[0]
    for spec in _REGISTRY.values():
        if base == spec.name or any(base == s.benchmark for s in spec.report):
            return spec
    return None
