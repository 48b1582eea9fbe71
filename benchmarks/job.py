"""A job: one method (or variant of it) at one preset and seed of a suite; its folder is jobs/<name>/."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlpbench.benchmarks.suite import Suite


@dataclass(frozen=True)
class Job:
    suite: Suite
    method: str
    size: str
    seed: int
    variant: str | None = None   # a suite variant of `method` (its own overrides)

    @property
    def label(self) -> str:
        return self.variant or self.method

    @property
    def name(self) -> str:
        return f"{self.label}-{self.size}-s{self.seed}"

    @property
    def method_overrides(self) -> dict[str, Any]:
        return self.suite.overrides_for(self.label, "method")

    @property
    def recipe_overrides(self) -> dict[str, Any]:
        return self.suite.overrides_for(self.label, "recipe")


def expand_jobs(suite: Suite) -> list[Job]:
    return [Job(suite, suite.method_of(m), s, seed, m if m in suite.variants else None)
            for m in suite.method_names() for s in suite.sizes for seed in suite.seeds]
