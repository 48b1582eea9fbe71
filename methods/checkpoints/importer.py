"""One entry point from a weights path to a ready model: `import_checkpoint(path, format, arch)`.

Formats (``auto`` tells them apart from the files):

    vlpbench    a model folder written by the harness (model_config.json + model.safetensors + tokenizer/)
    open_clip   an open_clip state dict (.pt/.bin/.safetensors); ``--arch`` names its open_clip config
    openai      OpenAI's released archive (TorchScript zip, read without executing its code); QuickGELU
    hf_clip     a transformers CLIPModel folder (config.json, weights, tokenizer files, preprocessor_config.json)
    tcl, albef  the official TCL / ALBEF checkpoints (pretraining or retrieval layout)

Every import is strict: each key of the file is mapped, checked or named as dropped (the lineage lists the
dropped ones), and each parameter of ours is filled. The tokenizer and the evaluation transform come with the
weights (the checkpoint's own), never from the harness' defaults.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlpbench.methods.checkpoints.clip import (ClipArch, arch_from_hf_config, arch_from_openai_state, check_arch,
                                      from_hf_state, from_openai_state, named_arch, open_clip_config_dir)
from vlpbench.methods.checkpoints.files import Checkpoint, read_checkpoint
from vlpbench.methods.checkpoints.files import detect_format as detect_file_format
from vlpbench.methods.config import validate
from vlpbench.methods.interface import VLPModel
from vlpbench.methods.registry import CONFIG_FILE, get_spec, load_pretrained
from vlpbench.methods.tokenizer import TextTokenizer
from vlpbench.methods.towers import WeightsError, load_weights_strict

FORMATS = ("auto", "vlpbench", "open_clip", "openai", "hf_clip", "tcl", "albef", "ernie_vil2")


@dataclass
class Imported:
    model: VLPModel
    method: str
    size: str                        # the architecture's name, e.g. "ViT-B-32-quickgelu" (a preset name for ours)
    format: str
    lineage: list[dict[str, Any]] = field(default_factory=list)


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder's files (name + content, sorted) for folders."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def detect_format(path: Path) -> str:
    """The checkpoint format of a file or folder (see the module docstring)."""
    return _detect(path)[0]


def _detect(path: Path) -> tuple[str, Checkpoint | None]:
    """(format, the file read once) — folders are not read here."""
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return "vlpbench", None
        cfg = path / "config.json"
        if cfg.is_file():
            data = json.loads(cfg.read_text())
            if "vision_config" in data and "text_config" in data:
                return "hf_clip", None
        raise WeightsError(f"{path}: neither a vlpbench model folder ({CONFIG_FILE}) nor a transformers CLIPModel "
                           "folder (config.json with vision_config and text_config); pass --format")
    if not path.is_file():
        raise WeightsError(f"weights {path} do not exist")
    if detect_file_format(path) == "pdparams":
        return "ernie_vil2", None
    ck = read_checkpoint(path)
    state = ck.tensors
    if "visual.conv1.weight" in state:
        return ("openai" if ck.format == "torchscript" else "open_clip"), ck
    if any(k.startswith("visual_encoder.") for k in state) and any(k.startswith("text_encoder.") for k in state):
        return "tcl", ck
    head = ", ".join(sorted(state)[:5])
    raise WeightsError(f"{path}: cannot tell the checkpoint's layout from its keys ({head}, ...); pass --format")


def import_checkpoint(path: Path | str, fmt: str = "auto", arch: str | None = None,
                      tokenizer: Path | str | None = None) -> Imported:
    """The model a checkpoint holds, with its tokenizer and evaluation transform, and its lineage entry."""
    path = Path(path)
    if fmt not in FORMATS:
        raise WeightsError(f"unknown checkpoint format {fmt!r}; formats: {', '.join(FORMATS)}")
    ck: Checkpoint | None = None
    if fmt == "auto":
        fmt, ck = _detect(path)
    if fmt == "vlpbench":
        model, meta = load_pretrained(path)
        return Imported(model, meta["method"], meta["size"], fmt, list(meta.get("lineage", [])))
    if fmt in ("open_clip", "openai"):
        return _import_openai_layout(path, fmt, arch, tokenizer, ck or read_checkpoint(path))
    if fmt == "hf_clip":
        return _import_hf_clip(path, arch)
    if fmt in ("tcl", "albef"):
        from vlpbench.methods.checkpoints.tcl import import_official

        model, report = import_official(path, tokenizer=Path(tokenizer) if tokenizer else None, arch=arch)
        return Imported(model, "tcl", report.get("size", "base"), fmt,
                        [_released(path, fmt, report)])
    raise WeightsError(
        "ERNIE-ViL 2.0's only released weights (PaddleNLP ernie_vil-2.0-base-zh) are Paddle files for Chinese "
        "retrieval; vlpbench reads .pdparams safely (methods/checkpoints/files.py) but has no ERNIE 3.0 text tower "
        "to load them into, so --format ernie_vil2 is not available")


def _released(path: Path, fmt: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"stage": "released", "checkpoint": path.name, "path": str(path.resolve()), "format": fmt,
            "sha256": sha256_path(path), **details}


def _clip_model(arch: ClipArch, tok: TextTokenizer, state: dict[str, Any], source: str) -> VLPModel:
    spec = get_spec("clip")
    if tok.vocab_size != arch.vocab_size:
        raise WeightsError(f"{source}: the tokenizer ({tok.source}) has {tok.vocab_size} tokens, the weights "
                           f"{arch.vocab_size}; use the checkpoint's own tokenizer")
    config = validate(spec.config_cls, arch.method_config(), where=f"{source} architecture")
    model = spec.model_cls.from_config(config, tok)  # type: ignore[attr-defined]
    load_weights_strict(model, state, source)
    return model.eval()


def _clip_tokenizer(tokenizer: Path | str | None) -> TextTokenizer:
    """CLIP's BPE with open_clip's cleaning (ids equal open_clip.tokenize), from the vocabulary open_clip ships
    unless another file (or a Hugging Face tokenizer folder) is given."""
    from vlpbench.methods.clip_tokenizer import CLIPBPETokenizer

    if tokenizer is None:
        return CLIPBPETokenizer.from_open_clip()
    t = Path(tokenizer)
    return CLIPBPETokenizer.from_hf(t) if t.is_dir() else CLIPBPETokenizer.from_open_clip(t)


def _import_openai_layout(path: Path, fmt: str, arch_name: str | None, tokenizer: Path | str | None,
                          ck: Checkpoint) -> Imported:
    state = ck.tensors
    if fmt == "openai":
        arch = arch_from_openai_state(state, "quick_gelu", name=arch_name or "openai")
        if arch_name is not None and open_clip_config_dir() is not None:   # else: the weights alone say it
            named = named_arch(arch_name)
            check_arch(named, arch, str(path))
            if named.activation != "quick_gelu":
                raise WeightsError(f"OpenAI's weights were trained with QuickGELU, but --arch {arch_name} is GELU; "
                                   f"use {arch_name}-quickgelu (github.com/mlfoundations/open_clip/issues/771)")
            arch = named
    else:
        if arch_name is None:
            raise WeightsError(f"{path}: an open_clip state dict does not say whether its towers use GELU or "
                               "QuickGELU; pass --arch with its open_clip config name, e.g. ViT-B-32 (GELU, LAION "
                               "weights) or ViT-B-32-quickgelu (OpenAI's weights, some LAION ones)")
        arch = named_arch(arch_name)
        check_arch(arch, arch_from_openai_state(state, arch.activation, vision_head_width=arch.vision_width
                                                // arch.vision_heads, text_heads=arch.text_heads), str(path))
    ours, dropped = from_openai_state(state, arch)
    tok = _clip_tokenizer(tokenizer)
    model = _clip_model(arch, tok, ours, str(path))
    return Imported(model, "clip", arch.name, fmt, [_released(path, fmt, {
        "arch": arch.to_json(), "dropped_keys": dropped + sorted(ck.dropped), "file_notes": ck.notes,
        "file_format": ck.format, "tokenizer": tok.source,
        "key_map": "OpenAI/open_clip names -> timm ViT + transformers CLIPTextModel (methods/checkpoints/clip.py)"})])


def _import_hf_clip(path: Path, arch_name: str | None) -> Imported:
    from vlpbench.methods.clip_tokenizer import CLIPBPETokenizer

    arch = arch_from_hf_config(json.loads((path / "config.json").read_text()), arch_name or path.name)
    weights = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
    if not weights:
        raise WeightsError(f"{path}: no model.safetensors or pytorch_model.bin (sharded checkpoints are not read)")
    ck = read_checkpoint(weights[0])
    ours, dropped = from_hf_state(ck.tensors)
    dropped += sorted(ck.dropped)
    proc = path / "preprocessor_config.json"
    details: dict[str, Any] = {}
    if proc.is_file():
        arch, details = _hf_preprocess(arch, json.loads(proc.read_text()), proc)
    tok = CLIPBPETokenizer.from_hf(path)
    model = _clip_model(arch, tok, ours, str(path))
    if details:
        model = _with_preprocess(model, details)
    return Imported(model, "clip", arch.name, "hf_clip", [_released(path, "hf_clip", {
        "arch": arch.to_json(), "dropped_keys": dropped, "tokenizer": tok.source, **({"preprocessor": details}
                                                                                    if details else {})})])


def _hf_preprocess(arch: ClipArch, cfg: dict[str, Any], where: Path) -> tuple[ClipArch, dict[str, Any]]:
    """The folder's own image transform (transformers CLIPImageProcessor fields), checked against what we do."""
    size = cfg.get("size", {})
    short = size.get("shortest_edge") if isinstance(size, dict) else size
    crop = cfg.get("crop_size", {})
    crop = crop.get("height") if isinstance(crop, dict) else crop
    if short is not None and crop is not None and int(short) != int(crop):
        raise WeightsError(f"{where}: resize {short} then crop {crop}; only resize = crop is supported")
    if cfg.get("resample", 3) != 3:
        raise WeightsError(f"{where}: resample {cfg.get('resample')} (only 3, bicubic, is supported)")
    if cfg.get("do_center_crop", True) is False:
        raise WeightsError(f"{where}: do_center_crop false is not supported")
    details = {"mean": tuple(cfg.get("image_mean", ())), "std": tuple(cfg.get("image_std", ())),
               "resolution": int(crop or short or arch.image_size)}
    return arch, {k: v for k, v in details.items() if v}


def _with_preprocess(model: VLPModel, details: dict[str, Any]) -> VLPModel:
    from vlpbench.methods.preprocess import ImagePreprocess

    cfg = model.preprocess.config.model_copy(update={k: details[k] for k in ("mean", "std") if k in details})
    model.preprocess = ImagePreprocess(cfg)
    model.config = model.config.model_copy(update={"preprocess": cfg})
    if "resolution" in details and details["resolution"] != cfg.resolution:
        raise WeightsError(f"the preprocessor crops to {details['resolution']} but the model's image size is "
                           f"{cfg.resolution}")
    return model
