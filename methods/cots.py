"""COTS: Collaborative Two-Stream Vision-Language Pre-Training (Lu et al., CVPR 2022, arXiv 2204.07441).

No official code exists. The model follows the paper's Sec. 3 as known from its abstract and a secondary
summary of the paper (the PDF's constants were not verified):
- two streams, no fusion network: a ViT and a BERT with linear projections to a shared space,
  EMA (momentum) copies of both, and aligned image/text queues of momentum features (row k of
  both queues is the same pair);
- instance level: momentum cross-modal contrastive learning; each image's positive is the
  momentum feature of its text, its negatives the text queue (and symmetrically);
- token level (MVLM, no cross-stream network): CMLM predicts masked words from the text
  encoder's token feature plus the paired image's global feature; CMVM predicts the dVAE tokens
  of masked patches (tokens of the *unmasked* image, from a frozen tokenizer) from the ViT's patch
  feature plus the paired text's global feature (Sec. 3.2.1: "the sum");
- task level: the KL divergence between the image→text and text→image distributions over the
  current pair and the queued pairs (aligned indices), symmetric by default;
- AMF: pairs whose momentum similarity is below μ − λσ of the queued pairs' similarities are
  left out of every loss of the step; the whole batch is still enqueued afterwards.
Every constant the paper does not let us verify is an option listed in the card's assumptions.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from vlpbench.methods.amf import amf_filter, pair_similarities
from vlpbench.methods.bert_mlm import BertWithMLM
from vlpbench.methods.card import Assumption, CPU_PRESET_REASON, CPU_TEXT_DROPOUT, Confidence, Deviation, MethodCard, retrieval_claim
from vlpbench.methods.config import StrictModel
from vlpbench.methods.interface import PretrainBatch, StepContext, StepOutput, VLPModel
from vlpbench.methods.losses import info_nce, kl_alignment
from vlpbench.methods.masking import IGNORE_INDEX, block_masks, mask_tokens
from vlpbench.methods.momentum import FeatureQueues, MomentumPairs, frozen_copy
from vlpbench.methods.preprocess import ImagePreprocess, ImagePreprocessConfig
from vlpbench.methods.registry import MethodSpec, VisualTokenizerSlot, register_method
from vlpbench.methods.tokenizer import TextTokenizer, TokenBatch
from vlpbench.methods.towers import CPU_BERT, CPU_VISION, TextTowerConfig, VisionTower, VisionTowerConfig, check_tower_shapes
from vlpbench.methods.visual_tokenizer import VisualTokenizer, VisualTokenizerConfig

KL_DIRECTIONS = {"symmetric": "symmetric", "i2t_to_t2i": "a_to_b", "t2i_to_i2t": "b_to_a"}


class AMFConfig(StrictModel):
    enabled: bool = True
    lam: float = Field(2.0, ge=0, description="Threshold μ − λσ of the queued pairs' momentum similarities.")
    warmup_steps: int = Field(0, ge=0, description="Steps before the filter may act; it also waits until the "
                                                   "queues are full of real pairs.")


class COTSConfig(StrictModel):
    vision: VisionTowerConfig
    text: TextTowerConfig
    preprocess: ImagePreprocessConfig
    visual_tokenizer: VisualTokenizerConfig
    embed_dim: int = Field(256, gt=0)
    temp: float = Field(0.07, gt=0)
    learn_temp: bool = Field(False, description="Learn τ (clamped to temp_range) instead of keeping it fixed.")
    temp_range: tuple[float, float] = (0.001, 0.5)
    momentum: float = Field(0.995, ge=0, le=1)
    queue_size: int = Field(65536, gt=1)
    instance_negatives: Literal["queue", "batch_and_queue"] = Field(
        "queue", description="queue: each pair is scored against its own momentum positive and the K queued "
                             "pairs (our reading of the paper's Sec. 3.2.2); batch_and_queue: also against the "
                             "other pairs' momentum features of the current batch (ALBEF's ITC layout), for the "
                             "instance loss and the KL distributions alike (indices stay aligned).")
    # Ablation switches: the paper's Table 3 rows are combinations of these.
    instance: bool = Field(True, description="Instance level: momentum cross-modal contrastive loss.")
    cmlm: bool = Field(True, description="Token level: cross-modal masked language modelling.")
    cmvm: bool = Field(True, description="Token level: cross-modal masked vision modelling (needs the tokenizer).")
    task: bool = Field(True, description="Task level: KL alignment of the two retrieval distributions.")
    kl_direction: Literal["symmetric", "i2t_to_t2i", "t2i_to_i2t"] = "symmetric"
    weight_instance: float = Field(1.0, ge=0)
    weight_mvlm: float = Field(1.0, ge=0)
    weight_task: float = Field(1.0, ge=0)
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    mvm_ratio: float = Field(0.4, gt=0, lt=1, description="Fraction of patches masked (BEiT: 0.4).")
    mvm_min_block: int = Field(16, gt=0, description="Smallest block of BEiT's blockwise masking (BEiT: 16).")
    mvlm_combine: Literal["sum", "concat"] = Field(
        "sum", description="sum: token feature + the other stream's global feature (the paper's Sec. 3.2.1); "
                           "concat: [token; global] through a linear layer.")
    amf: AMFConfig = Field(default_factory=AMFConfig)
    train_text_max_length: int | None = Field(None, ge=4, description="None = text.max_length.")

    @model_validator(mode="after")
    def _shapes(self) -> "COTSConfig":
        check_tower_shapes("COTS", self.vision, self.text, self.preprocess.resolution, "bert")
        if self.mvlm_combine == "sum" and self.vision.width != self.text.width:
            raise ValueError("mvlm_combine 'sum' adds a global feature of one stream to token features of the "
                             "other: vision.width must equal text.width (or use mvlm_combine 'concat')")
        if self.temp_range[0] > self.temp or self.temp > self.temp_range[1]:
            raise ValueError(f"temp {self.temp} outside temp_range {self.temp_range}")
        return self


class CrossModalHead(nn.Module):
    """Token features of one stream + the paired global feature of the other -> the head's input."""

    def __init__(self, combine: str, token_width: int, global_width: int) -> None:
        super().__init__()
        self.combine = combine
        self.proj = nn.Linear(token_width + global_width, token_width) if combine == "concat" else None

    def forward(self, tokens: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        g = global_.unsqueeze(1).expand(-1, tokens.shape[1], -1)
        if self.proj is None:
            return tokens + g
        return self.proj(torch.cat([tokens, g], dim=-1))


class COTS(VLPModel):
    def __init__(self, config: COTSConfig, tokenizer: TextTokenizer, vision: VisionTower, text: BertWithMLM,
                 image_tokenizer: VisualTokenizer | None) -> None:
        super().__init__(config, tokenizer, ImagePreprocess(config.preprocess))
        e = config.embed_dim
        self.visual = vision
        self.text = text
        self.vision_proj = nn.Linear(vision.width, e)
        self.text_proj = nn.Linear(text.width, e)
        self.temp = nn.Parameter(torch.tensor(float(config.temp)), requires_grad=config.learn_temp)
        self.visual_m = frozen_copy(self.visual)
        self.vision_proj_m = frozen_copy(self.vision_proj)
        self.text_m = frozen_copy(self.text.tower)
        self.text_proj_m = frozen_copy(self.text_proj)
        self._ema = MomentumPairs([(self.visual, self.visual_m), (self.vision_proj, self.vision_proj_m),
                                   (self.text.tower, self.text_m), (self.text_proj, self.text_proj_m)],
                                  config.momentum)
        self.queues = FeatureQueues(config.queue_size, {"image": e, "text": e})
        self.cmlm_combine = CrossModalHead(config.mvlm_combine, text.width, vision.width)
        self.image_tokenizer = image_tokenizer
        if image_tokenizer is not None:
            self.mask_embedding = nn.Parameter(torch.zeros(vision.width).normal_(std=0.02))
            self.cmvm_combine = CrossModalHead(config.mvlm_combine, vision.width, text.width)
            self.cmvm_head = nn.Linear(vision.width, image_tokenizer.vocab_size)

    @classmethod
    def from_config(cls, config: COTSConfig, tokenizer: TextTokenizer) -> "COTS":
        vision = VisionTower(config.vision)
        text = BertWithMLM(config.text, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id)
        image_tokenizer = None
        if config.cmvm:
            image_tokenizer = VisualTokenizer(config.visual_tokenizer, vision.grid, config.preprocess.mean,
                                              config.preprocess.std)
        return cls(config, tokenizer, vision, text, image_tokenizer)

    def train(self, mode: bool = True) -> "COTS":
        super().train(mode)
        if self.image_tokenizer is not None:
            self.image_tokenizer.train(False)
        return self

    # ---- embeddings (two streams: dot-product retrieval) -----------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.vision_proj(self.visual(images).pooled), dim=-1)

    def encode_text(self, text: TokenBatch) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text(text.input_ids, text.attention_mask).pooled), dim=-1)

    def contrastive_logit_scale(self) -> torch.Tensor:
        return 1.0 / self.temp

    # ---- pretraining ---------------------------------------------------------------------------
    def amf_ready(self, ctx: StepContext) -> bool:
        """The filter acts once its warm-up is over and the queues hold only real pairs."""
        amf = self.config.amf
        return amf.enabled and ctx.step >= amf.warmup_steps and int(self.queues.filled) >= self.queues.size

    def pretrain_step(self, batch: PretrainBatch, ctx: StepContext) -> StepOutput:
        cfg = self.config
        if cfg.learn_temp:
            with torch.no_grad():
                self.temp.clamp_(*cfg.temp_range)
        temp = self.temp
        text = batch.text
        image_out = self.visual(batch.images)
        text_out = self.text(text.input_ids, text.attention_mask)
        image_feat = F.normalize(self.vision_proj(image_out.pooled), dim=-1)
        text_feat = F.normalize(self.text_proj(text_out.pooled), dim=-1)

        stats: dict[str, float] = {"temp": float(temp.detach())}
        flags: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            self._ema.update()
            image_feat_m = F.normalize(self.vision_proj_m(self.visual_m(batch.images).pooled), dim=-1)
            text_feat_m = F.normalize(self.text_proj_m(self.text_m(text.input_ids, text.attention_mask).pooled),
                                      dim=-1)
            queue_image, queue_text = self.queues.get("image"), self.queues.get("text")
            batch_sims = pair_similarities(image_feat_m, text_feat_m)
            keep = torch.ones_like(batch_sims, dtype=torch.bool)
            stats["pair_sim_mean"] = float(batch_sims.mean())
            if self.amf_ready(ctx):
                decision = amf_filter(batch_sims, pair_similarities(queue_image, queue_text), cfg.amf.lam)
                keep = decision.keep
                if not bool(keep.any()):   # never an empty step: keep the most similar pair
                    keep = batch_sims == batch_sims.max()
                flags["amf_dropped"] = ~keep
                stats.update(amf_threshold=decision.threshold, amf_kept=float(keep.float().mean()))

        losses: dict[str, torch.Tensor] = {}
        logits_i2t, logits_t2i, target = self._retrieval_logits(image_feat, text_feat, image_feat_m, text_feat_m,
                                                                queue_image, queue_text, keep)
        logits_i2t, logits_t2i = logits_i2t / temp, logits_t2i / temp
        total = image_feat.new_zeros(())
        if cfg.instance:
            losses["inst_i2t"] = info_nce(logits_i2t, target)
            losses["inst_t2i"] = info_nce(logits_t2i, target)
            total = total + cfg.weight_instance * (losses["inst_i2t"] + losses["inst_t2i"])
        if cfg.task:
            losses["task_kl"] = kl_alignment(logits_i2t, logits_t2i, KL_DIRECTIONS[cfg.kl_direction])
            total = total + cfg.weight_task * losses["task_kl"]
        if cfg.cmlm:
            losses["cmlm"] = self._cmlm(text, image_out.pooled, keep)
            total = total + cfg.weight_mvlm * losses["cmlm"]
        if cfg.cmvm:
            losses["cmvm"], stats["cmvm_acc"] = self._cmvm(batch.images, text_out.pooled, keep)
            total = total + cfg.weight_mvlm * losses["cmvm"]
        # Every pair of the batch, filtered or not, enters the queues after the loss.
        self.queues.enqueue(image=image_feat_m, text=text_feat_m)
        return StepOutput(losses=losses, total=total, stats=stats, sample_flags=flags)

    def _retrieval_logits(self, image_feat: torch.Tensor, text_feat: torch.Tensor, image_feat_m: torch.Tensor,
                          text_feat_m: torch.Tensor, queue_image: torch.Tensor, queue_text: torch.Tensor,
                          keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Similarities (before τ) of each kept pair's image to the candidate texts and of its text to
        the candidate images, and the positive's column. Column j is the same pair on both sides:
        "queue": [own pair; K queued pairs] (positive at 0); "batch_and_queue": [the B pairs of the
        batch; K queued pairs] (row i's positive at i)."""
        if self.config.instance_negatives == "queue":
            logits_i2t = torch.cat([(image_feat * text_feat_m).sum(-1, keepdim=True), image_feat @ queue_text.t()], 1)
            logits_t2i = torch.cat([(text_feat * image_feat_m).sum(-1, keepdim=True), text_feat @ queue_image.t()], 1)
            target = torch.zeros(image_feat.shape[0], dtype=torch.long, device=image_feat.device)
        else:
            logits_i2t = image_feat @ torch.cat([text_feat_m, queue_text]).t()
            logits_t2i = text_feat @ torch.cat([image_feat_m, queue_image]).t()
            target = torch.arange(image_feat.shape[0], device=image_feat.device)
        return logits_i2t[keep], logits_t2i[keep], target[keep]

    def _cmlm(self, text: TokenBatch, image_global: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        tok = self.tokenizer
        ids, mask = text.input_ids[keep], text.attention_mask[keep]
        masked = mask_tokens(ids, vocab_size=tok.vocab_size, mask_id=tok.mask_id, never_mask=(tok.pad_id, tok.cls_id),
                             probability=self.config.mlm_probability)
        hidden = self.text(masked.input_ids, mask).tokens
        logits = self.text.mlm(self.cmlm_combine(hidden, image_global[keep]))
        return F.cross_entropy(logits.flatten(0, 1), masked.labels.flatten(), ignore_index=IGNORE_INDEX)

    def _cmvm(self, images: torch.Tensor, text_global: torch.Tensor, keep: torch.Tensor
              ) -> tuple[torch.Tensor, float]:
        assert self.image_tokenizer is not None
        images = images[keep]
        targets = self.image_tokenizer(images)                        # tokens of the unmasked image
        patch_mask = block_masks(images.shape[0], self.visual.grid, self.config.mvm_ratio,
                                 min_block=self.config.mvm_min_block).to(images.device)
        tokens = self.visual(images, patch_mask, self.mask_embedding).tokens[:, self.visual.num_prefix_tokens:]
        logits = self.cmvm_head(self.cmvm_combine(tokens, text_global[keep]))
        labels = torch.where(patch_mask, targets, torch.full_like(targets, IGNORE_INDEX))
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        acc = float((logits.argmax(-1)[patch_mask] == targets[patch_mask]).float().mean())
        return loss, acc


_VIS_BASE: dict[str, Any] = dict(image_size=224, patch_size=16, width=768, depth=12, heads=12, pre_norm=False,
                                 activation="gelu", layer_norm_eps=1e-6)
_TXT_BASE: dict[str, Any] = dict(arch="bert", width=768, depth=12, heads=12, max_length=30, activation="gelu",
                                 layer_norm_eps=1e-12, dropout=0.1)

# CPU-scale: the same towers as TCL-tiny (so both share one unimodal-init stage), a small dVAE
# with an 8x8 token grid (the ViT's), BEiT's masking scaled to 64 patches.
_TINY: dict[str, Any] = dict(
    vision=dict(_VIS_BASE, image_size=64, patch_size=8, width=128, depth=4, heads=4),
    text=dict(_TXT_BASE, width=128, depth=4, heads=4),
    preprocess=dict(resolution=64, train_crop_scale=(0.2, 1.0)),
    visual_tokenizer=dict(n_hid=8, blocks_per_group=1, vocab_size=512),
    momentum=0.9,
    queue_size=256,
    instance_negatives="batch_and_queue",
    mvm_min_block=4,
)

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    # The default suite's size (docs/calibration.md): tiny at 32 px and the cpu width, keeping tiny's depth (two
    # layers kept COTS near chance); a 4x4 token grid, BEiT's blocks scaled to 16 patches.
    "cpu": dict(_TINY, vision=dict(CPU_VISION, depth=4), text=dict(CPU_BERT, depth=4),
                preprocess=dict(resolution=32, train_crop_scale=(0.2, 1.0)), mvm_min_block=2),
    # ViT-B/16 + BERT-base, DALL-E's tokenizer (8,192 codes, 14x14 tokens at 224 px: 112 px input).
    "base": dict(
        vision=_VIS_BASE,
        text=_TXT_BASE,
        preprocess=dict(resolution=224, train_crop_scale=(0.2, 1.0)),
        visual_tokenizer=dict(n_hid=256, blocks_per_group=2, vocab_size=8192),
    ),
}

RECIPES: dict[str, dict[str, Any]] = {
    "tiny": dict(lr=2e-3, weight_decay=0.02, init="unimodal", warmup_fraction=0.1, min_lr_ratio=0.1, grad_clip_norm=1.0,
                 source="CPU-scale: TCL-tiny's calibrated AdamW settings (docs/calibration.md); COTS's own are "
                        "not published"),
    "cpu": dict(lr=2e-3, weight_decay=0.02, init="unimodal", warmup_fraction=0.1, min_lr_ratio=0.1, grad_clip_norm=1.0,
                source="CPU-scale: the tiny recipe (docs/calibration.md)"),
    "base": dict(lr=1e-4, weight_decay=0.02, warmup_steps=2000, min_lr_ratio=0.1, init="unimodal",
                 source="not published for COTS; ALBEF/TCL's AdamW lr 1e-4, wd 0.02 (same data and towers)"),
}

_FLICKR = "flickr30k-karpathy-test-1k"
_COCO = "coco-karpathy-test-5k"
_NO_WEIGHTS = ("COTS released neither code nor weights (the CVPR 2022 open-access page lists only the paper, its "
               "supplement and arXiv)")
_RECALLED = "recollection of the paper's Table 1 (arXiv 2204.07441), not verified against the paper"

CARD = MethodCard(
    name="cots",
    title="COTS: Collaborative Two-Stream Vision-Language Pre-Training Model for Cross-Modal Retrieval",
    citation="Lu, Fei, Huo, Gao, Lu, Wen, CVPR 2022",
    paper_url="https://arxiv.org/abs/2204.07441",
    official_code=None,
    architecture="Two streams (ViT, BERT) with no fusion network; momentum encoders and aligned image/text "
                 "queues; instance-level momentum contrastive loss, token-level CMLM + CMVM (masked words / dVAE "
                 "tokens predicted with the other stream's global feature), task-level KL alignment of the two "
                 "retrieval distributions over the queued pairs; adaptive momentum filter (AMF) for noisy pairs. "
                 "Retrieval by dot product of the two streams' embeddings.",
    default_protocol={"scoring": "itc", "rerank_k": None, "text_max_length": 30,
                      "lineage": "fine-tuned numbers: pretrained then fine-tuned on each dataset", "resolution": 384},
    claimed=(
        retrieval_claim(_FLICKR, "fine-tuned", "COTS (5.3M), ViT-B/16", (88.2, 98.5, 99.7), (75.2, 93.6, 96.5),
                        _RECALLED, Confidence.MEMORY_LOW, id="cots/flickr30k-finetuned-5m", no_weights=_NO_WEIGHTS,
                        lineage="fine-tuned on Flickr30K", scoring="itc"),
        retrieval_claim(_COCO, "fine-tuned", "COTS (5.3M), ViT-B/16", (66.9, 88.8, 94.0), (50.5, 77.6, 86.1),
                        _RECALLED, Confidence.MEMORY_LOW, id="cots/coco-finetuned-5m", no_weights=_NO_WEIGHTS,
                        lineage="fine-tuned on COCO", scoring="itc"),
        retrieval_claim(_FLICKR, "fine-tuned", "COTS (15.3M), ViT-B/16", (90.6, 98.7, 99.7), (76.5, 93.9, 96.6),
                        _RECALLED, Confidence.MEMORY_LOW, id="cots/flickr30k-finetuned-15m", no_weights=_NO_WEIGHTS,
                        lineage="fine-tuned on Flickr30K", scoring="itc",
                        notes="TR@1 90.6 is quoted by an aggregator (S), which gives IR@1 78.3, not 76.5, possibly "
                              "for another row of the paper; the other numbers are recollection"),
        retrieval_claim(_COCO, "fine-tuned", "COTS (15.3M), ViT-B/16", (69.0, 90.4, 94.9), (52.4, 79.0, 86.9),
                        _RECALLED, Confidence.MEMORY_LOW, id="cots/coco-finetuned-15m", no_weights=_NO_WEIGHTS,
                        lineage="fine-tuned on COCO", scoring="itc"),
    ),
    assumptions=(
        Assumption("momentum", "0.995 (tiny: 0.9)", "MoCo/ALBEF value; not found in the paper"),
        Assumption("queue_size", "65,536 (tiny: 256)", "MoCo's size; not found in the paper"),
        Assumption("instance_negatives", "queue: [own pair; K queued pairs] (tiny: batch_and_queue)",
                   "the paper's Sec. 3.2.2 (read in a secondary summary): the paired text is the positive, the "
                   "queue the negatives; whether the other pairs of the batch are negatives too was not found",
                   Confidence.MEMORY_MEDIUM),
        Assumption("temp, learn_temp", "0.07, fixed", "MoCo's τ; whether COTS learns τ was not found"),
        Assumption("embed_dim", "256", "ALBEF's projection size; not found in the paper"),
        Assumption("weight_instance, weight_mvlm, weight_task", "1, 1, 1 (unweighted sum)",
                   "recollection of the paper's total loss, not verified", Confidence.MEMORY_LOW),
        Assumption("instance", "L_I2T + L_T2I (not halved)",
                   "recollection of the paper's Sec. 3.2.2: halving unverified", Confidence.MEMORY_MEDIUM),
        Assumption("kl_direction", "symmetric: KL(P_i2t ‖ P_t2i) + KL(P_t2i ‖ P_i2t)",
                   "the paper's Sec. 3.2.3 (read in a secondary summary): 'symmetric KL divergence'",
                   Confidence.SECONDARY),
        Assumption("mvlm_combine", "sum of the token feature and the other stream's global feature",
                   "the paper's Sec. 3.2.1 (read in a secondary summary): prediction 'from the sum of the masked "
                   "token embedding and the paired text's global embedding'", Confidence.SECONDARY),
        Assumption("mlm_probability", "0.15 with BERT's 80/10/10", "BERT; not found in the paper"),
        Assumption("mvm_ratio, mvm_min_block", "0.4, 16 (tiny: 4, cpu: 2) blockwise", "BEiT's masking; not found in the "
                   "paper", Confidence.MEMORY_LOW),
        Assumption("visual_tokenizer", "DALL-E dVAE, 8,192 codes (base)", "recollection (BEiT's use of DALL-E's "
                   "dVAE); the paper's Sec. 3.2.1 (read in a secondary summary) says 24x24 tokens per image, i.e. "
                   "384 px images", Confidence.MEMORY_MEDIUM),
        Assumption("amf.lam", "2.0 (θ = μ − 2σ)", "recollection; the paper's Sec. 3.3 (read in "
                   "a secondary summary) gives the form μ − λσ but not λ", Confidence.MEMORY_LOW),
        Assumption("amf.warmup_steps", "0, plus until the queues are full of real pairs",
                   "not found in the paper"),
        Assumption("amf (what it computes on)", "momentum similarity of the current pair vs the row-wise "
                   "similarities of the queued pairs; σ the population std",
                   "the paper's Sec. 3.3, read in a secondary summary", Confidence.SECONDARY),
        Assumption("vision.weights, text.pretrained_dir", "ImageNet ViT-B/16 + bert-base (as ALBEF)",
                   "recollection of the paper, not verified", Confidence.MEMORY_LOW),
        Assumption("train.recipe", "AdamW lr 1e-4, wd 0.02 (base)", "batch, lr and epochs not found; ALBEF's"),
    ),
    deviations=(
        Deviation(option="vision, text, preprocess.resolution, mvm_min_block (cpu)",
                  ours="cpu: 32 px images in 16 patches of 8 px, ViT and BERT 96 wide and 4 deep (tiny's depth), "
                       "BEiT blocks of at least 2 of the 16 patches (tiny: 64 px, 128 wide, blocks of 4)",
                  reference="ViT-B/16 and BERT-base at 224 px (base preset); BEiT's blocks of at least 16 patches",
                  reason=f"{CPU_PRESET_REASON}; measured on builtin val at 250 x 256 with BERT's dropout: RSUM 107.1 at 4 layers, 37.6 at 2 (the other methods' depth); at 4 layers it varies with the seed and the dVAE (66.4-116.6 in four runs), being short of steps; without BERT's dropout (the default): 92.3 at 240 x 256, 101.7 (seed 1: 110.6) at 260, 128.3 at 270 (the default's steps), 126.5 at 280"),
        CPU_TEXT_DROPOUT,
        Deviation(option="suite.finetune.recipe_overrides", ours="the harness' id-aware contrastive fine-tuning at COTS' τ, TCL's optimiser settings",
                  reference="COTS' fine-tuning recipe is not published (no official code; batch, lr and epochs "
                            "not found)", reason='closest published recipe on the same towers; tiny not calibrated'),
        Deviation(option="visual_tokenizer.weights (tiny, cpu)",
                  ours="a small dVAE of DALL-E's layout trained by the harness on the pretraining images "
                       "(512 codes; 8x8 tokens at 64 px at tiny, 4x4 at 32 px at cpu; `vlpbench dvae train`)",
                  reference="DALL-E's released dVAE (8,192 codes)", reason="offline; base loads the file"),
        Deviation(option="train.recipe.init",
                  ours="'unimodal': local weights when vision.weights / text.pretrained_dir name them, else the "
                       "harness' unimodal stage (shared with TCL-tiny: same towers)",
                  reference="ImageNet-pretrained ViT and bert-base", reason="offline"),
        Deviation(option="momentum, queue_size (tiny, cpu)",
                  ours="m 0.9, 256 entries at tiny and cpu (one tiny batch, two cpu batches)",
                  reference="not published (MoCo/ALBEF: 0.995, 65,536)",
                  reason="scaled to a 250-step run as for TCL-tiny (docs/calibration.md); 60-step probes "
                         "(docs/cots.md): queue 256 reached val RSUM 129 where 1,024 reached 27"),
        Deviation(option="instance_negatives (tiny, cpu)", ours="batch_and_queue: the other pairs' momentum features "
                                                          "of the batch are negatives too (ALBEF's ITC layout)",
                  reference="queue: negatives only from the queue (the paper's Sec. 3.2.2, read in a secondary "
                            "summary)",
                  reason="with queue-only negatives every positive is a current momentum feature and every "
                         "negative an older one, and at m 0.9 the encoders drift fast enough to tell them apart: "
                         "features collapse (pair similarity 0.9) and val RSUM stays at chance (3.3 at queue "
                         "1,024, 7.1 at 256; 26.8 and 129 with batch_and_queue) in 60-step probes"),
        Deviation(option="suite.tokenizer", ours="WordPiece vocabulary built from the corpus",
                  reference="bert-base-uncased vocabulary (30,522)", reason="offline"),
    ),
    notes=(
        "Separate passes: the contrastive and KL terms use unmasked inputs; CMLM and CMVM run extra masked "
        "passes (the paper may share them).",
        "AMF leaves filtered pairs out of every loss as queries (rows); they are still enqueued. Under "
        "instance_negatives 'batch_and_queue' the filtered pairs of the batch still serve as negatives and as KL "
        "candidates (columns), since only rows are dropped (methods/cots.py _retrieval_logits). The filter's "
        "precision/recall against the built-in dataset's known mismatched pairs is in each run's pretrain "
        "record (summary.filters.amf_dropped).",
        "Queues hold the momentum features of every process, gathered in rank order before they are enqueued "
        "(methods/momentum.py FeatureQueues.enqueue), as MoCo/ALBEF's concat_all_gather.",
        "tiny, default data (5 % mismatched pairs), seed 0, 2-core CPU: test ITC RSUM 179.0 (untrained copy 3.6; "
        "CLIP-tiny 240.2 in the same run, TCL-tiny 74.6); AMF dropped 4.6 % of pairs with precision 47.2 % and "
        "recall 43.5 % against the known mismatched pairs (chance: 5 %). Before the two tiny deviations the "
        "same run reached RSUM 3.25 (collapse; docs/cots.md has the calibration probes).",
        "AMF vs noise (tiny default job, seed 0, stages shared): 20 % mismatched pairs: AMF on drops 4.4 % of "
        "pairs, precision 79.8 %, recall 17.7 %, RSUM 169.7 vs 158.8 off; 40 %: drops 3.7 %, precision 72.4 %, "
        "recall 6.8 %, RSUM 82.6 vs 83.5 off. θ = μ − 2σ removes the low tail of the similarity distribution "
        "(4-5 % of pairs) whatever the noise rate: precise, low recall at high noise.",
        "Ablation at tiny (default data, seed 0, ITC RSUM): instance only 198.4, instance + KL 167.3, all three "
        "levels 179.0 - at 250 steps the KL term costs and MVLM recovers part of it (docs/cots.md).",
    ),
)

COTS.card = CARD


# Retrieval fine-tuning (benchmark finetuned_retrieval): COTS' recipe is not published (no official code).
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    "tiny": dict(lr=2e-4, weight_decay=0.02, warmup_steps=0, min_lr_ratio=0.1, grad_clip_norm=1.0,
                 source="CPU-scale, not calibrated: TCL-tiny's fine-tuning settings (same towers)"),
    "cpu": dict(lr=2e-4, weight_decay=0.02, warmup_steps=0, min_lr_ratio=0.1, grad_clip_norm=1.0,
                source="CPU-scale, not calibrated: the tiny fine-tuning settings"),
    "base": dict(lr=1e-5, weight_decay=0.02, warmup_steps=0, min_lr_ratio=0.1,
                 source="not published for COTS; ALBEF/TCL's retrieval fine-tuning (lr 1e-5, wd 0.02, cosine)"),
}

register_method(MethodSpec(name="cots", model_cls=COTS, config_cls=COTSConfig, presets=PRESETS, recipes=RECIPES,
                           finetune_recipes=FINETUNE_RECIPES, in_default_suite=True,
                           unimodal_towers={"vision": "vision", "text": "text"},
                           visual_tokenizer=VisualTokenizerSlot(field="visual_tokenizer", enabled_by="cmvm",
                                                                vision="vision")))
