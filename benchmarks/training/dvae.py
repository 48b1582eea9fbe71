"""Train a small discrete VAE on a dataset's images: the visual tokenizer of masked image modelling.

COTS (like BEiT) predicts the discrete tokens a frozen dVAE gives each patch of the unmasked
image; the papers use DALL-E's released tokenizer, which cannot be downloaded here. For `tiny`
this stage trains one of the same layout (methods/visual_tokenizer.py) on the pretraining split,
DALL-E's recipe in miniature: a gumbel-softmax relaxation of the code logits whose temperature is
annealed from `tau_start` to `tau_end`, a KL term towards the uniform prior over codes whose
weight ramps up to `kl_weight`, and a reconstruction loss (squared error here; DALL-E uses a
logit-Laplace likelihood). The record keeps held-out (val) reconstruction error with hard tokens
and how many codes the held-out images use (perplexity): a collapsed codebook would make CMVM
trivial, and the record shows it.

Output: `encoder.safetensors` (DALL-E key names, what `visual_tokenizer.weights` takes) and
`decoder.safetensors`, cached under `dvae/<fingerprint>` (tokenizer shape, input resolution,
crop, budget, seed, dataset, stage version), written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from vlpbench.benchmarks.data.types import ArrayImages
from vlpbench.benchmarks.training.batches import sample_seeds
from vlpbench.benchmarks.training.schedule import warmup_cosine, warmup_steps_for
from vlpbench.benchmarks.training.stage_cache import cached_stage
from vlpbench.methods.config import ConfigError, StrictModel, sha256_json
from vlpbench.methods.preprocess import ImagePreprocess, ImagePreprocessConfig
from vlpbench.methods.visual_tokenizer import DVAEDecoder, DVAEEncoder, VisualTokenizerConfig, map_pixels

STAGE_VERSION = "1"
ENCODER_FILE = "encoder.safetensors"
DECODER_FILE = "decoder.safetensors"
RECORD_FILE = "dvae.json"


class DVAEBudget(StrictModel):
    steps: int = Field(300, gt=0)
    batch_size: int = Field(64, gt=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, le=1)
    tau_start: float = Field(1.0, gt=0, description="Gumbel-softmax temperature at step 0 (DALL-E: 1).")
    tau_end: float = Field(1 / 16, gt=0, description="...annealed (cosine) to this (DALL-E: 1/16).")
    kl_weight: float = Field(0.01, ge=0, description="Weight of KL(q || uniform) per token, ramped linearly "
                                                    "over the first half (DALL-E: 0 -> 6.6 on its scale).")


@dataclass(frozen=True)
class DVAERequest:
    tokenizer: VisualTokenizerConfig
    grid: int                       # tokens per side (= the ViT's patch grid)
    crop: ImagePreprocessConfig     # the method's train crop, at the tokenizer's input resolution
    budget: DVAEBudget
    seed: int

    def fingerprint(self, dataset_fingerprint: str) -> str:
        keyed = {"version": STAGE_VERSION, "seed": self.seed, "grid": self.grid,
                 "tokenizer": self.tokenizer.model_dump(mode="json", exclude={"weights"}),
                 "crop": self.crop.model_dump(mode="json"), "budget": self.budget.model_dump(mode="json"),
                 "dataset": dataset_fingerprint}
        return sha256_json(keyed)


@dataclass(frozen=True)
class DVAEWeights:
    directory: Path
    record: dict[str, Any]

    @property
    def encoder(self) -> Path:
        return self.directory / ENCODER_FILE


def tokenizer_crop(preprocess: ImagePreprocessConfig, resolution: int) -> ImagePreprocessConfig:
    """The method's crop at the tokenizer's resolution, without normalisation (pixels in [0, 1])."""
    return preprocess.model_copy(update={"resolution": resolution, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(softmax(logits) ‖ uniform) over the code axis (dim 1)."""
    logq = F.log_softmax(logits, dim=1)
    return ((logq.exp() * logq).sum(dim=1) + math.log(logits.shape[1])).mean()


def _evaluate(encoder: DVAEEncoder, decoder: DVAEDecoder, images: ArrayImages, prep: ImagePreprocess,
              vocab: int, limit: int = 1000) -> dict[str, float]:
    counts = torch.zeros(vocab)
    sq, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, min(len(images), limit), 250):
            idx = np.arange(start, min(start + 250, len(images), limit))
            x = prep.eval(images.get(idx))
            codes = encoder(map_pixels(x)).argmax(dim=1)
            counts += torch.bincount(codes.flatten(), minlength=vocab).float()
            recon = decoder(F.one_hot(codes, vocab).permute(0, 3, 1, 2).float())
            sq += float(((recon - map_pixels(x)) ** 2).sum())
            n += x.numel()
    p = counts / counts.sum()
    entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {"heldout_mse": sq / max(n, 1), "heldout_codes_used": int((counts > 0).sum()),
            "heldout_perplexity": math.exp(entropy), "heldout_n": int(min(len(images), limit))}


