"""Unimodal pretraining: the start that two-tower and fusion methods assume their encoders have.

TCL/ALBEF begin from DeiT-B/16 (a ViT trained on ImageNet-1k labels) and bert-base-uncased (a
BERT trained with masked-LM); COTS and ERNIE-ViL 2.0 likewise begin from pretrained towers.
Nothing can be downloaded here, so on a dataset without such weights this stage trains the
analogue, on the pretraining split only (never val/test):

- vision: the method's own ViT, supervised classification of each image's main object
  ("red star": one label per image, as in ImageNet) with a linear head on the class token,
  cross-entropy with label smoothing (DeiT: 0.1), the method's random resized crop;
- text: the method's own BERT (all layers: for TCL the text and fusion layers together, as
  bert-base-uncased initialises both in ALBEF), masked-LM (15 %, 80/10/10) on the text corpus
  the tokenizer was trained on.

The output is in the formats a user gives for `base`: a timm ViT state dict
(`vision.safetensors`) and a transformers `BertForMaskedLM` directory (`text/`), so methods load
it through their ordinary options (`vision.weights`, `text.pretrained_dir`). A part the user
already supplies weights for is not trained. Results are cached under a fingerprint of
everything that determines them (tower shapes, tokenizer, dataset, budget, seed, stage
version), written to a temporary folder and renamed into place, so a half-written stage is never
reused; its record (objective, steps, held-out accuracy) goes into the model's lineage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from transformers import BertForMaskedLM

from vlpbench.benchmarks.data.types import LabelledImages, TextCorpus
from vlpbench.benchmarks.training.batches import sample_seeds
from vlpbench.benchmarks.training.schedule import warmup_cosine, warmup_steps_for
from vlpbench.benchmarks.training.stage_cache import cached_stage
from vlpbench.methods.config import ConfigError, StrictModel, sha256_json
from vlpbench.methods.masking import mask_tokens
from vlpbench.methods.preprocess import ImagePreprocess, ImagePreprocessConfig
from vlpbench.methods.tokenizer import TextTokenizer
from vlpbench.methods.towers import TextTower, TextTowerConfig, VisionTower, VisionTowerConfig, quiet_hf_loading

STAGE_VERSION = "1"
VISION_FILE = "vision.safetensors"
TEXT_DIR = "text"
RECORD_FILE = "unimodal.json"


class UnimodalBudget(StrictModel):
    """Steps and optimiser settings of the unimodal stage (shared by every method that uses it)."""

    vision_steps: int = Field(300, gt=0)
    text_steps: int = Field(300, gt=0)
    batch_size: int = Field(256, gt=1)
    vision_lr: float = Field(1e-3, gt=0)
    text_lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0, description="DeiT: 0.05; BERT: 0.01.")
    warmup_fraction: float = Field(0.1, ge=0, le=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="DeiT: 0.1.")
    mlm_probability: float = Field(0.15, gt=0, lt=1)
    grad_clip_norm: float = Field(1.0, gt=0)


@dataclass(frozen=True)
class UnimodalRequest:
    """What to pretrain: `vision` / `text` None = the user supplies those weights (or the tower is not used)."""

    vision: VisionTowerConfig | None
    preprocess: ImagePreprocessConfig | None
    text: TextTowerConfig | None
    budget: UnimodalBudget
    seed: int

    def fingerprint(self, tokenizer: TextTokenizer, dataset_fingerprint: str) -> str:
        keyed = {
            "version": STAGE_VERSION, "seed": self.seed, "budget": self.budget.model_dump(mode="json"),
            "vision": None if self.vision is None else self.vision.model_dump(mode="json", exclude={"weights"}),
            "preprocess": None if self.preprocess is None else self.preprocess.model_dump(mode="json"),
            "text": None if self.text is None else self.text.model_dump(mode="json", exclude={"pretrained_dir"}),
            "tokenizer": tokenizer.fingerprint() if self.text is not None else None,
            "dataset": dataset_fingerprint,
        }
        return sha256_json(keyed)


@dataclass(frozen=True)
class UnimodalWeights:
    directory: Path
    record: dict[str, Any]

    @property
    def vision_weights(self) -> Path | None:
        p = self.directory / VISION_FILE
        return p if p.is_file() else None

    @property
    def text_dir(self) -> Path | None:
        p = self.directory / TEXT_DIR
        return p if p.is_dir() else None


def _log_every(steps: int) -> int:
    return max(1, steps // 5)


def _optimizer(module: nn.Module, lr: float, budget: UnimodalBudget, steps: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": budget.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    warm = warmup_steps_for(steps, budget.warmup_fraction, None)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, steps, warm, 0.0))


def _step(loss: torch.Tensor, model: nn.Module, opt: torch.optim.Optimizer,
          sched: torch.optim.lr_scheduler.LambdaLR, clip: float) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 7]).permutation(n)


def train_vision(config: VisionTowerConfig, preprocess: ImagePreprocessConfig, data: LabelledImages,
                 budget: UnimodalBudget, seed: int, log: Callable[[str], None] = print
                 ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Supervised main-object classification; returns the ViT state dict (no head) and a record."""
    classes = sorted(set(data.labels))
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for c in data.labels])
    torch.manual_seed(seed)
    tower = VisionTower(config.model_copy(update={"weights": None}))
    head = nn.Linear(tower.width, len(classes))
    model = nn.ModuleDict({"tower": tower, "head": head})
    prep = ImagePreprocess(preprocess)
    opt, sched = _optimizer(model, budget.vision_lr, budget, budget.vision_steps)
    per_epoch = len(labels) // budget.batch_size
    if per_epoch == 0:
        raise ConfigError(f"unimodal batch_size {budget.batch_size} exceeds the {len(labels)} labelled images")
    t0, loss = time.perf_counter(), torch.tensor(float("nan"))
    model.train()
    for step in range(budget.vision_steps):
        epoch, k = divmod(step, per_epoch)
        idx = _epoch_order(len(labels), seed, epoch)[k * budget.batch_size:(k + 1) * budget.batch_size]
        images = prep.train(data.images.get(idx), sample_seeds(seed, epoch, idx, stream=3))
        logits = head(tower(images).pooled)
        loss = F.cross_entropy(logits, labels[idx], label_smoothing=budget.label_smoothing)
        _step(loss, model, opt, sched, budget.grad_clip_norm)
        if (step + 1) % _log_every(budget.vision_steps) == 0:
            log(f"  vision step {step + 1}/{budget.vision_steps}  loss {loss.item():.3f}")
    model.eval()
    known = [i for i, c in enumerate(data.heldout_labels) if c in index]
    with torch.no_grad():
        correct = 0
        for start in range(0, len(known), 256):
            idx = np.asarray(known[start:start + 256])
            pred = head(tower(prep.eval(data.heldout_images.get(idx))).pooled).argmax(1)
            correct += int((pred == torch.tensor([index[data.heldout_labels[i]] for i in idx])).sum())
    record = {"objective": "supervised main-object classification (ImageNet analogue)",
              "classes": len(classes), "steps": budget.vision_steps, "batch_size": budget.batch_size,
              "lr": budget.vision_lr, "label_smoothing": budget.label_smoothing, "final_loss": float(loss.detach()),
              "heldout_top1": 100.0 * correct / max(len(known), 1), "heldout_n": len(known),
              "wall_s": time.perf_counter() - t0, "data": data.source}
    state = {k: v.detach().contiguous() for k, v in tower.vit.state_dict().items() if not k.startswith("head.")}
    return state, record


