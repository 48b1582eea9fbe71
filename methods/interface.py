"""The one interface every method implements.

A method is an `nn.Module` that
- embeds images, texts and videos into one shared space (L2-normalised),
- scores image/text embeddings (`similarity`, the ITC score),
- takes a pretraining step and returns named losses plus their total,
- optionally re-ranks top-k candidates with a cross-encoder (fusion models such as TCL),
- carries its own preprocessing and tokenizer, its config and its card.

The harness (benchmarks/) only talks to this surface; metrics are computed elsewhere, from the
scores a model returns.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlpbench.methods.card import MethodCard
from vlpbench.methods.config import StrictModel
from vlpbench.methods.media import AudioInputConfig, VideoInputConfig
from vlpbench.methods.preprocess import ImagePreprocess
from vlpbench.methods.tokenizer import TokenBatch, TextTokenizer


@dataclass
class PretrainBatch:
    images: torch.Tensor                  # (B, 3, H, W) after the model's train preprocessing
    text: TokenBatch                      # (B, L) token ids and mask
    index: torch.Tensor                   # (B,) item indices in the training corpus
    extras: dict[str, Any] = field(default_factory=dict)  # method-specific inputs (see data_fields)

    def to(self, device: torch.device | str) -> "PretrainBatch":
        """On the device; copies from pinned memory (`pin_memory`) overlap with compute (non_blocking)."""
        moved = {k: v.to(device, non_blocking=True) if isinstance(v, (torch.Tensor, TokenBatch)) else
                 v.to(device) if hasattr(v, "to") else v for k, v in self.extras.items()}
        return PretrainBatch(self.images.to(device, non_blocking=True), self.text.to(device, non_blocking=True),
                             self.index.to(device, non_blocking=True), moved)

    def pin_memory(self) -> "PretrainBatch":
        """Page-locked copies (the DataLoader's pin_memory calls this), so `to(cuda)` can be asynchronous."""
        pinned = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in self.extras.items()}
        return PretrainBatch(self.images.pin_memory(), self.text.pin_memory(), self.index.pin_memory(), pinned)


@dataclass(frozen=True)
class VideoInput:
    """An extra input made from each item's video (its corpus' extras["media"], a methods.media.MediaSource).

    The data layer (benchmarks/data/media_features.py) reads what `config` asks for — `config.frames` decoded
    frames of side `config.frame_size` (input 'frames'), or stored per-frame vectors (input 'features') — turns
    decoded frames into features with `describe`, and keeps the result per corpus. A batch holds it as a
    `SequenceFeatures` (values (B, frames, config.dim) float32, valid (B, frames) bool)."""

    config: VideoInputConfig
    # (n, frames, H, W, 3) uint8 frames -> (n, frames, config.dim) features; pure (no parameters, no state).
    describe: Callable[[np.ndarray], torch.Tensor]


@dataclass(frozen=True)
class AudioInput:
    """An extra input made from each item's audio (extras["media"]): the data layer reads `config.seconds` of mono
    waveform at `config.mel.sample_rate`, turns it into tokens with `tokens` and keeps the result per corpus. A
    batch holds it as a `SequenceFeatures` (values (B, config.tokens, config.dim), every position valid)."""

    config: AudioInputConfig
    # (n, samples) float32 waveforms -> (n, config.tokens, config.dim) features; pure.
    tokens: Callable[[np.ndarray], torch.Tensor]


MediaInput = VideoInput | AudioInput


@dataclass(frozen=True)
class StepContext:
    step: int              # optimizer steps done before this one
    total_steps: int
    steps_per_epoch: int
    epoch: int


@dataclass
class StepOutput:
    losses: dict[str, torch.Tensor]   # named scalar terms, as the method reports them
    total: torch.Tensor               # what is back-propagated
    stats: dict[str, float] = field(default_factory=dict)  # non-loss diagnostics (e.g. logit scale)
    # Per-sample boolean decisions of this step (B,), e.g. COTS's AMF "amf_dropped": the harness scores
    # them against a corpus's known noisy pairs (precision/recall in the training summary).
    sample_flags: dict[str, torch.Tensor] = field(default_factory=dict)


