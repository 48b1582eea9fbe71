"""Methods: the common interface, the registry, shared building blocks and one module per method.

Importing `methods` registers every method. This package imports nothing from `benchmarks`,
`reports` or `slurm`.
"""

from methods import clip, cots, ernie_vil2, scale, tcl  # noqa: F401  (registers each method)
from methods.card import ClaimedResult, Confidence, Deviation, MethodCard
from methods.config import ConfigError, TrainRecipe
from methods.interface import PretrainBatch, StepContext, StepOutput, VLPModel
from methods.registry import (
    SIZES,
    create_method,
    default_suite_methods,
    finetune_recipe,
    get_spec,
    list_methods,
    load_pretrained,
    method_config,
    save_pretrained,
    train_recipe,
)
from methods.tokenizer import TextTokenizer, TokenBatch

__all__ = [
    "SIZES", "ClaimedResult", "Confidence", "ConfigError", "Deviation", "MethodCard", "PretrainBatch",
    "StepContext", "StepOutput", "TextTokenizer", "TokenBatch", "TrainRecipe", "VLPModel", "create_method", "default_suite_methods",
    "finetune_recipe", "get_spec", "list_methods", "load_pretrained", "method_config", "save_pretrained", "train_recipe",
]
