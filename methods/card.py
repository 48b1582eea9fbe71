"""Method cards: what a paper claims, where the claim comes from, and how we differ.

A card travels with the method (and is copied into every result), so a report can put the
paper's number beside ours with its source and confidence, and a reader sees each deviation
from the paper or the official code as a named config option.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Confidence(str, Enum):
    """Confidence legend of ../shared/reference/methods.md §0."""

    VERIFIED = "V"            # primary source: official code at a commit, official README, author comment
    SECONDARY = "S"           # secondary source quoting the paper
    MEMORY_HIGH = "M-high"    # recollection of the paper, not verified
    MEMORY_MEDIUM = "M-medium"
    MEMORY_LOW = "M-low"
    RECONSTRUCTION = "R"      # our reasonable implementation of something not specified


@dataclass(frozen=True)
class ClaimedResult:
    """One row of a paper's results table."""

    benchmark: str            # our benchmark family, e.g. "image_text_retrieval"
    dataset: str              # e.g. "flickr30k-karpathy-test-1k", "coco-karpathy-test-5k"
    setting: str              # "zero-shot" or "fine-tuned"
    model: str                # the paper's model variant, e.g. "ViT-L/14@336px"
    metrics: dict[str, float]  # our metric names (i2t_R1, t2i_R5, ...), percent
    source: str
    confidence: Confidence
    protocol: dict[str, Any] = field(default_factory=dict)  # resolution, prompt, lineage, scoring...
    notes: str = ""


def retrieval_claim(dataset: str, setting: str, model: str, i2t: tuple[float, float, float],
                    t2i: tuple[float, float, float], source: str, confidence: Confidence, **protocol: Any
                    ) -> ClaimedResult:
    """A paper's image-text retrieval row: TR@1/5/10 (image→text) and IR@1/5/10 (text→image)."""
    metrics = {f"i2t_R{k}": v for k, v in zip((1, 5, 10), i2t)}
    metrics.update({f"t2i_R{k}": v for k, v in zip((1, 5, 10), t2i)})
    return ClaimedResult(benchmark="image_text_retrieval", dataset=dataset, setting=setting, model=model,
                         metrics=metrics, source=source, confidence=confidence, protocol=protocol)


@dataclass(frozen=True)
class Deviation:
    """A difference from the paper or official code, switchable through a config option."""

    option: str               # dotted config path, e.g. "text.arch"
    ours: str                 # what our default does
    reference: str            # what the paper / official code does
    reason: str


@dataclass(frozen=True)
class Assumption:
    """A constant the paper does not let us verify (no official code, value not found): our default for it."""

    option: str               # dotted config path, e.g. "amf.lam"
    value: str                # our default
    basis: str                # where the default comes from (recollection, analogy, seed summary)
    confidence: Confidence = Confidence.RECONSTRUCTION


@dataclass(frozen=True)
class MethodCard:
    name: str
    title: str
    citation: str
    paper_url: str
    official_code: str | None
    architecture: str
    default_protocol: dict[str, Any]
    claimed: tuple[ClaimedResult, ...] = ()
    deviations: tuple[Deviation, ...] = ()
    notes: tuple[str, ...] = ()
    assumptions: tuple[Assumption, ...] = ()   # unverified constants (methods without reference code)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for c in [*d["claimed"], *d["assumptions"]]:
            c["confidence"] = c["confidence"].value if isinstance(c["confidence"], Confidence) else c["confidence"]
        return d
