"""SCALE: Self-harmonized ContrAstive LEarning over five product modalities (Dong et al., M5Product, CVPR 2022,
arXiv 2109.04275; official code Xiaodongsuper/SCALE_code, read for facts in docs/research/scale_code.md).

Five encoders — image (ViT), text (BERT), table (property–value tokens through the text encoder,
as SCALE_code shares it), video and audio (feature-sequence encoders) — each give token features
with a global first token. Training has one forward pass over *masked* inputs:
- SIMCL (before the joint transformer): InfoNCE between every pair of present modalities on
  ReLU(Linear) projections of the global tokens, re-weighted by the self-harmonized modality
  graph S′ = S ⊙ softmax(S) built from the same features;
- masked tasks (after it): the joint co-transformer reads every modality's tokens at once and
  predicts masked caption words (MLM), masked table entities (MEM, a whole property or value),
  masked image patches (MRM), video frames (MFM) and audio tokens (MAM), weighted by each
  sample's modality importance (the diagonal of S′ on the joint outputs).
Total = MLM + MEM + MRM + MFM + MAM + SIMCL (all weights 1, no ITM), as SCALE_code sums them.

Where SCALE_code and the paper differ, the default follows the code and the paper's reading is one
option away (`simcl.form`, `task_weighting`); docs/scale.md lists both.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn
from transformers import BertConfig

from vlpbench.methods.card import Assumption, ClaimedResult, CPU_PRESET_REASON, CPU_TEXT_DROPOUT, Confidence, Deviation, MethodCard
from vlpbench.methods.config import StrictModel
from vlpbench.methods.fusion import MLMHead
from vlpbench.methods.interface import (AudioInput, MediaInput, PretrainBatch, StepContext, StepOutput, VideoInput,
                               VLPModel)
from vlpbench.methods.losses import pairwise_infonce, self_harmonized_weights
from vlpbench.methods.masking import IGNORE_INDEX, mask_entities, mask_tokens
from vlpbench.methods.media import PRODUCT_MODALITIES, AudioInputConfig, VideoInputConfig, audio_tokens, frame_descriptors
from vlpbench.methods.preprocess import ImagePreprocess, ImagePreprocessConfig
from vlpbench.methods.registry import MethodSpec, register_method
from vlpbench.methods.scale_blocks import (EncoderConfig, FeatureSequenceEncoder, JointConfig, JointTransformer,
                                  RegressionHead, SequenceFeatures, choose_positions, patchify, unpatchify)
from vlpbench.methods.table import TableBatch, tokenize_tables
from vlpbench.methods.tokenizer import TextTokenizer, TokenBatch
from vlpbench.methods.towers import (CPU_BERT, CPU_VISION, TINY_BERT, TINY_VISION, TextTower, TextTowerConfig, VisionTower, VisionTowerConfig,
                            check_tower_shapes)

# Index order of the modality graph, the `missing` flags and every per-modality option (SCALE_code's graph order).
MODALITIES: tuple[str, ...] = PRODUCT_MODALITIES
# Order of the joint transformer's concatenation (SCALE_code: title, PV, image, video, audio).
JOINT_ORDER: tuple[str, ...] = ("text", "table", "image", "video", "audio")
OPTIONAL_MODALITIES: tuple[str, ...] = ("table", "video", "audio")
TASK_OF: dict[str, str] = {"text": "mlm", "table": "mem", "image": "mrm", "video": "mfm", "audio": "mam"}


class SIMCLConfig(StrictModel):
    enabled: bool = True
    weight: float = Field(1.0, ge=0)
    form: Literal["code", "paper"] = Field(
        "code", description="code (SCALE_code): a per-sample graph S′_b (diagonal in the softmax, rows L2-normalised) "
                            "whose entry S′_b[m, n] multiplies the logits of sample b in L_mn, the pair losses "
                            "averaged; paper: one batch graph S (mean of the per-sample cosines), S′ = S ⊙ "
                            "softmax(S) over m ≠ n, L = Σ_{m≠n} S′_mn L_mn.")
    negatives: Literal["simclr", "cross_modal"] = Field(
        "simclr", description="simclr (SCALE_code's info_nce_loss): NT-Xent over the 2B items of a pair, other "
                              "samples of both modalities as negatives; cross_modal: CLIP's B x B both ways.")
    temperature: float = Field(0.07, gt=0)
    stop_gradient: bool = Field(
        False, description="Treat S′ as a constant. SCALE_code does not detach it (the encoders also learn the "
                           "weights), so the default is False.")
    proj_dim: int = Field(128, gt=0, description="Width of the ReLU(Linear) projections the loss uses "
                                                 "(SCALE_code: 1024 from 768).")


class TaskConfig(StrictModel):
    enabled: bool = True
    weight: float = Field(1.0, ge=0)
    probability: float = Field(0.15, ge=0, le=1, description="P(a token / pair / patch / frame is chosen).")


class Tasks(StrictModel):
    mlm: TaskConfig = Field(default_factory=TaskConfig, description="masked caption words (80/10/10)")
    mem: TaskConfig = Field(default_factory=TaskConfig, description="masked table entities (all of p or of v)")
    mrm: TaskConfig = Field(default_factory=TaskConfig, description="masked image patches (90 % zeroed) -> pixels")
    mfm: TaskConfig = Field(default_factory=TaskConfig, description="masked video frames (zeroed) -> frame")
    mam: TaskConfig = Field(default_factory=TaskConfig, description="masked audio tokens (zeroed) -> token")


class SCALEConfig(StrictModel):
    vision: VisionTowerConfig
    text: TextTowerConfig
    preprocess: ImagePreprocessConfig
    video: VideoInputConfig = Field(default_factory=VideoInputConfig)
    audio: AudioInputConfig = Field(default_factory=AudioInputConfig)
    video_encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    audio_encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    joint: JointConfig = Field(default_factory=JointConfig)
    simcl: SIMCLConfig = Field(default_factory=SIMCLConfig)
    tasks: Tasks = Field(default_factory=Tasks)
    modalities: tuple[str, ...] = Field(
        MODALITIES, description="Modalities used in pretraining (the ablation: text and image always, plus any "
                                "of table, video, audio).")
    task_weighting: Literal["predictions", "losses", "none"] = Field(
        "predictions", description="predictions (SCALE_code): each sample's modality weight (diag of S′ on the "
                                   "joint outputs) multiplies that modality's head outputs; losses: it multiplies "
                                   "the per-position losses (the lines SCALE_code deleted); none.")
    missing: Literal["zero_impute", "mask"] = Field(
        "zero_impute", description="zero_impute (M5Product loaders): a missing modality is zeros ([CLS][SEP] for "
                                   "text/table) and takes part everywhere — a missing video keeps an all-ones mask; "
                                   "mask: it is left out of the joint attention, SIMCL, the graphs and its masked "
                                   "task.")
    drop_rates: dict[str, float] = Field(
        default_factory=dict, description="Ablation: in pretraining, each item's table/video/audio is also treated "
                                          "as missing with this probability (one fixed draw per item).")
    table_max_length: int = Field(24, ge=4, description="Table tokens incl. [CLS]/[SEP]; whole pairs are dropped "
                                                        "from the end (SCALE_code: 64).")
    table_token_type: Literal[0, 1] = Field(
        1, description="Segment id of table tokens: 1 = its own segment (M5Product_toolkit), 0 = SCALE_code's.")
    train_text_max_length: int | None = Field(None, ge=4, description="None = text.max_length.")

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [m for m in v if m not in MODALITIES]
        if bad:
            raise ValueError(f"unknown modalities {bad}; choose from {MODALITIES}")
        if "text" not in v or "image" not in v:
            raise ValueError("modalities must include text and image (encode_text / encode_image are the "
                             "retrieval interface); the ablation adds table, video and audio")
        return tuple(m for m in MODALITIES if m in v)

    @field_validator("drop_rates")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        for k, r in v.items():
            if k not in OPTIONAL_MODALITIES or not 0.0 <= r <= 1.0:
                raise ValueError(f"drop_rates: {k}={r}; keys from {OPTIONAL_MODALITIES}, rates in [0, 1]")
        return v

    @model_validator(mode="after")
    def _shapes(self) -> "SCALEConfig":
        check_tower_shapes("SCALE", self.vision, self.text, self.preprocess.resolution, "bert")
        if self.vision.width != self.text.width:
            raise ValueError(f"SCALE's joint transformer reads every modality's tokens at one width: vision.width "
                             f"{self.vision.width} != text.width {self.text.width}")
        return self

    def task(self, modality: str) -> TaskConfig:
        return getattr(self.tasks, TASK_OF[modality])


class SCALE(VLPModel):
    field_hints: ClassVar[dict[str, str]] = {
        "table": "this corpus has no property-value tables: leave 'table' out of `modalities`",
        "video": "this corpus has no video source ('media'): leave 'video' out of `modalities`",
        "audio": "this corpus has no audio source ('media'): leave 'audio' out of `modalities`",
    }

    def __init__(self, config: SCALEConfig, tokenizer: TextTokenizer, vision: VisionTower, text: TextTower) -> None:
        super().__init__(config, tokenizer, ImagePreprocess(config.preprocess))
        width = text.width
        self.visual = vision
        self.text = text
        self.modalities = config.modalities
        if "video" in self.modalities:
            self.video_encoder = FeatureSequenceEncoder(config.video.dim, width, config.video.frames,
                                                        config.video_encoder)
        if "audio" in self.modalities:
            self.audio_encoder = FeatureSequenceEncoder(config.audio.dim, width, config.audio.tokens,
                                                        config.audio_encoder)
        self.poolers = nn.ModuleDict({m: nn.Sequential(nn.Linear(width, config.simcl.proj_dim), nn.ReLU())
                                      for m in self.modalities})
        self.joint = JointTransformer(width, len(MODALITIES), config.joint)
        bert = BertConfig(hidden_size=width, hidden_act="gelu", layer_norm_eps=1e-12,
                          vocab_size=tokenizer.vocab_size)
        self.mlm_head = MLMHead(bert, self.text.model.embeddings.word_embeddings)   # shared by MLM and MEM
        patch = config.vision.patch_size
        dims = {"image": 3 * patch * patch, "video": config.video.dim, "audio": config.audio.dim}
        self.regression_heads = nn.ModuleDict({m: RegressionHead(width, d) for m, d in dims.items()
                                               if m in self.modalities})
        fields = {"missing"} | {m for m in ("table",) if m in self.modalities}
        fields |= {m for m in ("video", "audio") if m in self.modalities}
        self.data_fields = frozenset(fields)
        self.product_fields = self.data_fields

    @classmethod
    def from_config(cls, config: SCALEConfig, tokenizer: TextTokenizer) -> "SCALE":
        vision = VisionTower(config.vision)
        text = TextTower(config.text, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id)
        return cls(config, tokenizer, vision, text)

    # ---- data fields -----------------------------------------------------------------------------
    def field_builder(self, name: str, corpus: Any, training: bool) -> Callable[[np.ndarray], Any] | None:
        """Tables tokenised and missing-modality flags drawn from the corpus' columns — once, up front; the returned
        function indexes a batch. Video and audio are media inputs (`media_input`), made by the data layer."""
        cfg: SCALEConfig = self.config  # type: ignore[assignment]
        extras = corpus.extras
        n = len(corpus)
        if name == "table":
            if "table" not in extras:
                return None
            tables = tokenize_tables(self.tokenizer, extras["table"], cfg.table_max_length)
            return lambda idx: tables[torch.from_numpy(idx)]
        if name == "missing":
            flags = np.zeros((n, len(MODALITIES)), dtype=bool)
            if "missing" in extras:
                flags |= np.asarray(extras["missing"], dtype=bool)
            if training and cfg.drop_rates:
                draws = np.random.default_rng(0).random((n, len(MODALITIES)))   # one fixed draw per item
                for m, rate in cfg.drop_rates.items():
                    flags[:, MODALITIES.index(m)] |= draws[:, MODALITIES.index(m)] < rate
            return lambda idx: torch.from_numpy(flags[idx])
        return None

    def media_input(self, name: str) -> MediaInput | None:
        """'video': the config's frames as fixed frame descriptors (methods/media.py frame_descriptors; input
        'features' reads stored vectors); 'audio': the config's waveform as mel tokens (audio_tokens). The data
        layer reads the media, applies these and caches the result (benchmarks/data/media_features.py)."""
        cfg: SCALEConfig = self.config  # type: ignore[assignment]
        if name == "video":
            return VideoInput(cfg.video, partial(frame_descriptors, size=cfg.video.frame_size))
        if name == "audio":
            return AudioInput(cfg.audio, partial(audio_tokens, config=cfg.audio))
        return None

    # ---- encoders --------------------------------------------------------------------------------
    def _text_tokens(self, ids: torch.Tensor, mask: torch.Tensor, token_type: int = 0) -> torch.Tensor:
        types = None if token_type == 0 else torch.full_like(ids, token_type)
        return self.text(ids, mask, types).tokens

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.poolers["image"](self.visual(images).tokens[:, 0]), dim=-1)

    def encode_text(self, text: TokenBatch) -> torch.Tensor:
        return F.normalize(self.poolers["text"](self._text_tokens(text.input_ids, text.attention_mask)[:, 0]), dim=-1)

    def contrastive_logit_scale(self) -> torch.Tensor:
        """SCALE has no image-text fine-tuning recipe: the harness' contrastive fine-tuning uses SIMCL's τ."""
        return torch.tensor(1.0 / self.config.simcl.temperature, device=next(self.parameters()).device)

    # ---- one forward pass over (masked) inputs --------------------------------------------------
    def _impute(self, batch: PretrainBatch, missing: torch.Tensor) -> dict[str, Any]:
        """Each modality's input with missing ones replaced as the M5Product loaders do (zeros, [CLS][SEP])."""
        tok = self.tokenizer

        def empty_text(ids: torch.Tensor, mask: torch.Tensor, gone: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            blank_ids = torch.full_like(ids, tok.pad_id)
            blank_ids[:, 0], blank_ids[:, 1] = tok.cls_id, tok.sep_id
            blank_mask = torch.zeros_like(mask)
            blank_mask[:, :2] = 1
            g = gone[:, None]
            return torch.where(g, blank_ids, ids), torch.where(g, blank_mask, mask)

        col = {m: missing[:, MODALITIES.index(m)] for m in MODALITIES}
        out: dict[str, Any] = {}
        out["text"] = empty_text(batch.text.input_ids, batch.text.attention_mask, col["text"])
        out["image"] = batch.images * (~col["image"]).to(batch.images.dtype)[:, None, None, None]
        if "table" in self.modalities:
            t: TableBatch = batch.extras["table"]
            ids, mask = empty_text(t.tokens.input_ids, t.tokens.attention_mask, col["table"])
            keep = ~col["table"][:, None]
            out["table"] = (ids, mask, t.entity_index.masked_fill(~keep, -1), t.is_value & keep)
        for m in ("video", "audio"):
            if m in self.modalities:
                f: SequenceFeatures = batch.extras[m]
                gone = col[m]
                # SCALE's loaders: zeros with every position marked valid (the zero-imputation quirk).
                values = f.values * (~gone).to(f.values.dtype)[:, None, None]
                valid = f.valid | gone[:, None]
                out[m] = SequenceFeatures(values, valid)
        return out

    def _mask_inputs(self, inputs: dict[str, Any], present: torch.Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
        """(masked inputs, targets) for every enabled masked task; positions of absent modalities are never chosen
        under missing='mask'."""
        cfg: SCALEConfig = self.config  # type: ignore[assignment]
        tok = self.tokenizer
        masked, targets = dict(inputs), {}
        ok = {m: present[:, MODALITIES.index(m)] for m in MODALITIES}
        if cfg.tasks.mlm.enabled:
            ids, mask = inputs["text"]
            mt = mask_tokens(ids, vocab_size=tok.vocab_size, mask_id=tok.mask_id, never_mask=(tok.pad_id, tok.cls_id),
                             probability=cfg.tasks.mlm.probability)
            masked["text"] = (mt.input_ids, mask)
            targets["text"] = mt.labels.masked_fill(~ok["text"][:, None], IGNORE_INDEX)
        if "table" in self.modalities and cfg.tasks.mem.enabled:
            ids, mask, ent, val = inputs["table"]
            me = mask_entities(ids, ent, val, mask_id=tok.mask_id, probability=cfg.tasks.mem.probability)
            masked["table"] = (me.input_ids, mask, ent, val)
            targets["table"] = me.labels.masked_fill(~ok["table"][:, None], IGNORE_INDEX)
        if cfg.tasks.mrm.enabled:
            p = cfg.vision.patch_size
            patches = patchify(inputs["image"], p)
            chosen = choose_positions(ok["image"][:, None].expand(patches.shape[:2]).contiguous(),
                                      cfg.tasks.mrm.probability)
            zero = chosen & (torch.rand(chosen.shape).to(chosen.device) < 0.9)   # 10 % of chosen stay visible
            masked["image"] = unpatchify(patches.masked_fill(zero[..., None], 0.0), p, inputs["image"].shape[-1])
            targets["image"] = (patches, chosen)
        for m in ("video", "audio"):
            task = cfg.task(m)
            if m in self.modalities and task.enabled:
                f: SequenceFeatures = inputs[m]
                chosen = choose_positions(f.valid & ok[m][:, None], task.probability)
                masked[m] = SequenceFeatures(f.values.masked_fill(chosen[..., None], 0.0), f.valid)
                targets[m] = (f.values, chosen)
        return masked, targets

    def encode_modalities(self, inputs: dict[str, Any]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{modality: (tokens (B, N, D) with the global token first, key mask (B, N) bool)}."""
        cfg: SCALEConfig = self.config  # type: ignore[assignment]
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        ids, mask = inputs["text"]
        out["text"] = (self._text_tokens(ids, mask), mask.bool())
        img = self.visual(inputs["image"]).tokens
        out["image"] = (img, torch.ones(img.shape[:2], dtype=torch.bool, device=img.device))
        if "table" in self.modalities:
            ids, mask = inputs["table"][:2]
            out["table"] = (self._text_tokens(ids, mask, cfg.table_token_type), mask.bool())
        if "video" in self.modalities:
            out["video"] = self.video_encoder(inputs["video"])
        if "audio" in self.modalities:
            out["audio"] = self.audio_encoder(inputs["audio"])
        return out

    def joint_forward(self, encoded: dict[str, tuple[torch.Tensor, torch.Tensor]], present: torch.Tensor,
                      mask_missing: bool) -> dict[str, torch.Tensor]:
        """The co-transformer over [text | table | image | video | audio]; returns each modality's output span."""
        order = [m for m in JOINT_ORDER if m in encoded]
        tokens, masks, ids = [], [], []
        for m in order:
            t, k = encoded[m]
            if mask_missing:
                k = k & present[:, MODALITIES.index(m)][:, None]
            tokens.append(t)
            masks.append(k)
            ids.append(torch.full((t.shape[1],), MODALITIES.index(m), dtype=torch.long, device=t.device))
        out = self.joint(torch.cat(tokens, dim=1), torch.cat(masks, dim=1), torch.cat(ids))
        return dict(zip(order, out.split([t.shape[1] for t in tokens], dim=1)))

    def modality_graph(self, feats: dict[str, torch.Tensor], present: torch.Tensor, *, code_form: bool,
                       stop_gradient: bool) -> torch.Tensor:
        """S′ over MODALITIES (graph index order; unused modalities absent): (B, 5, 5) per sample (code form) or
        (5, 5) for the batch (paper form). S = cosine similarity of the modalities' global features."""
        b = present.shape[0]
        stack = torch.zeros(b, len(MODALITIES), next(iter(feats.values())).shape[-1],
                            device=present.device, dtype=next(iter(feats.values())).dtype)
        used = torch.zeros(len(MODALITIES), dtype=torch.bool, device=present.device)
        for m, f in feats.items():
            stack[:, MODALITIES.index(m)] = f
            used[MODALITIES.index(m)] = True
        unit = F.normalize(stack, dim=-1)
        s = unit @ unit.transpose(1, 2)                                          # (B, 5, 5)
        valid = present & used[None, :]
        if code_form:
            return self_harmonized_weights(s, include_diagonal=True, row_l2_normalise=True,
                                           stop_gradient=stop_gradient, valid=valid)
        both = (valid[:, :, None] & valid[:, None, :]).to(s.dtype)
        s_mean = (s * both).sum(0) / both.sum(0).clamp_min(1.0)
        return self_harmonized_weights(s_mean, stop_gradient=stop_gradient, valid=valid.any(0))

    def simcl_loss(self, pooled: dict[str, torch.Tensor], present: torch.Tensor, mask_missing: bool
                   ) -> tuple[torch.Tensor, dict[str, float]]:
        sc: SIMCLConfig = self.config.simcl  # type: ignore[attr-defined]
        graph_present = present if mask_missing else torch.ones_like(present)
        graph = self.modality_graph(pooled, graph_present, code_form=sc.form == "code", stop_gradient=sc.stop_gradient)
        terms, stats = [], {}
        for m, n in itertools.combinations([m for m in MODALITIES if m in pooled], 2):
            i, j = MODALITIES.index(m), MODALITIES.index(n)
            valid = (present[:, i] & present[:, j]) if mask_missing else None
            if sc.form == "code":
                loss = pairwise_infonce(pooled[m], pooled[n], sc.temperature, negatives=sc.negatives,
                                        row_scale=graph[:, i, j], valid=valid)
                terms.append(loss)
            else:
                loss = pairwise_infonce(pooled[m], pooled[n], sc.temperature, negatives=sc.negatives, valid=valid)
                terms.append((graph[i, j] + graph[j, i]) * loss)
            stats[f"simcl_{m}_{n}"] = float(loss.detach())
            with torch.no_grad():   # top-1 of m -> n among the batch (diagnostic: chance is 1/B)
                hits = (F.normalize(pooled[m], dim=-1) @ F.normalize(pooled[n], dim=-1).t()).argmax(1)
                stats[f"acc_{m}_{n}"] = float((hits == torch.arange(len(hits), device=hits.device)).float().mean())
            stats[f"graph_{m}_{n}"] = float((graph[:, i, j].mean() if graph.ndim == 3 else graph[i, j]).detach())
        total = torch.stack(terms).mean() if sc.form == "code" else torch.stack(terms).sum()
        return total, stats

    def _presence(self, batch: PretrainBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(missing (B, 5) as the corpus flags it, used (5,) by this model's modalities, present = used and not
        missing)."""
        missing = batch.extras.get("missing")
        if missing is None:
            missing = torch.zeros(batch.images.shape[0], len(MODALITIES), dtype=torch.bool, device=batch.images.device)
        used = torch.tensor([m in self.modalities for m in MODALITIES], device=missing.device)
        return missing, used, ~missing & used[None, :]

    def pretrain_step(self, batch: PretrainBatch, ctx: StepContext) -> StepOutput:
        cfg: SCALEConfig = self.config  # type: ignore[assignment]
        missing, used, present = self._presence(batch)
        mask_missing = cfg.missing == "mask"
        if mask_missing and not present.any(dim=1).all():
            raise ValueError("a sample has every modality missing; it cannot be encoded under missing='mask'")
        inputs = self._impute(batch, missing)
        masked, targets = self._mask_inputs(inputs, present if mask_missing else used[None, :].expand_as(present))
        encoded = self.encode_modalities(masked)
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, float] = {}
        if cfg.simcl.enabled:
            pooled = {m: self.poolers[m](t[:, 0]) for m, (t, _) in encoded.items()}
            losses["simcl"], stats = self.simcl_loss(pooled, present, mask_missing)
        joint = self.joint_forward(encoded, present, mask_missing)
        weights = self._task_weights(joint, present, mask_missing)
        losses.update(self._masked_task_losses(joint, targets, weights))
        total = sum(self._weight_of(name) * v for name, v in losses.items())
        for m in self.modalities:
            stats[f"task_weight_{m}"] = float(weights[:, MODALITIES.index(m)].mean().detach())
        return StepOutput(losses=losses, total=total, stats=stats)  # type: ignore[arg-type]

    def _weight_of(self, loss_name: str) -> float:
        cfg: SCALEConfig = self.config  # type: ignore[assignment]
        return cfg.simcl.weight if loss_name == "simcl" else getattr(cfg.tasks, loss_name).weight

    def _task_weights(self, joint: dict[str, torch.Tensor], present: torch.Tensor, mask_missing: bool
                      ) -> torch.Tensor:
        """(B, 5) per-sample modality importance: diag of the code-form S′ on the joint first tokens (ones when
        task_weighting is 'none')."""
        b = present.shape[0]
        if self.config.task_weighting == "none":  # type: ignore[attr-defined]
            return torch.ones(b, len(MODALITIES), device=present.device)
        graph = self.modality_graph({m: h[:, 0] for m, h in joint.items()},
                                    present if mask_missing else torch.ones_like(present), code_form=True,
                                    stop_gradient=False)
        return torch.diagonal(graph, dim1=1, dim2=2)

    def _masked_task_losses(self, joint: dict[str, torch.Tensor], targets: dict[str, Any], weights: torch.Tensor
                            ) -> dict[str, torch.Tensor]:
        on_predictions = self.config.task_weighting == "predictions"  # type: ignore[attr-defined]
        on_losses = self.config.task_weighting == "losses"  # type: ignore[attr-defined]
        out: dict[str, torch.Tensor] = {}
        for m, target in targets.items():
            w = weights[:, MODALITIES.index(m)]
            # The heads run only where a loss is taken (the same loss as over every position, less work).
            if m in ("text", "table"):
                chosen = target != IGNORE_INDEX
                hidden, labels = joint[m], target
            else:
                values, chosen = target
                hidden, labels = joint[m][:, 1:], values      # the global token's prediction is dropped
            rows = chosen.nonzero(as_tuple=True)
            w_rows = w[rows[0]]
            if m in ("text", "table"):
                pred = self.mlm_head(hidden[rows])
                per = F.cross_entropy(pred * (w_rows[:, None] if on_predictions else 1.0), labels[rows],
                                      reduction="none")
            else:
                pred = self.regression_heads[m](hidden[rows])
                per = ((pred * (w_rows[:, None] if on_predictions else 1.0) - labels[rows]) ** 2).mean(dim=-1)
            if per.numel() == 0:
                out[TASK_OF[m]] = hidden.sum() * 0.0
            else:
                out[TASK_OF[m]] = (per * w_rows).mean() if on_losses else per.mean()
        return out

    # ---- product features (M5Product retrieval) ------------------------------------------------
    def encode_product(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        """Feature types of unmasked products: each modality's SIMCL feature (L2-normalised), 'image+text', and
        'joint' — the sum of the joint transformer's first tokens over the modalities (SCALE_code's pretrain
        retrieval features, ranked by raw dot product)."""
        missing, _, present = self._presence(batch)
        encoded = self.encode_modalities(self._impute(batch, missing))
        out = {m: F.normalize(self.poolers[m](t[:, 0]), dim=-1) for m, (t, _) in encoded.items()}
        out["image+text"] = out["image"] + out["text"]
        joint = self.joint_forward(encoded, present, self.config.missing == "mask")  # type: ignore[attr-defined]
        out["joint"] = sum(h[:, 0] for h in joint.values())  # type: ignore[assignment]
        return out


# tiny: the ViT/BERT of TCL-, COTS- and ERNIE-ViL 2.0-tiny (one shared unimodal stage); 2-layer video, audio and
# joint transformers without dropout and with PyTorch's GELU in the joint MLP (each a third of the CPU step time;
# the towers keep theirs, being shared). Sequence: text 30 + table 24 + image 65 + video 5 + audio 33 = 157 tokens.
_ENC_TINY: dict[str, Any] = dict(depth=2, heads=4, mlp_ratio=4.0, dropout=0.0)
# base: SCALE_code's sizes — 768 wide, 6-layer text/table encoder (BERT's first 6 layers), 6-layer video and
# audio encoders (8 heads, FFN 1024), 6 pre-LN joint layers (8 heads), 1024-d SIMCL projections, title 36 and
# table 64 tokens, 12 frames, 12 s of audio as 80 mel-bin tokens (SCALE_code's saved layout). The image tower is
# a ViT-B/16 on pixels (SCALE_code: 36 Faster R-CNN region features; see the card).
_ENC_BASE: dict[str, Any] = dict(depth=6, heads=8, mlp_ratio=1024 / 768, dropout=0.1)

_TINY: dict[str, Any] = dict(
    vision=TINY_VISION, text=TINY_BERT, preprocess=dict(resolution=64, train_crop_scale=(0.2, 1.0)),
    video=dict(frames=4, frame_size=16), audio=dict(seconds=1.0, mel=dict(n_mels=32, hop_length=512)),
    video_encoder=_ENC_TINY, audio_encoder=_ENC_TINY,
    joint=dict(depth=2, heads=4, max_tokens=256, dropout=0.0, activation="gelu"),
    # SCALE_code's SIMCL collapses at this budget (docs/scale.md, calibration): the paper's reading,
    # with S' held constant and cross-modal negatives, learns.
    simcl=dict(proj_dim=128, form="paper", stop_gradient=True, negatives="cross_modal"),
    table_max_length=24,
)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    # The default suite's size (docs/calibration.md): tiny at 32 px with the cpu towers and SIMCL projections at
    # their width; video, audio and joint as tiny.
    "cpu": dict(_TINY, vision=CPU_VISION, text=CPU_BERT, preprocess=dict(resolution=32, train_crop_scale=(0.2, 1.0)),
                simcl=dict(_TINY["simcl"], proj_dim=96)),
    "base": dict(vision=dict(image_size=224, patch_size=16, width=768, depth=12, heads=12, pre_norm=False,
                             activation="gelu", layer_norm_eps=1e-6),
                 text=dict(arch="bert", width=768, depth=6, heads=12, max_length=36, activation="gelu",
                           layer_norm_eps=1e-12, dropout=0.1),
                 preprocess=dict(resolution=224, train_crop_scale=(0.5, 1.0)),
                 video=dict(frames=12, frame_size=32),
                 audio=dict(seconds=12.0, mel=dict(n_mels=80, n_fft=1024, hop_length=256, tokens="mel")),
                 video_encoder=_ENC_BASE, audio_encoder=_ENC_BASE,
                 joint=dict(depth=6, heads=8, max_tokens=512), simcl=dict(proj_dim=1024), table_max_length=64),
}

RECIPES: dict[str, dict[str, Any]] = {
    "tiny": dict(lr=2e-3, weight_decay=0.02, init="unimodal", warmup_fraction=0.1, min_lr_ratio=0.1,
                 grad_clip_norm=1.0, source="CPU-scale: TCL/COTS-tiny's AdamW settings on the same towers"),
    "cpu": dict(lr=2e-3, weight_decay=0.02, init="unimodal", warmup_fraction=0.1, min_lr_ratio=0.1,
                grad_clip_norm=1.0, source="CPU-scale: the tiny recipe (docs/calibration.md)"),
    "base": dict(lr=1e-4, weight_decay=0.01, warmup_fraction=0.1, init="unimodal", grad_clip_norm=1.0,
                 source="SCALE_code run_pretrain_task.sh: lr 1e-4, warm-up 10 %, batch 64, 20 epochs (BertAdam: "
                        "linear decay, no bias correction, per-tensor clipping; ours: AdamW, cosine, global clip)"),
}

_NO_WEIGHTS = ("no SCALE weights are published: Xiaodongsuper/SCALE_code, M5Product_toolkit and the M5Product "
               "dataset site hold code, loaders and the evaluator only (docs/research/scale_code.md)")
_SITE = "M5Product_dataset benchmark.html @cc82729 (project website; docs/research/m5product.md §4)"


def _product_claim(dataset: str, setting: str, model: str, values: tuple[float, ...], **protocol: Any
                   ) -> ClaimedResult:
    names = ("mAP@1", "mAP@5", "mAP@10", "Prec@1", "Prec@5", "Prec@10")
    slug = model.lower().replace("scale, ", "").replace("+ ", "plus-").replace(" ", "-")
    return ClaimedResult(benchmark="product_retrieval", dataset=dataset, setting=setting, model=model,
                         metrics=dict(zip(names, values)), source=_SITE, confidence=Confidence.VERIFIED,
                         protocol={"relevance": "same category label", **protocol},
                         id=f"scale/{dataset}-{setting.replace(' ', '-')}-{slug}", no_weights=_NO_WEIGHTS)


CARD = MethodCard(
    name="scale",
    title="M5Product: Self-harmonized Contrastive Learning for E-commercial Multi-modal Pretraining (SCALE)",
    citation="Dong, Zhan, Wu, Wei, Kampffmeyer, Wei, Lu, Wang, Liang, CVPR 2022 (arXiv 2109.04275)",
    paper_url="https://arxiv.org/abs/2109.04275",
    official_code="https://github.com/Xiaodongsuper/SCALE_code (pretraining; the model file differs from what "
                  "its scripts import) and Xiaodongsuper/M5Product_toolkit (loaders, evaluator)",
    architecture="Five encoders (image ViT, text BERT, table through the text BERT with its own segment, video "
                 "and audio feature-sequence transformers), SIMCL on ReLU-projected global tokens before a "
                 "pre-LN joint co-transformer over all modalities' tokens, which feeds MLM, MEM (entity-level), "
                 "masked patch, frame and audio-token regression; modality weights from S' = S ⊙ softmax(S).",
    default_protocol={"scoring": "itc", "rerank_k": None, "text_max_length": 36, "resolution": 224,
                      "lineage": "pretrained (zero-shot product retrieval with pretrain features)"},
    claimed=(
        _product_claim("m5product-subset", "pretrain features", "SCALE, 5 modalities",
                       (58.72, 63.17, 61.05, 58.72, 39.66, 30.32), feature="not stated (scripts suggest the "
                       "sum of joint features)"),
        _product_claim("m5product-subset", "fine-tuned features", "SCALE, 5 modalities",
                       (70.62, 73.02, 71.50, 70.62, 48.20, 35.35), feature="not stated (scripts: 'dense')"),
        _product_claim("m5product-subset", "pretrain features", "SCALE, text only",
                       (47.70, 53.63, 51.59, 47.70, 30.96, 24.15)),
        _product_claim("m5product-subset", "pretrain features", "SCALE, text + image",
                       (51.47, 56.16, 54.41, 51.47, 33.41, 25.55)),
        _product_claim("m5product-subset", "pretrain features", "SCALE, + table",
                       (57.14, 61.71, 59.64, 57.14, 38.02, 28.99)),
        _product_claim("m5product-subset", "pretrain features", "SCALE, + video",
                       (58.57, 63.15, 61.02, 58.57, 39.26, 29.56)),
        _product_claim("m5product-whole", "pretrain features", "SCALE, 5 modalities",
                       (63.56, 67.51, 65.39, 63.56, 42.68, 32.17)),
    ),
    deviations=(
        Deviation(option="vision, text, preprocess.resolution, simcl.proj_dim (cpu)",
                  ours="cpu: 32 px images in 16 patches of 8 px, ViT and BERT 96 wide and 2 deep, 96-d SIMCL "
                       "projections (tiny: 64 px, 128 wide, 4 deep, 128-d); video, audio and joint as tiny",
                  reference="ViT-B/16 at 224 px, a 6-layer BERT, 1024-d projections (base preset)",
                  reason=f"{CPU_PRESET_REASON}; measured on builtin val with BERT's dropout: RSUM 106.3 at 250 x 256 (96.0 at 250 x 128; 4 layers at 250 x 128: 15.0, its text pairs still at chance)"),
        CPU_TEXT_DROPOUT,
        Deviation(option="suite.finetune.recipe_overrides", ours="the harness' id-aware image-text contrastive fine-tuning at SIMCL's τ, TCL's optimiser settings",
                  reference='no image-text retrieval fine-tuning is published for SCALE', reason='a stand-in so SCALE gets a fine-tuned row; tiny not calibrated'),
        Deviation(option="vision", ours="a ViT on pixels; its [CLS] is the image's global token; MRM regresses the "
                  "masked patches' pixels", reference="36 Faster R-CNN (VG) region features + 5-d boxes with a mean "
                  "'global' region, MRM regresses the masked 2048-d region features",
                  reason="no detector offline; the common interface encodes pixels"),
        Deviation(option="video.input", ours="frames: each frame area-resized to 16 px (tiny) and flattened, a "
                  "fixed descriptor; 'features' takes precomputed vectors (M5Product's S3D .npy)",
                  reference="frozen S3D (HowTo100M) features, one 1024-d vector per second",
                  reason="no S3D weights offline; the descriptor keeps motion and is as frozen as S3D"),
        Deviation(option="video_encoder, audio_encoder", ours="an encoder of its own for each",
                  reference="SCALE_code runs video through the image layers and has an audio stack",
                  reason="our image tower is a ViT on pixels, not a region-feature stack the video could share"),
        Deviation(option="table_token_type", ours="1: table tokens in their own segment (M5Product_toolkit)",
                  reference="SCALE_code: segment 0 and positions restarting at 0, no way to tell table from title",
                  reason="M5Product_toolkit's loader gives the table words segment 1 "
                         "(docs/research/m5product.md §2.4); 0 reproduces SCALE_code"),
        Deviation(option="train.recipe", ours="AdamW with cosine decay and global-norm clipping",
                  reference="BertAdam (no bias correction), linear decay, per-tensor clipping at 1.0; SCALE_code's "
                            "weight-decay groups are inverted (weights get none) and its 0.1x BERT lr never "
                            "matches on one GPU", reason="the harness has one optimiser for every method"),
        Deviation(option="simcl.form, simcl.stop_gradient, simcl.negatives (tiny, cpu)",
                  ours="tiny, cpu: the paper's form (S' from the batch-mean cosines, L = Σ S'_mn L_mn), S' held constant, "
                       "CLIP-style cross-modal negatives",
                  reference="SCALE_code (base keeps it): per-sample S' scaling the logits, not detached, NT-Xent "
                            "with same-modality negatives",
                  reason="measured at tiny: SCALE_code's form drives every graph weight to 0 within 30 steps (the "
                         "ReLU features die) and SIMCL sits at chance; detached with cross-modal negatives RSUM 13.6 "
                         "after 120 steps, the paper's form 143.0 (docs/scale.md)"),
        Deviation(option="joint.activation, joint.dropout, video_encoder.dropout, audio_encoder.dropout (tiny, cpu)",
                  ours="tiny, cpu: PyTorch's GELU in the joint MLP, no dropout in the joint, video and audio transformers",
                  reference="SCALE_code: QuickGELU (CLIP blocks), dropout 0.1 (base keeps both)",
                  reason="CPU step time at tiny, batch 256, measured: dropout off 5.0 -> 3.7 s, then GELU 3.7 -> 3.0 s"),
        Deviation(option="simcl.negatives", ours="simclr: NT-Xent within the local batch, as SCALE_code (DataParallel, "
                  "no gather)", reference="paper: pairwise InfoNCE with in-batch negatives (cross_modal: CLIP's form)",
                  reason="SCALE_code's loss (DataParallel: one process sees the whole batch)"),
    ),
    assumptions=(
        Assumption("simcl.form", "code: per-sample S'_b (diagonal in the softmax, rows L2-normalised) scaling "
                   "the logits, the 10 pair losses averaged", "SCALE_code model/SCALE.py; the paper's weighted "
                   "sum Σ S'_mn L_mn is a commented-out line there (form: paper)", Confidence.VERIFIED),
        Assumption("task_weighting", "predictions: diag of S' on the joint first tokens multiplies each head's "
                   "outputs", "SCALE_code; the loss-level weights were deleted in its last commit (losses)",
                   Confidence.VERIFIED),
        Assumption("simcl.stop_gradient", "False: S' is not detached", "SCALE_code", Confidence.VERIFIED),
        Assumption("missing", "zero_impute: zeros / [CLS][SEP], a missing video keeps an all-ones mask",
                   "M5Product loaders (docs/research/m5product.md §2.3)", Confidence.VERIFIED),
        Assumption("tasks.mlm.probability, tasks.mem.probability, tasks.mrm.probability, tasks.mfm.probability, "
                   "tasks.mam.probability", "0.15 everywhere; MRM zeroes 90 % of chosen patches, MFM/MAM all",
                   "M5Product loaders", Confidence.VERIFIED),
        Assumption("audio", "tiny: 1 s, 32 mel bins, hop 512, time tokens; base: 12 s, 80 mel-bin tokens",
                   "toolkit: 12 s at 16 kHz, n_fft 1024, hop 256, 80 mels, no log, per-frame standardised",
                   Confidence.VERIFIED),
    ),
    notes=(
        "Claimed numbers are M5Product same-category retrieval (mAP@K / Prec@K with the toolkit's cut-off "
        "rule), from the project website; the paper PDF was not available. Our builtin product retrieval uses "
        "the same metric on the built-in test split's categories (material-shape): not comparable.",
        "SCALE's image-text retrieval here uses the SIMCL features of image and text (encode_image / "
        "encode_text); the paper reports no image-text retrieval.",
    ),
)

SCALE.card = CARD


# Retrieval fine-tuning (benchmark finetuned_retrieval): SCALE publishes no image-text retrieval fine-tuning.
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    "tiny": dict(lr=2e-4, weight_decay=0.02, warmup_fraction=0.1, min_lr_ratio=0.1, grad_clip_norm=1.0,
                 source="CPU-scale, not calibrated: TCL-tiny's fine-tuning settings"),
    "cpu": dict(lr=2e-4, weight_decay=0.02, warmup_fraction=0.1, min_lr_ratio=0.1, grad_clip_norm=1.0,
                source="CPU-scale, not calibrated: the tiny fine-tuning settings"),
    "base": dict(lr=1e-5, weight_decay=0.01, warmup_fraction=0.1,
                 source="not published for SCALE; ALBEF/TCL's retrieval fine-tuning lr 1e-5 with SCALE_code's wd"),
}

register_method(MethodSpec(name="scale", model_cls=SCALE, config_cls=SCALEConfig, presets=PRESETS,
                           recipes=RECIPES, finetune_recipes=FINETUNE_RECIPES, in_default_suite=True,
                           unimodal_towers={"vision": "vision", "text": "text"}))