def train_dvae(request: DVAERequest, images: ArrayImages, heldout: ArrayImages,
               log: Callable[[str], None] = print) -> tuple[DVAEEncoder, DVAEDecoder, dict[str, Any]]:
    cfg, budget, seed = request.tokenizer, request.budget, request.seed
    torch.manual_seed(seed)
    encoder, decoder = DVAEEncoder(cfg), DVAEDecoder(cfg)
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay)
    warm = warmup_steps_for(budget.steps, budget.warmup_fraction, None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, budget.steps, warm, 0.0))
    prep = ImagePreprocess(request.crop)
    per_epoch = len(images) // budget.batch_size
    if per_epoch == 0:
        raise ConfigError(f"dvae batch_size {budget.batch_size} exceeds the {len(images)} images")
    t0 = time.perf_counter()
    rec = kl = torch.tensor(float("nan"))
    for step in range(budget.steps):
        frac = step / max(budget.steps - 1, 1)
        tau = budget.tau_end + 0.5 * (budget.tau_start - budget.tau_end) * (1 + math.cos(math.pi * frac))
        beta = budget.kl_weight * min(1.0, 2 * frac)
        epoch, k = divmod(step, per_epoch)
        idx = np.random.default_rng([seed, epoch, 11]).permutation(len(images))[
            k * budget.batch_size:(k + 1) * budget.batch_size]
        x = map_pixels(prep.train(images.get(idx), sample_seeds(seed, epoch, idx, stream=5)))
        logits = encoder(x)
        z = F.gumbel_softmax(logits, tau=tau, dim=1)
        rec = F.mse_loss(decoder(z), x)
        kl = kl_to_uniform(logits)
        loss = rec + beta * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % max(1, budget.steps // 5) == 0:
            log(f"  dvae step {step + 1}/{budget.steps}  recon {rec.item():.4f}  kl {kl.item():.3f}  tau {tau:.3f}")
    encoder.eval()
    decoder.eval()
    record = {"objective": "dVAE: gumbel-softmax codes, squared-error reconstruction, KL to uniform prior",
              "steps": budget.steps, "batch_size": budget.batch_size, "vocab_size": cfg.vocab_size,
              "grid": request.grid, "input_resolution": request.crop.resolution,
              "final_recon_mse": float(rec.detach()), "final_kl": float(kl.detach()),
              **_evaluate(encoder, decoder, heldout, prep, cfg.vocab_size), "wall_s": time.perf_counter() - t0}
    return encoder, decoder, record


def ensure_dvae(request: DVAERequest, dataset_fingerprint: str, images: Callable[[], ArrayImages],
                heldout: Callable[[], ArrayImages], data_source: dict[str, Any], cache_root: Path,
                log: Callable[[str], None] = print) -> DVAEWeights:
    """The tokenizer for `request`: from the cache, or trained now and cached atomically."""
    from safetensors.torch import save_file

    fp = request.fingerprint(dataset_fingerprint)

    def build(tmp: Path) -> dict[str, Any]:
        log(f"visual tokenizer: training a dVAE ({request.tokenizer.vocab_size} codes, {request.grid}x{request.grid} "
            f"tokens at {request.crop.resolution} px) for {request.budget.steps} steps")
        encoder, decoder, trained = train_dvae(request, images(), heldout(), log)
        save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(tmp / ENCODER_FILE))
        save_file({k: v.contiguous() for k, v in decoder.state_dict().items()}, str(tmp / DECODER_FILE))
        return {"stage": "visual-tokenizer", "seed": request.seed, "stage_version": STAGE_VERSION,
                "data": data_source, **trained}

    target, record, reused = cached_stage(cache_root, "dvae", fp, RECORD_FILE, build)
    if reused:
        log(f"visual tokenizer reused from {target}")
        return DVAEWeights(target, record)
    log(f"visual tokenizer: held-out MSE {record['heldout_mse']:.4f}, {record['heldout_codes_used']} codes used "
        f"(perplexity {record['heldout_perplexity']:.1f})")
    return DVAEWeights(target, record)
