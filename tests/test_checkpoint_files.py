"""methods/checkpoints/files.py: each checkpoint format read back bit for bit, and no pickled code ever runs."""

from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vlpbench.methods.checkpoints.files import (CheckpointWarning, UnsafeCheckpointError, detect_format, read_checkpoint,
                                       read_state_dict)
from vlpbench.methods.towers import WeightsError


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so that equality is bit for bit (-0.0, NaN payloads, fp16 rounding)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same_state(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], ordered: bool = True) -> None:
    assert list(got) == list(want) if ordered else sorted(got) == sorted(want)
    for key, expected in want.items():
        assert got[key].dtype == expected.dtype and got[key].shape == expected.shape, key
        assert torch.equal(_bits(got[key]), _bits(expected)), key


def _randomize(module: nn.Module) -> nn.Module:
    """Every parameter distinct from its initializer's constant, so a swapped or zeroed tensor fails."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return module


def _jit_save(module: torch.jit.ScriptModule, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # torch.jit.* is deprecated in favour of torch.export
        torch.jit.save(module, str(path))
    return path


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(module)


# --- TorchScript ---------------------------------------------------------------------------------------------------


def _tiny_open_clip() -> nn.Module:
    import open_clip

    torch.manual_seed(0)
    model = open_clip.model.CLIP(
        embed_dim=16,
        vision_cfg=open_clip.model.CLIPVisionCfg(image_size=32, patch_size=16, width=32, layers=2, head_width=16),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1))
    return _randomize(model).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_torchscript_open_clip_model_reads_like_its_state_dict(tmp_path: Path, dtype: torch.dtype) -> None:
    model = _tiny_open_clip().to(dtype)
    scripted = _script(model)
    path = _jit_save(scripted, tmp_path / "ViT-tiny.pt")
    assert detect_format(path) == "torchscript"
    got = read_state_dict(path)
    # what the archive holds: torch.jit.load(path).state_dict(), names, order and bits
    assert_same_state(got, scripted.state_dict())
    assert "visual.conv1.weight" in got and "transformer.resblocks.0.attn.in_proj_weight" in got
    assert got["visual.conv1.weight"].dtype == dtype
    # the eager model's state dict, plus its persistent=False buffer: TorchScript does not record persistence
    assert [n for n, _ in model.named_buffers()] == ["attn_mask"] and "attn_mask" not in model.state_dict()
    assert_same_state({k: v for k, v in got.items() if k != "attn_mask"}, model.state_dict())
    assert torch.equal(_bits(got["attn_mask"]), _bits(model.attn_mask))


class _Block(nn.Module):
    """openai/CLIP clip/model.py ResidualAttentionBlock, small: attn_mask is a plain tensor attribute there."""

    def __init__(self, width: int, heads: int, attn_mask: torch.Tensor) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 2)), ("gelu", nn.GELU()),
                                              ("c_proj", nn.Linear(width * 2, width, bias=False))]))
        self.ln_2 = nn.LayerNorm(width)
        self.attn_mask = attn_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class _TinyVisual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        width, tokens = 16, 5   # 8x8 image, 4x4 patches, + class token
        self.conv1 = nn.Conv2d(3, width, kernel_size=4, stride=4, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        mask = torch.full((tokens, tokens), float("-inf")).triu(1)
        self.resblocks = nn.ModuleList([_Block(width, 2, mask) for _ in range(2)])
        self.proj = nn.Parameter(torch.zeros(width, 8))
        self.register_buffer("input_resolution", torch.tensor(8))
        self.register_buffer("seen", torch.tensor([True, False]))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv1(image).flatten(2).permute(2, 0, 1)
        x = torch.cat([self.class_embedding.expand(1, x.shape[1], -1), x]) + self.positional_embedding.unsqueeze(1)
        x = self.ln_pre(x)
        for block in self.resblocks:
            x = block(x)
        return x[0] @ self.proj


def test_torchscript_scripted_mixed_precision_and_attribute_tensors(tmp_path: Path) -> None:
    model = _randomize(_TinyVisual()).eval()
    model.conv1.half()   # openai/CLIP convert_weights: conv/linear/attention in fp16, LayerNorm kept in fp32
    for block in model.resblocks:
        block.attn.half()
        block.mlp.half()
    path = _jit_save(_script(model), tmp_path / "mixed.pt")
    checkpoint = read_checkpoint(path)
    assert checkpoint.format == "torchscript"
    assert_same_state(checkpoint.tensors, model.state_dict())
    assert checkpoint.tensors["resblocks.0.mlp.c_fc.weight"].dtype == torch.float16
    assert checkpoint.tensors["resblocks.0.ln_1.weight"].dtype == torch.float32
    assert "resblocks.0.mlp.c_proj.bias" not in checkpoint.tensors   # bias=False: a None parameter
    assert sorted(checkpoint.dropped) == ["resblocks.0.attn_mask", "resblocks.1.attn_mask"]
    with pytest.warns(CheckpointWarning, match="resblocks.0.attn_mask"):
        read_state_dict(path)


def test_torchscript_traced_module(tmp_path: Path) -> None:
    """OpenAI traced their released models (torch.jit.trace), which stores modules the same way."""
    model = _randomize(_TinyVisual()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.randn(2, 3, 8, 8))
    path = _jit_save(traced, tmp_path / "traced.pt")
    assert_same_state(read_state_dict(path), model.state_dict())


# --- Paddle .pdparams ------------------------------------------------------------------------------------------------


def _paddle_like_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "linear_0.w_0": rng.standard_normal((4, 3)).astype(np.float32),
        "linear_0.b_0": rng.standard_normal(3).astype(np.float16),
        "embedding_0.w_0": np.asfortranarray(rng.standard_normal((5, 2))),
        "big_endian": rng.integers(-9, 9, (2, 3)).astype(">i4"),
        "position_ids": np.arange(6, dtype=np.int64).reshape(2, 3),
        "mask": np.array([True, False, True]),
        "scale": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), np.float32),
        "bf16_bits": np.array([0x3F80, 0xBF80], dtype=np.uint16),   # how NumPy holds Paddle's bfloat16
    }


def assert_same_arrays(got: dict[str, torch.Tensor], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for key, array in want.items():
        native = np.array(array, dtype=array.dtype.newbyteorder("="), order="C")   # keeps 0-d arrays 0-d
        assert_same_state({key: got[key]}, {key: torch.from_numpy(native)})


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pdparams_round_trip(tmp_path: Path, protocol: int) -> None:
    state = _paddle_like_state()
    saved: dict[str, Any] = dict(state)
    # paddle.save adds this table (PaddlePaddle/Paddle python/paddle/framework/io.py, _build_saved_state_dict)
    saved["StructuredToParameterName@@"] = {k: f"param_{i}" for i, k in enumerate(state)}
    path = tmp_path / "model.pdparams"
    path.write_bytes(pickle.dumps(saved, protocol=protocol))
    assert detect_format(path) == "pdparams"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CheckpointWarning)
        checkpoint = read_checkpoint(path)
        assert_same_arrays(read_state_dict(path), state)
    assert checkpoint.dropped == {} and any("StructuredToParameterName@@" in n for n in checkpoint.notes)


def test_pdparams_big_parameter_slices_are_joined(tmp_path: Path) -> None:
    """paddle.save with protocol 2/3 splits arrays over 2**30 bytes (python/paddle/static/io_utils.py,
    _unpack_saved_dict); the same layout at a tiny size."""
    weight = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    flat, step = weight.flatten(), 8
    slices = {f"w@@.{i}": flat[i * step:(i + 1) * step] for i in range(-(-flat.size // step))}
    bias = np.arange(5, dtype=np.float32)
    saved = {"b": bias, **slices, "UnpackBigParamInfor@@": {"w": {"OriginShape": weight.shape,
                                                                  "slices": list(slices)}}}
    path = tmp_path / "big.pdparams"
    path.write_bytes(pickle.dumps(saved, protocol=2))
    got = read_state_dict(path)
    assert sorted(got) == ["b", "w"]
    assert_same_arrays({"w": got["w"], "b": got["b"]}, {"w": weight, "b": bias})


class _PaddleTensor:
    """How paddle.save pickles a Tensor inside a nested object: tuple((name, ndarray)) (framework/io.py)."""

    def __init__(self, name: str, data: np.ndarray) -> None:
        self.name, self.data = name, data

    def __reduce__(self) -> tuple[Any, ...]:
        return (tuple, ((self.name, self.data),))


def test_pdparams_nested_save_and_non_array_entries(tmp_path: Path) -> None:
    weight = np.ones((2, 2), np.float32)
    path = tmp_path / "ckpt.pdparams"
    path.write_bytes(pickle.dumps({"model": {"w": _PaddleTensor("linear_0.w_0", weight), "step": np.int64(7)},
                                   "epoch": 3}, protocol=4))
    with pytest.warns(CheckpointWarning, match="step"):
        got = read_state_dict(path)
    assert_same_arrays(got, {"w": weight})
    checkpoint = read_checkpoint(path)
    assert list(checkpoint.dropped) == ["step"] and any("epoch" in n for n in checkpoint.notes)


# --- safety -----------------------------------------------------------------------------------------------------------


class _RunsCode:
    """A pickle payload: unpickling calls `func(arg)`."""

    def __init__(self, func: Callable[..., Any], arg: Any) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, (self.arg,))


PAYLOADS = {
    "os.system": lambda marker: _RunsCode(os.system, f"touch {marker}"),
    "builtins.eval": lambda marker: _RunsCode(eval, f"open({str(marker)!r}, 'w').close()"),
    "subprocess.Popen": lambda marker: _RunsCode(subprocess.Popen, ["touch", str(marker)]),
}
# the global as the pickle names it: os.system is posix.system; protocol 2 writes builtins as __builtin__
GLOBAL_NAMES = {"os.system": rf"{os.system.__module__}\.system", "builtins.eval": r"(builtins|__builtin__)\.eval",
                "subprocess.Popen": r"subprocess\.Popen"}


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_code_in_a_pdparams_pickle_is_refused(tmp_path: Path, payload: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps({"w": np.zeros(2, np.float32), "x": PAYLOADS[payload](marker)}, protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=GLOBAL_NAMES[payload]) as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_the_payloads_are_live(tmp_path: Path) -> None:
    """Control: the standard unpickler does run them, so the refusals above are real."""
    for payload in ("os.system", "builtins.eval"):
        marker = tmp_path / f"control-{payload}"
        pickle.loads(pickle.dumps(PAYLOADS[payload](marker), protocol=2))
        assert marker.exists()


def _replace_record(archive: Path, suffix: str, data: bytes, out: Path) -> Path:
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename.endswith(suffix) else src.read(info.filename))
    return out


def test_code_in_a_torchscript_data_pkl_is_refused(tmp_path: Path) -> None:
    good = _jit_save(_script(_randomize(_TinyVisual())), tmp_path / "good.pt")
    marker = tmp_path / "pwned"
    for payload in ("os.system", "builtins.eval"):
        evil = _replace_record(good, "/data.pkl", pickle.dumps(PAYLOADS[payload](marker), protocol=2),
                               tmp_path / "evil.pt")
        assert detect_format(evil) == "torchscript"
        with pytest.raises(UnsafeCheckpointError, match=GLOBAL_NAMES[payload]) as err:
            read_state_dict(evil)
        assert str(evil) in str(err.value) and "data.pkl" in str(err.value)
        assert not marker.exists()
    # the same payload as an attribute of a module object, among the real tensors
    real = zipfile.ZipFile(good).read("good/data.pkl")
    root_build = [pos for op, _, pos in pickletools.genops(real) if op.name == "BUILD"][-1]
    inject = b"X\x04\x00\x00\x00evil" + pickle.dumps(PAYLOADS["os.system"](marker), protocol=2)[2:-1] + b"s"
    nested = real[:root_build] + inject + real[root_build:]   # root attributes["evil"] = payload, then BUILD
    with pytest.raises(UnsafeCheckpointError, match="system"):
        read_state_dict(_replace_record(good, "/data.pkl", nested, tmp_path / "nested.pt"))
    assert not marker.exists()


def test_code_in_a_torch_save_file_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": PAYLOADS["os.system"](marker)}, path)
    with pytest.raises(WeightsError, match="weights_only") as err:
        read_state_dict(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("blob, refused", [
    (b"\x80\x02cnumpy\nndarray\n)R.", "REDUCE"),        # calling an allow-listed global that is not a callable
    (b"\x80\x02cnumpy\nndarray\n)\x81.", "NEWOBJ"),     # instantiating anything but a TorchScript stub
    (b"\x80\x02\x82\x01.", "EXT1"),                      # the copyreg extension registry
    (b"\x80\x02]K\x01b.", "BUILD"),                      # __setstate__ on a plain object
    (b"\x80\x02cbuiltins\ngetattr\n.", "builtins.getattr"),
])
def test_restricted_opcodes(tmp_path: Path, blob: bytes, refused: str) -> None:
    path = tmp_path / "crafted.pdparams"
    path.write_bytes(blob)
    with pytest.raises(UnsafeCheckpointError, match=refused):
        read_state_dict(path)


def test_a_pickled_torch_tensor_is_not_a_pdparams_file(tmp_path: Path) -> None:
    path = tmp_path / "tensors.pkl"
    path.write_bytes(pickle.dumps({"w": torch.ones(2)}, protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"torch\."):
        read_state_dict(path)


# --- torch state dicts, safetensors, garbage ------------------------------------------------------------------------


def _state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return {"visual.conv1.weight": torch.randn(4, 3, 2, 2, generator=gen),
            "ln.weight": torch.randn(4, generator=gen).half(),
            "position_ids": torch.arange(4), "flags": torch.tensor([True, False])}


def test_safetensors_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file(_state(), str(path))
    assert detect_format(path) == "safetensors"
    assert_same_state(read_state_dict(path), _state(), ordered=False)   # safetensors does not keep the order


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_state_dict_round_trip(tmp_path: Path, legacy: bool) -> None:
    path = tmp_path / "model.pt"
    torch.save(_state(), path, _use_new_zipfile_serialization=not legacy)
    assert detect_format(path) == ("torch-legacy" if legacy else "torch-zip")
    assert_same_state(read_state_dict(path), _state())


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_state_dict(tmp_path: Path, wrapper: str) -> None:
    path = tmp_path / "ckpt.pth"
    torch.save({wrapper: _state(), "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    checkpoint = read_checkpoint(path)
    assert_same_state(checkpoint.tensors, _state())
    assert checkpoint.dropped == {} and any(wrapper in n and "epoch, optimizer" in n for n in checkpoint.notes)


def test_module_prefix_is_stripped_only_when_every_key_has_it(tmp_path: Path) -> None:
    path = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _state().items()}}, path)
    assert_same_state(read_state_dict(path), _state())
    mixed = {"module.a": torch.ones(1), "b": torch.zeros(1)}   # open_clip would strip 7 chars off "b" too
    torch.save(mixed, path)
    assert_same_state(read_state_dict(path), mixed)


def test_non_tensor_entries_are_named_not_silently_dropped(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pt"
    torch.save({"w": torch.ones(2), "step": 3, "config": {"width": 4}}, path)
    with pytest.warns(CheckpointWarning, match="config") as record:
        got = read_state_dict(path)
    assert list(got) == ["w"] and "step" in str(record[0].message)
    assert set(read_checkpoint(path).dropped) == {"step", "config"}


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(3).bytes(256))
    with pytest.raises(WeightsError, match="garbage.pt"):
        read_state_dict(garbage)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="fake.safetensors"):
        read_state_dict(fake)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(WeightsError, match="other.zip.*not a torch archive"):
        read_state_dict(other_zip)
    truncated = tmp_path / "truncated.pdparams"
    truncated.write_bytes(pickle.dumps(_paddle_like_state(), protocol=4)[:100])
    with pytest.raises(WeightsError, match="truncated.pdparams"):
        read_state_dict(truncated)
    with pytest.raises(WeightsError, match="missing.pt.*does not exist"):
        read_state_dict(tmp_path / "missing.pt")
