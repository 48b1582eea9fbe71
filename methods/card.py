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
    """How far a number or constant is from its primary source.

    V: read in a primary source (official code at a named commit, an official README, or an author's comment in the
    official issue tracker); S: a secondary source quoting the paper; M-*: recollection of the paper, not verified
    (high / medium / low: how sure); R: our reconstruction of something the paper does not specify.
    """

    VERIFIED = "V"            # primary source: official code at a commit, official README, author comment
    SECONDARY = "S"           # secondary source quoting the paper
    MEMORY_HIGH = "M-high"    # recollection of the paper, not verified
    MEMORY_MEDIUM = "M-medium"
    MEMORY_LOW = "M-low"
    RECONSTRUCTION = "R"      # our reasonable implementation of something not specified


@dataclass(frozen=True)
class Checkpoint:
    """The released weights a claim was measured with (what `vlpbench reproduce` evaluates)."""

    name: str                   # the file or tag, e.g. "ViT-L-14-336px.pt"
    url: str                    # where it is published (as the official README/code gives it)
    sha256: str | None = None   # when published; `vlpbench reproduce` refuses other weights
    format: str = "auto"        # `vlpbench eval --format`
    arch: str | None = None     # `vlpbench eval --arch`, when the file does not say (open_clip state dicts)
    note: str = ""


@dataclass(frozen=True)
class ClaimedResult:
    """One row of a paper's results table, and how to reproduce it (a runnable spec when weights are released)."""

    benchmark: str            # our benchmark family, e.g. "image_text_retrieval"
    dataset: str              # e.g. "flickr30k-karpathy-test-1k", "coco-karpathy-test-5k"
    setting: str              # "zero-shot" or "fine-tuned"
    model: str                # the paper's model variant, e.g. "ViT-L/14@336px"
    metrics: dict[str, float]  # our metric names (i2t_R1, t2i_R5, ...), percent
    source: str
    confidence: Confidence
    protocol: dict[str, Any] = field(default_factory=dict)  # resolution, prompt, lineage, scoring...
    notes: str = ""
    id: str = ""                        # e.g. "tcl/flickr30k-zeroshot"; `vlpbench reproduce ID`
    checkpoint: Checkpoint | None = None  # None: no released weights reproduce it (no_weights says why)
    no_weights: str = ""
    tolerance: float = 1.0              # points (percent) a reproduction may differ, fixed before running

    @property
    def reproducible(self) -> bool:
        return self.checkpoint is not None


def retrieval_claim(dataset: str, setting: str, model: str, i2t: tuple[float, float, float],
                    t2i: tuple[float, float, float], source: str, confidence: Confidence, *, id: str = "",
                    checkpoint: Checkpoint | None = None, no_weights: str = "", tolerance: float = 1.0,
                    notes: str = "", **protocol: Any) -> ClaimedResult:
    """A paper's image-text retrieval row: TR@1/5/10 (image→text) and IR@1/5/10 (text→image)."""
    metrics = {f"i2t_R{k}": v for k, v in zip((1, 5, 10), i2t)}
    metrics.update({f"t2i_R{k}": v for k, v in zip((1, 5, 10), t2i)})
    if (checkpoint is None) == (not no_weights):
        raise ValueError(f"claim {id or model}: name its released checkpoint, or say why none gives the number "
                         "(no_weights), not both")
    return ClaimedResult(benchmark="image_text_retrieval", dataset=dataset, setting=setting, model=model,
                         metrics=metrics, source=source, confidence=confidence, protocol=protocol, notes=notes,
                         id=id, checkpoint=checkpoint, no_weights=no_weights, tolerance=tolerance)


@dataclass(frozen=True)
class Deviation:
    """A difference from the paper or official code, switchable through a config option."""

    option: str               # dotted config path, e.g. "text.arch"
    ours: str                 # what our default does
    reference: str            # what the paper / official code does
    reason: str


# Why every method has a `cpu` preset (the default suite's size): the first half of each card's cpu deviation reason.
CPU_PRESET_REASON = ("the default suite (`make run`) must finish in 20 minutes on two CPU cores with every method, "
                     "stage and benchmark (docs/calibration.md)")


# The BERT-based methods' (TCL, COTS, ERNIE-ViL 2.0, SCALE) cpu text tower: one deviation, on each of their cards.
CPU_TEXT_DROPOUT = Deviation(
    option="text.dropout (cpu)",
    ours="cpu: no dropout in the BERT text tower (and TCL's fusion layers); tiny and base keep 0.1",
    reference="BERT's 0.1 on hidden states and attention probabilities",
    reason=f"{CPU_PRESET_REASON}; on two cores drawing the dropout masks took about a third of a training step "
           "(alternating A/B: COTS 1.02 / 1.22 s against 0.74 / 0.83 s, TCL 0.82 / 0.90 against 0.57 / 0.60), and at "
           "240 x 256 steps the towers underfit rather than overfit: builtin val RSUM with 0.1 / without, COTS "
           "81.6 / 92.3, ERNIE-ViL 2.0 151.9 / 158.5, SCALE 135.3 / 171.8, TCL 6.7 / 12.4 (docs/calibration.md)")


@dataclass(frozen=True)
class Assumption:
    """A constant the paper does not let us verify (no official code, value not found): our default for it."""

    option: str               # dotted config path, e.g. "amf.lam"
    value: str                # our default
    basis: str                # where the default comes from (paper section, recollection, analogy)
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
