"""Methods: the common interface, the registry, shared building blocks and one module per method.

Importing `methods` registers every built-in method, then the methods of installed plugins (entry-point
group `vlpbench.methods`, see methods/registry.py). This package imports nothing from `benchmarks`,
`reports` or `slurm`.
"""

from vlpbench.methods import clip, cots, ernie_vil2, scale, tcl  # noqa: F401  (registers each built-in method)
from vlpbench.methods import clip_tokenizer  # noqa: F401,I001  (registers CLIP's BPE as a tokenizer kind saved models use)
from vlpbench.methods.card import ClaimedResult, Confidence, Deviation, MethodCard
from vlpbench.methods.config import ConfigError, TrainRecipe
from vlpbench.methods.interface import AudioInput, PretrainBatch, StepContext, StepOutput, VideoInput, VLPModel
from vlpbench.methods.registry import (
    MethodSpec,
    PluginError,
    VisualTokenizerSlot,
    create_method,
    default_suite_methods,
    finetune_recipe,
    get_spec,
    image_preprocess_config,
    list_methods,
    list_presets,
    load_plugins,
    load_pretrained,
    method_config,
    register_method,
    save_pretrained,
    train_recipe,
    unimodal_towers,
    visual_tokenizer_config,
    visual_tokenizer_grid,
)
from vlpbench.methods.tokenizer import TextTokenizer, TokenBatch

__all__ = [
    "AudioInput", "ClaimedResult", "Confidence", "ConfigError", "Deviation", "MethodCard", "MethodSpec",
    "PluginError", "PretrainBatch", "StepContext", "StepOutput", "TextTokenizer", "TokenBatch", "TrainRecipe",
    "VLPModel", "VideoInput", "VisualTokenizerSlot", "create_method", "default_suite_methods", "finetune_recipe",
    "get_spec", "image_preprocess_config", "list_methods", "list_presets", "load_plugins", "load_pretrained",
    "method_config", "register_method", "save_pretrained", "train_recipe", "unimodal_towers",
    "visual_tokenizer_config", "visual_tokenizer_grid",
]

load_plugins()   # last: a plugin may import anything above from `methods`