class VLPModel(nn.Module, abc.ABC):
    """Base class of every method. Subclasses set `card` and `data_fields` and implement the encoders.

    What a model needs from the data beyond image and caption is declared here (it may depend on the config and
    the tokenizer, so on the built model) and made into batch values by the data layer
    (benchmarks/data/fields.py), the same way for training and evaluation:
    - `data_fields` / `product_fields` / `finetune_fields`: the names of the extra inputs of pretraining, of
      `encode_product` and of fine-tuning ('image_view2' is a second augmented view, made by the batcher);
    - each name is then made by the first of: `field_builder` (a pure function of the corpus' columns, e.g.
      tokenised tables), `media_input` (features of the items' video or audio, rendered and cached by the data
      layer), the corpus' own column of that name (arrays indexed, strings tokenised), `derive_field` (text derived
      from the captions); else an error quoting `field_hints`.
    """

    card: ClassVar[MethodCard]
    # Inputs the pretraining step needs beyond image + text (e.g. "image_view2", "tags").
    data_fields: ClassVar[frozenset[str]] = frozenset()
    # Inputs `encode_product` needs beyond image + title (SCALE: table, video, audio, missing flags).
    product_fields: ClassVar[frozenset[str]] = frozenset()
    # What to tell a user whose corpus lacks one of the data_fields (e.g. the fallback option to set).
    field_hints: ClassVar[dict[str, str]] = {}

    def __init__(self, config: StrictModel, tokenizer: TextTokenizer, preprocess: ImagePreprocess) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        # Every set_eval_resolution call, in order (the harness copies them into the evaluation protocol).
        self.resolution_changes: list[dict[str, Any]] = []

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: Any, tokenizer: TextTokenizer) -> "VLPModel":
        """Build the model (and its default encoders) from a validated config."""

    # ---- embeddings -------------------------------------------------------------------------
    @abc.abstractmethod
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) L2-normalised embeddings."""

    @abc.abstractmethod
    def encode_text(self, text: TokenBatch) -> torch.Tensor:
        """Token batch -> (B, D) L2-normalised embeddings."""

    def encode_video(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, D): mean of per-frame image embeddings, re-normalised.

        This is CLIP4Clip's meanP and the COTS recipe; frames with frame_mask == 0 are left out.
        """
        b, t = frames.shape[:2]
        per_frame = self.encode_image(frames.flatten(0, 1)).view(b, t, -1)
        if frame_mask is None:
            pooled = per_frame.mean(dim=1)
        else:
            w = frame_mask.to(per_frame.dtype).unsqueeze(-1)
            pooled = (per_frame * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return F.normalize(pooled, dim=-1)

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """ITC scores (N_img, N_txt) between embeddings from encode_image / encode_text."""
        return image_emb @ text_emb.t()

    def derive_field(self, name: str, texts: Sequence[str]) -> list[str] | None:
        """A text field the model derives from the captions itself when the corpus lacks it (None: not derivable).

        E.g. ERNIE-ViL 2.0's 'caption_words' (the caption's content words as a tag sequence)."""
        return None

    def field_builder(self, name: str, corpus: Any, training: bool) -> Callable[[np.ndarray], Any] | None:
        """How the model makes extra input `name` from a corpus' columns (`corpus.extras`; e.g. SCALE tokenises each
        item's table and draws its missing-modality flags), once up front: a function from batch indices to the
        batch's value, or None to let the harness make it (`media_input`, else the corpus' field as it is: arrays
        indexed, strings tokenised). Pure: it renders, reads and caches nothing — media are `media_input`'s."""
        return None

    def media_input(self, name: str) -> MediaInput | None:
        """Extra input `name` as features of each item's video or audio (SCALE's 'video', 'audio'): what to read
        and the model's own pure function from frames / waveforms to features. The data layer reads the corpus'
        media, applies it and caches the result (benchmarks/data/media_features.py). None: not a media input."""
        return None

    def encode_product(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        """Product features by feature type, for M5Product-style same-category retrieval (ranked by dot
        product). Default: the image and text embeddings and their sum; SCALE adds its other modalities and
        the joint transformer's features."""
        image = self.encode_image(batch.images)
        text = self.encode_text(batch.text)
        return {"image": image, "text": text, "image+text": image + text}

    def tokenize(self, texts: list[str], *, training: bool = False) -> TokenBatch:
        length = self.train_text_max_length if training else self.text_max_length
        return self.tokenizer(texts, max_length=length)

    @property
    def text_max_length(self) -> int:
        """Context length used for tokenisation at test time (and in training unless overridden): the
        config's `text.max_length`."""
        return int(self.config.text.max_length)  # type: ignore[attr-defined]

    @property
    def train_text_max_length(self) -> int:
        """Context length in pretraining: the config's `train_text_max_length` when it sets one (TCL/ALBEF:
        25, against 30 at test time), else text_max_length."""
        return int(getattr(self.config, "train_text_max_length", None) or self.text_max_length)

    # ---- pretraining ------------------------------------------------------------------------
    @abc.abstractmethod
    def pretrain_step(self, batch: PretrainBatch, ctx: StepContext) -> StepOutput:
        """Forward pass of one pretraining step: the named losses and their total."""

    # ---- retrieval fine-tuning ------------------------------------------------------------------
    def contrastive_logit_scale(self) -> torch.Tensor:
        """The scale the model's image-text contrastive logits are multiplied by (1 / temperature)."""
        raise NotImplementedError(f"{type(self).__name__} defines no contrastive logit scale; override "
                                  "contrastive_logit_scale or finetune_step")

    @property
    def finetune_fields(self) -> frozenset[str]:
        """Extra inputs a fine-tuning batch carries: the image ids of the id-based positives."""
        return frozenset({"image_id"})

    def finetune_step(self, batch: PretrainBatch, ctx: StepContext) -> StepOutput:
        """One step of retrieval fine-tuning. Default — the contrastive fine-tuning of dual encoders: symmetric
        InfoNCE between encode_image and encode_text at the model's own scale, every caption of the same image a
        positive (batch.extras['image_id'], the id-based targets of ALBEF/TCL's fine-tuning; without ids each
        pair is its own class). Fusion models override it with their paper's recipe (TCL: ITA + ITM)."""
        from vlpbench.methods.losses import contrastive_accuracy, info_nce, positives_from_ids

        img = self.encode_image(batch.images)
        txt = self.encode_text(batch.text)
        scale = self.contrastive_logit_scale()
        logits = scale * img @ txt.t()
        ids = batch.extras.get("image_id", batch.index)
        targets = positives_from_ids(ids, ids)
        i2t, t2i = info_nce(logits, targets), info_nce(logits.t(), targets)   # id-positives are symmetric
        return StepOutput(losses={"itc_i2t": i2t, "itc_t2i": t2i}, total=(i2t + t2i) / 2,
                          stats={"logit_scale": float(scale.detach()), "itc_acc": contrastive_accuracy(logits)})

    def start_finetuning(self) -> None:
        """Called once when a pretrained model starts retrieval fine-tuning, before its first finetune_step (not
        when a fine-tuning run resumes from its own checkpoint). Default: nothing; TCL empties its id queue, as
        its `models/model_retrieval.py` starts with `idx_queue` filled with -100."""

    def after_optimizer_step(self, ctx: StepContext) -> None:
        """Called after each optimizer step (clamps, EMA updates...). Default: nothing."""

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay beyond the default rule (ndim < 2)."""
        return set()

    # ---- evaluation resolution ------------------------------------------------------------------
    def set_eval_resolution(self, size: int) -> dict[str, Any]:
        """Run at `size` px from now on, as ALBEF/TCL's `Retrieval.py` evaluates a 256 px checkpoint at
        `image_res` 384: every VisionTower inside the model (momentum copies included) gets its pos_embed
        resampled by the official `interpolate_pos_embed` (methods/towers.py) and its patch grid resized;
        `preprocess` and the config (every vision tower's image_size, the preprocess resolution) follow, so a
        saved model reloads. Returns the change, also appended to `resolution_changes`."""
        from vlpbench.methods.towers import VisionTower

        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"evaluation resolution must be an integer >= 8 px, got {size!r}")
        towers = [(name, m) for name, m in self.named_modules() if isinstance(m, VisionTower)]
        if not towers:
            raise NotImplementedError(f"{type(self).__name__} has no VisionTower whose resolution could change")
        for _, tower in towers:                 # every tower accepts the size before any changes
            tower.check_image_size(size)
        before = {name: m.image_size for name, m in towers}
        for _, tower in towers:
            tower.set_image_size(size)
        old = int(self.preprocess.config.resolution)
        self.preprocess = ImagePreprocess(self.preprocess.config.model_copy(update={"resolution": size}))
        self.config = _config_at_resolution(self.config, size)
        change: dict[str, Any] = {
            "from": old, "to": size, "towers": before,
            "pos_embed": "patch grid resampled bicubic (align_corners=False, no antialias), class token kept: "
                         "models/vit.py interpolate_pos_embed of uta-smile/TCL and salesforce/ALBEF"}
        self.resolution_changes.append(change)
        return change

    # ---- optional re-ranking (fusion models) --------------------------------------------------
    supports_rerank: ClassVar[bool] = False

    def rerank_image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image features the cross-encoder needs (e.g. all ViT tokens). Fusion models override."""
        raise NotImplementedError(f"{type(self).__name__} has no re-ranking head")

    def rerank_text_features(self, text: TokenBatch) -> Mapping[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no re-ranking head")

    def rerank_score(self, image_features: torch.Tensor, text_features: Mapping[str, torch.Tensor]
                     ) -> torch.Tensor:
        """Cross-encoder match scores (P,) for P aligned (image, text) pairs (e.g. the ITM logit)."""
        raise NotImplementedError(f"{type(self).__name__} has no re-ranking head")


def _config_at_resolution(config: StrictModel, size: int) -> StrictModel:
    """`config` with every VisionTowerConfig's image_size and every ImagePreprocessConfig's resolution set to
    `size`, validated again (the config's own checks, e.g. image size = preprocess resolution, still hold)."""
    from pydantic import BaseModel

    from vlpbench.methods.preprocess import ImagePreprocessConfig
    from vlpbench.methods.towers import VisionTowerConfig

    def walk(obj: Any) -> Any:
        if isinstance(obj, VisionTowerConfig):
            return obj.model_copy(update={"image_size": size})
        if isinstance(obj, ImagePreprocessConfig):
            return obj.model_copy(update={"resolution": size})
        if isinstance(obj, BaseModel):
            changed = {k: walk(getattr(obj, k)) for k in type(obj).model_fields}
            changed = {k: v for k, v in changed.items() if v is not getattr(obj, k)}
            return obj.model_copy(update=changed) if changed else obj
        return obj

    return type(config).model_validate(walk(config).model_dump())
