"""vlpbench-toy: an example method package from outside the vlpbench repository.

It is what a lab's own package looks like: a config class, a `VLPModel` built from vlpbench's shared pieces (the
towers of methods/towers.py, the InfoNCE of methods/losses.py), one preset named 'micro' with its recipes, a card,
and one `register_method` call at import. The distribution declares it in the entry-point group
`vlpbench.methods` (its pyproject.toml)::

    [project.entry-points."vlpbench.methods"]
    toy = "vlpbench_toy"

so `pip install vlpbench-toy` is all it takes: `import vlpbench.methods` loads it (vlpbench.methods.registry.load_plugins) and
`vlpbench list` / `vlpbench run --set methods=[toy] --set sizes=[micro]` find it. The folder
vlpbench_toy-0.1.0.dist-info beside this package is that installation's metadata, so putting tests/plugins on
sys.path (PYTHONPATH) has the same effect as installing it (tests/test_plugins.py).

The model is a two-tower contrastive model: a ViT and a BERT tower, linear projections to a shared space,
symmetric InfoNCE at a fixed temperature.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from vlpbench.methods import MethodCard, MethodSpec, PretrainBatch, StepContext, StepOutput, TokenBatch, VLPModel, register_method
from vlpbench.methods.config import StrictModel
from vlpbench.methods.losses import clip_loss, contrastive_accuracy
from vlpbench.methods.preprocess import ImagePreprocess, ImagePreprocessConfig
from vlpbench.methods.tokenizer import TextTokenizer
from vlpbench.methods.towers import TextTower, TextTowerConfig, VisionTower, VisionTowerConfig, check_tower_shapes

__version__ = "0.1.0"


class ToyConfig(StrictModel):
    vision: VisionTowerConfig
    text: TextTowerConfig
    preprocess: ImagePreprocessConfig
    embed_dim: int = Field(32, gt=0, description="Width of the shared embedding space.")
    temperature: float = Field(0.07, gt=0, description="Fixed InfoNCE temperature.")


class Toy(VLPModel):
    def __init__(self, config: ToyConfig, tokenizer: TextTokenizer) -> None:
        super().__init__(config, tokenizer, ImagePreprocess(config.preprocess))
        self.visual = VisionTower(config.vision)
        self.text = TextTower(config.text, tokenizer.vocab_size, tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id)
        self.image_proj = nn.Linear(self.visual.width, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(self.text.width, config.embed_dim, bias=False)

    @classmethod
    def from_config(cls, config: ToyConfig, tokenizer: TextTokenizer) -> "Toy":
        check_tower_shapes("toy", config.vision, config.text, config.preprocess.resolution, "bert")
        return cls(config, tokenizer)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.visual(images).pooled), dim=-1)

    def encode_text(self, text: TokenBatch) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text(text.input_ids, text.attention_mask).pooled), dim=-1)

    def contrastive_logit_scale(self) -> torch.Tensor:
        return torch.tensor(1.0 / self.config.temperature, device=self.image_proj.weight.device)  # type: ignore[attr-defined]

    def pretrain_step(self, batch: PretrainBatch, ctx: StepContext) -> StepOutput:
        loss, logits = clip_loss(self.encode_image(batch.images), self.encode_text(batch.text),
                                 self.contrastive_logit_scale())
        return StepOutput(losses={"itc": loss}, total=loss, stats={"itc_acc": contrastive_accuracy(logits.detach())})


Toy.card = MethodCard(
    name="toy",
    title="A toy two-tower contrastive model (the vlpbench plugin example)",
    citation="vlpbench tests/plugins/vlpbench_toy (an example, not a paper)",
    paper_url="",
    official_code=None,
    architecture="ViT and BERT towers, linear projections to a shared space, symmetric InfoNCE at a fixed "
                 "temperature (methods/towers.py, methods/losses.py).",
    default_protocol={"scoring": "itc", "rerank_k": None},
)

PRESETS: dict[str, dict[str, Any]] = {
    "micro": dict(vision=dict(image_size=32, patch_size=8, width=32, depth=1, heads=2),
                  text=dict(arch="bert", width=32, depth=1, heads=2, max_length=16, dropout=0.0),
                  preprocess=dict(resolution=32), embed_dim=32),
}
RECIPES: dict[str, dict[str, Any]] = {
    "micro": dict(lr=2e-3, weight_decay=0.02, grad_clip_norm=1.0, source="CPU-scale example"),
}
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    "micro": dict(lr=2e-4, weight_decay=0.02, grad_clip_norm=1.0, source="CPU-scale example"),
}

register_method(MethodSpec(name="toy", model_cls=Toy, config_cls=ToyConfig, presets=PRESETS, recipes=RECIPES,
                           finetune_recipes=FINETUNE_RECIPES, unimodal_towers={"vision": "vision", "text": "text"}))