def _mlm_accuracy(model: BertForMaskedLM, tokenizer: TextTokenizer, texts: Sequence[str], max_length: int,
                  probability: float, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    correct = total = 0
    with torch.no_grad():
        for start in range(0, len(texts), 256):
            batch = tokenizer(list(texts[start:start + 256]), max_length).trimmed()
            m = mask_tokens(batch.input_ids, vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
                            never_mask=(tokenizer.pad_id, tokenizer.cls_id), probability=probability, generator=g)
            logits = model(input_ids=m.input_ids, attention_mask=batch.attention_mask).logits
            chosen = m.labels != -100
            correct += int((logits.argmax(-1)[chosen] == m.labels[chosen]).sum())
            total += int(chosen.sum())
    return 100.0 * correct / max(total, 1)


def train_text(config: TextTowerConfig, tokenizer: TextTokenizer, corpus: TextCorpus, budget: UnimodalBudget,
               seed: int, log: Callable[[str], None] = print) -> tuple[BertForMaskedLM, dict[str, Any]]:
    """Masked-LM pretraining of the method's BERT (all of its layers); returns the model and a record."""
    if config.arch != "bert":
        raise ConfigError(f"the unimodal stage pretrains BERT text towers with masked-LM; text.arch is "
                          f"{config.arch!r} (CLIP's text tower trains from scratch: use recipe init 'scratch')")
    torch.manual_seed(seed)
    shape = TextTower(config.model_copy(update={"pretrained_dir": None}), tokenizer.vocab_size,
                      tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id).model.config
    model = BertForMaskedLM(shape)
    texts = list(corpus.train)   # tokenised a batch at a time: a short stage reads a fraction of a large corpus
    opt, sched = _optimizer(model, budget.text_lr, budget, budget.text_steps)
    n = len(texts)
    per_epoch = n // budget.batch_size
    if per_epoch == 0:
        raise ConfigError(f"unimodal batch_size {budget.batch_size} exceeds the {n} texts of the corpus")
    g = torch.Generator().manual_seed(seed)
    t0, loss = time.perf_counter(), torch.tensor(float("nan"))
    model.train()
    for step in range(budget.text_steps):
        epoch, k = divmod(step, per_epoch)
        idx = torch.from_numpy(_epoch_order(n, seed, epoch)[k * budget.batch_size:(k + 1) * budget.batch_size])
        batch = tokenizer([texts[i] for i in idx.tolist()], config.max_length).trimmed()
        m = mask_tokens(batch.input_ids, vocab_size=tokenizer.vocab_size, mask_id=tokenizer.mask_id,
                        never_mask=(tokenizer.pad_id, tokenizer.cls_id), probability=budget.mlm_probability,
                        generator=g)
        loss = model(input_ids=m.input_ids, attention_mask=batch.attention_mask, labels=m.labels).loss
        _step(loss, model, opt, sched, budget.grad_clip_norm)
        if (step + 1) % _log_every(budget.text_steps) == 0:
            log(f"  text step {step + 1}/{budget.text_steps}  masked-LM loss {loss.item():.3f}")
    model.eval()
    acc = _mlm_accuracy(model, tokenizer, corpus.heldout, config.max_length, budget.mlm_probability, seed + 1)
    record = {"objective": "masked-LM (15 %, 80/10/10)", "layers": shape.num_hidden_layers,
              "steps": budget.text_steps, "batch_size": budget.batch_size, "lr": budget.text_lr,
              "final_loss": float(loss.detach()), "heldout_masked_top1": acc, "heldout_n": len(corpus.heldout),
              "train_texts": n, "wall_s": time.perf_counter() - t0, "data": corpus.source}
    return model, record


def ensure_unimodal(request: UnimodalRequest, tokenizer: TextTokenizer, dataset_fingerprint: str,
                    images: Callable[[], LabelledImages], texts: Callable[[], TextCorpus], cache_root: Path,
                    log: Callable[[str], None] = print) -> UnimodalWeights:
    """The stage's weights for `request`: from the cache, or trained now and cached atomically."""
    fp = request.fingerprint(tokenizer, dataset_fingerprint)

    def build(tmp: Path) -> dict[str, Any]:
        record: dict[str, Any] = {"stage": "unimodal-init", "seed": request.seed, "stage_version": STAGE_VERSION}
        if request.vision is not None:
            if request.preprocess is None:
                raise ValueError("a vision request needs the method's preprocessing config")
            log(f"unimodal init: vision, {request.budget.vision_steps} steps of main-object classification")
            state, record["vision"] = train_vision(request.vision, request.preprocess, images(), request.budget,
                                                   request.seed, log)
            from safetensors.torch import save_file
            save_file(state, str(tmp / VISION_FILE))
        if request.text is not None:
            log(f"unimodal init: text, {request.budget.text_steps} steps of masked-LM")
            bert, record["text"] = train_text(request.text, tokenizer, texts(), request.budget, request.seed, log)
            with quiet_hf_loading():  # no 'Writing model shards' bar in the harness log
                bert.save_pretrained(str(tmp / TEXT_DIR), safe_serialization=True)
            tokenizer.save(tmp / TEXT_DIR)
        return record

    target, record, reused = cached_stage(cache_root, "unimodal", fp, RECORD_FILE, build)
    if reused:
        log(f"unimodal init reused from {target}")
    return UnimodalWeights(target, record)
