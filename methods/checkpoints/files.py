"""Released checkpoint files -> flat ``{name: tensor}`` state dicts, without ever executing pickled code.

Formats (`detect_format` tells them apart by content, not by suffix):

    safetensors   a ``.safetensors`` file (safetensors.torch.load_file)
    torch-zip     a ``torch.save`` zip archive, read with ``torch.load(weights_only=True)``
    torch-legacy  a pre-1.6 ``torch.save`` pickle (starts with torch's magic number), same reader
    torchscript   a ``torch.jit.save`` archive such as OpenAI's released CLIP ``ViT-B-32.pt``
    pdparams      a plain pickle of NumPy arrays, as ``paddle.save`` writes ``.pdparams`` files

The last two are pickles that ``torch.load(weights_only=True)`` cannot or will not read, and loading them the
way their own frameworks do (``torch.jit.load``, ``pickle.load``) imports and runs whatever the file names. Both
go through `RestrictedUnpickler`: a small pickle machine of our own that interprets the opcodes itself, resolves
every global the file names against an explicit allow-list of our own functions and inert markers, and refuses
everything else -- an unknown global, a REDUCE/NEWOBJ/BUILD on anything but those, and the opcodes that reach
code by other roads (INST, OBJ, EXT*, NEWOBJ_EX, out-of-band buffers) -- with `UnsafeCheckpointError`.

Torch state dicts are unwrapped from a top-level ``state_dict`` or ``model`` entry, and a ``module.`` prefix
(DataParallel/DDP) is stripped only when every key has it; open_clip's ``load_state_dict`` (mlfoundations/open_clip
src/open_clip/factory.py) looks at the first key only. Entries that are not tensors are never dropped silently:
`Checkpoint.dropped` names them, and `read_state_dict` warns with `CheckpointWarning`.
"""

from __future__ import annotations

import _compat_pickle   # protocol 2's Python 2 names (pickle.py fix_imports), for messages
import ast
import math
import pickletools
import re
import struct
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vlpbench.methods.towers import WeightsError

FORMATS = ("safetensors", "torch-zip", "torch-legacy", "torchscript", "pdparams")

# Legacy (non-zip) torch.save files start with PROTO 2 and this LONG1 (pytorch/pytorch torch/serialization.py,
# MAGIC_NUMBER).
_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_FIX = ("if you trust the file, load it once with its own framework in a throwaway environment and re-save the "
        "weights with safetensors.torch.save_file")


class UnsafeCheckpointError(WeightsError):
    """The file asks the unpickler to import or call something outside the allow-list."""


class CheckpointWarning(UserWarning):
    """Entries of a checkpoint that are not tensors and were left out of the state dict."""


class _Refused(Exception):
    """Raised inside the pickle machine; `RestrictedUnpickler.load` adds the file name (-> UnsafeCheckpointError)."""


@dataclass
class Checkpoint:
    path: Path
    format: str
    tensors: dict[str, torch.Tensor]
    dropped: dict[str, str] = field(default_factory=dict)   # entry -> what it was / why it is not in `tensors`
    notes: list[str] = field(default_factory=list)          # what was unwrapped, stripped or skipped on purpose


# ----------------------------------------------------------------------------------------------------------------
# The restricted pickle machine


@dataclass(frozen=True)
class _Callable:
    """An allow-listed global that REDUCE may call: one of our functions, never the object the file named."""
    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class _Marker:
    """An allow-listed global that may only be passed around (numpy.ndarray as _reconstruct's argument)."""
    name: str


@dataclass(frozen=True)
class _StorageType:
    """torch.FloatStorage & co. in a TorchScript data.pkl: only the dtype of a persistent storage id."""
    name: str
    dtype: torch.dtype


@dataclass(frozen=True)
class _ScriptClass:
    """A ``__torch__.*`` class of a TorchScript archive; NEWOBJ on it makes a `ScriptObjectStub`."""
    qualname: str


class ScriptObjectStub:
    """Inert stand-in for a TorchScript object: its class name and the state data.pkl gives it (for modules,
    a dict attribute -> value in slot order). It has no methods that the pickle could reach."""

    __slots__ = ("qualname", "state")

    def __init__(self, qualname: str) -> None:
        self.qualname = qualname
        self.state: Any = None

    def _build(self, state: Any) -> None:
        if self.state is not None:
            raise _Refused(f"a second BUILD on the {self.qualname} object")
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.qualname} stub>"


@dataclass
class _Storage:
    """A storage record of a TorchScript archive, read as a flat tensor of its dtype."""
    flat: torch.Tensor


class _DtypeStub:
    """numpy.dtype(spec, align, copy) plus its BUILD (byte order); structured and object dtypes are refused."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype

    def _build(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) < 5:
            raise ValueError(f"unexpected numpy dtype state {state!r}")
        if any(part is not None for part in state[2:5]):
            raise _Refused("a structured numpy dtype (subarray or fields); only plain numeric arrays are read")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


class _ArrayStub:
    """A NumPy array under construction: _reconstruct makes it, BUILD fills it (shape, dtype, order, bytes).
    NumPy's own ``ndarray.__setstate__`` is never called; the bytes are viewed with np.frombuffer."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None = None) -> None:
        self.array = array

    def _build(self, state: Any) -> None:
        if self.array is not None or not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError(f"unexpected numpy array state of type {type(state).__name__}")
        shape, dtype, fortran, raw = state[-4:]
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran else "C")


def _dtype_of(value: Any) -> np.dtype:
    if not isinstance(value, _DtypeStub):
        raise ValueError(f"expected a numpy dtype, got {type(value).__name__}")
    return value.dtype


def _array_from_bytes(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    dt = _dtype_of(dtype)
    if isinstance(raw, str):   # protocol 2 from Python 2, read with encoding="latin1" (as paddle.load does)
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise _Refused(f"numpy array data of type {type(raw).__name__} (object arrays are not read)")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape) or order not in "CF":
        raise ValueError(f"bad numpy array shape {shape!r} / order {order!r}")
    count = math.prod(shape)
    if len(raw) != count * dt.itemsize:
        raise ValueError(f"numpy array of shape {shape} and dtype {dt} needs {count * dt.itemsize} bytes, "
                         f"the pickle has {len(raw)}")
    if count == 0:
        return np.zeros(shape, dtype=dt)
    return np.frombuffer(raw, dtype=dt, count=count).reshape(shape, order=order)   # type: ignore[call-overload]


def _np_dtype(spec: Any, align: Any = False, copy: Any = True) -> _DtypeStub:
    if not isinstance(spec, str) or not re.fullmatch(r"[<>|=]?[biufc]\d+", spec):
        raise _Refused(f"numpy dtype {spec!r}: only bool, integer, float and complex arrays are read")
    return _DtypeStub(np.dtype(spec))


def _np_reconstruct(cls: Any, shape: Any, code: Any) -> _ArrayStub:
    if cls is not _NDARRAY:
        raise _Refused(f"numpy _reconstruct of {cls!r}; only numpy.ndarray is read")
    return _ArrayStub()


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> _ArrayStub:
    return _ArrayStub(_array_from_bytes(buf, dtype, shape, order))


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    dt = _dtype_of(dtype)
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise _Refused(f"numpy scalar data of type {type(data).__name__}")
    return np.frombuffer(data, dtype=dt, count=1)[0]


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    """_codecs.encode as protocol 2 uses it for bytes objects; any other use is refused."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _ordered_dict(items: Any = ()) -> OrderedDict[Any, Any]:
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (list, tuple)) and len(i) == 2 for i in items):
        raise _Refused("collections.OrderedDict with arguments other than a list of pairs")
    return OrderedDict((k, v) for k, v in items)


def _tuple(items: Any = ()) -> tuple[Any, ...]:
    if not isinstance(items, (list, tuple)):
        raise _Refused(f"builtins.tuple of a {type(items).__name__}")
    return tuple(items)


def _empty_bytes(*args: Any) -> bytes:
    """Protocol 2 writes b"" as bytes() (pickle.py save_bytes); anything else is refused."""
    if args:
        raise _Refused(f"builtins.bytes with arguments {args!r}")
    return b""


def _plain_list(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError(f"torch.jit._pickle.build_*list of a {type(data).__name__}")
    return data


def _restore_type_tag(value: Any, type_str: Any = None) -> Any:
    return value


def _device(spec: Any, index: Any = None) -> str:
    if not isinstance(spec, str):
        raise ValueError(f"torch.device({spec!r})")
    return spec if index is None else f"{spec}:{index}"


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """torch._utils._rebuild_tensor_v2 (pytorch/pytorch torch/_utils.py), on a storage we read ourselves."""
    if not isinstance(storage, _Storage):
        raise _Refused(f"a tensor rebuilt from a {type(storage).__name__}, not from an archive storage record")
    dims = (size, stride)
    if not isinstance(offset, int) or not all(isinstance(d, tuple) and all(isinstance(i, int) for i in d)
                                              for d in dims) or len(size) != len(stride):
        raise ValueError(f"bad tensor geometry offset={offset!r} size={size!r} stride={stride!r}")
    if math.prod(size) > 0:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if offset < 0 or min(stride, default=0) < 0 or last >= storage.flat.numel():
            raise ValueError(f"tensor of size {size} and stride {stride} at offset {offset} runs past its storage "
                             f"of {storage.flat.numel()} elements")
    return storage.flat.as_strided(size, stride, offset)


_NDARRAY = _Marker("numpy.ndarray")
_NUMPY_GLOBALS: dict[tuple[str, str], object] = {
    **{(mod, "_reconstruct"): _Callable(f"{mod}._reconstruct", _np_reconstruct)
       for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "scalar"): _Callable(f"{mod}.scalar", _np_scalar)
       for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "_frombuffer"): _Callable(f"{mod}._frombuffer", _np_frombuffer)
       for mod in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Callable("numpy.dtype", _np_dtype),
    ("collections", "OrderedDict"): _Callable("collections.OrderedDict", _ordered_dict),
    ("_codecs", "encode"): _Callable("_codecs.encode", _latin1),
    # paddle.save of a nested object pickles each Tensor as tuple((name, ndarray)) (paddle/framework/io.py);
    # protocol 2 names builtins "__builtin__" (pickle.py fix_imports)
    **{(mod, "tuple"): _Callable(f"{mod}.tuple", _tuple) for mod in ("builtins", "__builtin__")},
    **{(mod, "bytes"): _Callable(f"{mod}.bytes", _empty_bytes) for mod in ("builtins", "__builtin__")},
}
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
}
_TORCHSCRIPT_GLOBALS: dict[tuple[str, str], object] = {
    ("torch._utils", "_rebuild_tensor_v2"): _Callable("torch._utils._rebuild_tensor_v2", _rebuild_tensor),
    ("collections", "OrderedDict"): _Callable("collections.OrderedDict", _ordered_dict),
    ("torch", "device"): _Callable("torch.device", _device),
    ("torch.jit._pickle", "restore_type_tag"): _Callable("torch.jit._pickle.restore_type_tag", _restore_type_tag),
    **{("torch.jit._pickle", f"build_{kind}list"): _Callable(f"torch.jit._pickle.build_{kind}list", _plain_list)
       for kind in ("int", "double", "bool", "tensor")},
    **{("torch", name): _StorageType(f"torch.{name}", dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


def _numpy_global(module: str, name: str) -> object | None:
    return _NUMPY_GLOBALS.get((module, name))


def _torchscript_global(module: str, name: str) -> object | None:
    if module == "__torch__" or module.startswith("__torch__."):
        return _ScriptClass(f"{module}.{name}")
    return _TORCHSCRIPT_GLOBALS.get((module, name))


_OPNAMES = {op.code.encode("latin1")[0]: op.name for op in pickletools.opcodes}
_CODE_PATHS = {"INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEWOBJ_EX", "NEXT_BUFFER", "READONLY_BUFFER", "PERSID"}


class RestrictedUnpickler:
    """Reads one pickle from `file` with our own opcode loop (protocols 2-5 and the text opcodes torch's C++
    pickler uses). `resolve(module, name)` maps each global the file names to an allow-listed object or None
    (-> refused); REDUCE calls only `_Callable`s, NEWOBJ builds only `ScriptObjectStub`s, BUILD fills only our
    stubs, APPEND/SETITEM(S)/ADDITEMS touch only real lists, dicts and sets. `persistent_load` answers BINPERSID
    (TorchScript storages); without it a persistent id is refused. Errors name `source`."""

    def __init__(self, file: BinaryIO, source: str, resolve: Callable[[str, str], object | None],
                 persistent_load: Callable[[Any], Any] | None = None, allowed: str = "") -> None:
        self._read = file.read
        self._readline = file.readline
        self._source = source
        self._resolve = resolve
        self._persistent_load = persistent_load
        self._allowed = allowed
        self._stack: list[Any] = []
        self._marks: list[list[Any]] = []
        self._memo: dict[int, Any] = {}
        handlers: dict[str, Callable[[], object]] = {
            "PROTO": self._proto, "FRAME": lambda: self._exact(8), "MARK": self._mark, "POP": self._pop,
            "POP_MARK": self._pop_mark, "DUP": lambda: self._stack.append(self._stack[-1]),
            "NONE": lambda: self._stack.append(None), "NEWTRUE": lambda: self._stack.append(True),
            "NEWFALSE": lambda: self._stack.append(False), "INT": self._int, "LONG": self._long,
            "BININT": lambda: self._stack.append(self._unpack("<i", 4)),
            "BININT1": lambda: self._stack.append(self._exact(1)[0]),
            "BININT2": lambda: self._stack.append(self._unpack("<H", 2)),
            "LONG1": lambda: self._stack.append(int.from_bytes(self._exact(self._exact(1)[0]), "little", signed=True)),
            "LONG4": lambda: self._stack.append(int.from_bytes(self._exact(self._size("<i", 4)), "little",
                                                               signed=True)),
            "FLOAT": lambda: self._stack.append(float(self._readline())),
            "BINFLOAT": lambda: self._stack.append(self._unpack(">d", 8)),
            "BINSTRING": lambda: self._stack.append(self._exact(self._size("<i", 4)).decode("latin1")),
            "SHORT_BINSTRING": lambda: self._stack.append(self._exact(self._exact(1)[0]).decode("latin1")),
            "BINBYTES": lambda: self._stack.append(self._exact(self._size("<I", 4))),
            "SHORT_BINBYTES": lambda: self._stack.append(self._exact(self._exact(1)[0])),
            "BINBYTES8": lambda: self._stack.append(self._exact(self._size("<Q", 8))),
            "BYTEARRAY8": lambda: self._stack.append(bytearray(self._exact(self._size("<Q", 8)))),
            "UNICODE": lambda: self._stack.append(self._readline()[:-1].decode("raw-unicode-escape")),
            "BINUNICODE": lambda: self._stack.append(self._text(self._size("<I", 4))),
            "SHORT_BINUNICODE": lambda: self._stack.append(self._text(self._exact(1)[0])),
            "BINUNICODE8": lambda: self._stack.append(self._text(self._size("<Q", 8))),
            "EMPTY_TUPLE": lambda: self._stack.append(()), "TUPLE": lambda: self._push(tuple(self._pop_mark())),
            "TUPLE1": lambda: self._tuple_n(1), "TUPLE2": lambda: self._tuple_n(2), "TUPLE3": lambda: self._tuple_n(3),
            "EMPTY_LIST": lambda: self._stack.append([]), "LIST": lambda: self._push(self._pop_mark()),
            "APPEND": self._append, "APPENDS": self._appends,
            "EMPTY_DICT": lambda: self._stack.append({}), "DICT": self._dict, "SETITEM": self._setitem,
            "SETITEMS": self._setitems, "EMPTY_SET": lambda: self._stack.append(set()), "ADDITEMS": self._additems,
            "FROZENSET": lambda: self._push(frozenset(self._pop_mark())),
            "GLOBAL": self._global_text, "STACK_GLOBAL": self._stack_global, "REDUCE": self._reduce,
            "NEWOBJ": self._newobj, "BUILD": self._build, "BINPERSID": self._binpersid,
            "PUT": lambda: self._put(int(self._readline())), "BINPUT": lambda: self._put(self._exact(1)[0]),
            "LONG_BINPUT": lambda: self._put(self._unpack("<I", 4)), "MEMOIZE": lambda: self._put(len(self._memo)),
            "GET": lambda: self._stack.append(self._memo[int(self._readline())]),
            "BINGET": lambda: self._stack.append(self._memo[self._exact(1)[0]]),
            "LONG_BINGET": lambda: self._stack.append(self._memo[self._unpack("<I", 4)]),
        }
        by_name = {name: code for code, name in _OPNAMES.items()}
        self._handlers = {by_name[name]: fn for name, fn in handlers.items()}

    def load(self) -> Any:
        try:
            return self._run()
        except WeightsError:
            raise
        except _Refused as e:
            allowed = f" This reader admits {self._allowed}." if self._allowed else ""
            raise UnsafeCheckpointError(f"{self._source}: refused {e}; reading it could import or run code.{allowed} "
                                        f"Fix: {_FIX}") from None
        except (IndexError, KeyError, TypeError, ValueError, AttributeError, struct.error, EOFError, RecursionError,
                MemoryError, OverflowError, zipfile.BadZipFile) as e:
            raise WeightsError(f"{self._source} is not a pickle this reader understands "
                               f"({type(e).__name__}: {e}); is the file truncated or of another format?") from e

    def _run(self) -> Any:
        while True:
            op = self._read(1)
            if not op:
                raise EOFError("the pickle ends before its STOP opcode")
            code = op[0]
            handler = self._handlers.get(code)
            if handler is None:
                name = _OPNAMES.get(code)
                if name == "STOP":
                    if self._marks or len(self._stack) != 1:
                        raise ValueError("STOP with an unbalanced stack")
                    return self._stack.pop()
                if name in _CODE_PATHS:
                    raise _Refused(f"the pickle opcode {name}, which reaches code outside the allow-list")
                raise ValueError(f"opcode {name or hex(code)} is not supported")
            handler()

    # -- reading arguments
    def _exact(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) != n:
            raise EOFError(f"the pickle ends inside an argument ({len(data)} of {n} bytes)")
        return data

    def _unpack(self, fmt: str, n: int) -> Any:
        return struct.unpack(fmt, self._exact(n))[0]

    def _size(self, fmt: str, n: int) -> int:
        size = int(self._unpack(fmt, n))
        if size < 0:
            raise ValueError(f"negative length {size}")
        return size

    def _text(self, n: int) -> str:
        return self._exact(n).decode("utf-8", "surrogatepass")

    # -- stack, marks and memo
    def _proto(self) -> None:
        if self._exact(1)[0] > 5:
            raise ValueError("pickle protocol above 5")

    def _push(self, value: Any) -> None:
        """After the argument is evaluated: `self._stack.append(self._pop_mark())` would push onto the old list."""
        self._stack.append(value)

    def _mark(self) -> None:
        self._marks.append(self._stack)
        self._stack = []

    def _pop_mark(self) -> list[Any]:
        items = self._stack
        self._stack = self._marks.pop()
        return items

    def _pop(self) -> None:
        if self._stack:
            self._stack.pop()
        else:
            self._pop_mark()

    def _put(self, index: int) -> None:
        self._memo[index] = self._stack[-1]

    def _tuple_n(self, n: int) -> None:
        items = tuple(self._stack[-n:])
        if len(items) != n:
            raise IndexError("stack underflow")
        del self._stack[-n:]
        self._stack.append(items)

    def _int(self) -> None:
        line = self._readline()
        self._stack.append(line == b"01\n" if line in (b"00\n", b"01\n") else int(line))

    def _long(self) -> None:
        self._stack.append(int(self._readline().rstrip(b"L\n")))

    # -- containers: only real lists, dicts and sets are ever mutated
    def _target(self, kind: type | tuple[type, ...]) -> Any:
        target = self._stack[-1]
        if not isinstance(target, kind):
            raise _Refused(f"a container update on a {type(target).__name__}")
        return target

    def _append(self) -> None:
        value = self._stack.pop()
        self._target(list).append(value)

    def _appends(self) -> None:
        items = self._pop_mark()
        self._target(list).extend(items)

    def _dict(self) -> None:
        items = self._pop_mark()
        self._stack.append(dict(zip(items[::2], items[1::2])))

    def _setitem(self) -> None:
        value = self._stack.pop()
        key = self._stack.pop()
        self._target(dict)[key] = value

    def _setitems(self) -> None:
        items = self._pop_mark()
        target = self._target(dict)
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def _additems(self) -> None:
        items = self._pop_mark()
        self._target(set).update(items)

    # -- the opcodes that name or call things
    def _global(self, module: str, name: str) -> None:
        found = self._resolve(module, name)
        if found is None:
            py3 = _compat_pickle.NAME_MAPPING.get((module, name), (_compat_pickle.IMPORT_MAPPING.get(module), name))
            alias = f" ({py3[0]}.{py3[1]} in Python 3)" if py3[0] and py3 != (module, name) else ""
            raise _Refused(f"the pickled global {module}.{name}{alias}")
        self._stack.append(found)

    def _global_text(self) -> None:
        module = self._readline()[:-1].decode("utf-8")
        self._global(module, self._readline()[:-1].decode("utf-8"))

    def _stack_global(self) -> None:
        name = self._stack.pop()
        module = self._stack.pop()
        if not isinstance(module, str) or not isinstance(name, str):
            raise ValueError("STACK_GLOBAL on non-strings")
        self._global(module, name)

    def _reduce(self) -> None:
        args = self._stack.pop()
        func = self._stack[-1]
        if not isinstance(func, _Callable):
            raise _Refused(f"a REDUCE call of {func!r}, which is not an allow-listed callable")
        if not isinstance(args, tuple):
            raise ValueError("REDUCE arguments are not a tuple")
        self._stack[-1] = func.fn(*args)

    def _newobj(self) -> None:
        args = self._stack.pop()
        cls = self._stack.pop()
        if not isinstance(cls, _ScriptClass):
            raise _Refused(f"NEWOBJ of {cls!r}; only TorchScript classes become (inert) objects")
        if args != ():
            raise ValueError(f"NEWOBJ of {cls.qualname} with arguments")
        self._stack.append(ScriptObjectStub(cls.qualname))

    def _build(self) -> None:
        state = self._stack.pop()
        target = self._stack[-1]
        if not isinstance(target, (ScriptObjectStub, _DtypeStub, _ArrayStub)):
            raise _Refused(f"BUILD (__setstate__) on a {type(target).__name__}")
        target._build(state)

    def _binpersid(self) -> None:
        pid = self._stack.pop()
        if self._persistent_load is None:
            raise _Refused("a persistent id in a plain pickle")
        self._stack.append(self._persistent_load(pid))


# ----------------------------------------------------------------------------------------------------------------
# Formats


def detect_format(path: Path | str) -> str:
    """One of FORMATS, from the file's content; a WeightsError naming the file for anything else."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    with path.open("rb") as f:
        head = f.read(16)
    size = path.stat().st_size
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                root = _archive_root(zf, path)
                names = set(zf.namelist())
        except zipfile.BadZipFile as e:
            raise WeightsError(f"{path} is a damaged zip archive ({e}); download it again") from e
        if f"{root}/constants.pkl" in names or any(n.startswith(f"{root}/code/") for n in names):
            return "torchscript"
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8:
        return "safetensors"
    if head.startswith(_TORCH_LEGACY_HEAD):
        return "torch-legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pdparams"
    raise WeightsError(f"{path} is not a checkpoint this harness reads (first bytes {head[:8]!r}); expected "
                       "safetensors, a torch.save file, a TorchScript archive or a pickle of numpy arrays "
                       "(.pdparams) -- convert it to .safetensors")


def read_checkpoint(path: Path | str) -> Checkpoint:
    """The file's tensors under state-dict names, with what was dropped and why (see the module docstring)."""
    path = Path(path)
    fmt = detect_format(path)
    notes: list[str] = []
    dropped: dict[str, str] = {}
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path} looks like safetensors but cannot be read ({e}); re-export it") from e
    elif fmt in ("torch-zip", "torch-legacy"):
        state = _torch_load(path)
    elif fmt == "torchscript":
        try:
            tensors, dropped, notes = _read_torchscript(path)
        except zipfile.BadZipFile as e:
            raise WeightsError(f"{path} is a damaged TorchScript archive ({e}); download it again") from e
        return Checkpoint(path, fmt, tensors, dropped, notes)
    else:
        state = _read_pdparams(path, notes)
    tensors = _flat_tensors(state, path, dropped, notes)
    return Checkpoint(path, fmt, tensors, dropped, notes)


def read_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """`read_checkpoint(path).tensors`; a CheckpointWarning names any entries that were left out."""
    checkpoint = read_checkpoint(path)
    if checkpoint.dropped:
        names = sorted(checkpoint.dropped)
        shown = ", ".join(f"{k} ({checkpoint.dropped[k]})" for k in names[:8])
        more = f" (+{len(names) - 8} more)" if len(names) > 8 else ""
        warnings.warn(f"{path}: left out {len(names)} entries that are not state-dict tensors: {shown}{more}",
                      CheckpointWarning, stacklevel=2)
    return checkpoint.tensors


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError or others; never retry without weights_only
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: torch.load(weights_only=True) refused or failed: {first}. The file holds "
                           f"objects beyond tensors and plain containers, or is damaged; {_FIX}") from e


def _flat_tensors(state: Any, path: Path, dropped: dict[str, str], notes: list[str]) -> dict[str, torch.Tensor]:
    """Unwrap {'state_dict': ...} / {'model': ...}, keep tensor entries, name the rest, strip an all-keys module."""
    while isinstance(state, Mapping):
        for key in ("state_dict", "model"):
            inner = state.get(key)
            if isinstance(inner, Mapping):
                others = sorted(str(k) for k in state if k != key)
                notes.append(f"took the top-level '{key}' entry" +
                             (f"; the other top-level entries are not weights: {', '.join(others)}" if others else ""))
                state = inner
                break
        else:
            break
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state dict (name -> tensor); "
                           "save model.state_dict() instead")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            tensors[key] = value.detach() if isinstance(value, torch.nn.Parameter) else value
        else:
            dropped[str(key)] = _describe(value) if isinstance(key, str) else f"key of type {type(key).__name__}"
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        notes.append("stripped the 'module.' prefix that every key had (DataParallel/DDP)")
    return tensors


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a nested {type(value).__name__} of {len(value)} entries"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}" + (f" = {value!r}" if isinstance(value, (int, float, str, bool)) else "")


# -- Paddle


def _read_pdparams(path: Path, notes: list[str]) -> Any:
    """A pickle of numpy arrays as paddle.save writes it (PaddlePaddle/Paddle python/paddle/framework/io.py:
    `_legacy_save` for a state dict, `_pickle_save` for nested objects). Protocols 2 and 3 split arrays over 2**30
    bytes into ``name@@.0``, ``name@@.1``, ... with an ``UnpackBigParamInfor@@`` table (python/paddle/static/
    io_utils.py `_unpack_saved_dict`); they are joined back here as `_pack_loaded_dict` does. The
    ``StructuredToParameterName@@`` table (structured name -> Paddle parameter name) is not a weight and is
    dropped. NumPy has no bfloat16: Paddle's bfloat16 parameters arrive as uint16 and are kept as such."""
    allowed = "numpy arrays of numeric dtypes, numpy scalars, dicts, lists, tuples and OrderedDicts"
    with path.open("rb") as f:
        obj = RestrictedUnpickler(f, str(path), _numpy_global, allowed=allowed).load()
    if isinstance(obj, dict) and "UnpackBigParamInfor@@" in obj:
        obj = _join_big_params(obj, path)
        notes.append("joined arrays that paddle.save had split into 2**30-byte slices (UnpackBigParamInfor@@)")
    if isinstance(obj, dict) and "StructuredToParameterName@@" in obj:
        del obj["StructuredToParameterName@@"]
        notes.append("dropped Paddle's StructuredToParameterName@@ name table (not a weight)")
    return _arrays_to_tensors(obj, path)


def _join_big_params(obj: dict[Any, Any], path: Path) -> dict[Any, Any]:
    info = obj.pop("UnpackBigParamInfor@@")
    if not isinstance(info, dict):
        raise WeightsError(f"{path}: UnpackBigParamInfor@@ is a {type(info).__name__}, not a dict")
    for key, meta in info.items():
        try:
            parts = [obj.pop(name) for name in meta["slices"]]
            arrays = [p.array for p in parts if isinstance(p, _ArrayStub) and p.array is not None]
            if len(arrays) != len(parts) or any(a.ndim != 1 for a in arrays):
                raise ValueError("a slice is not a flat numpy array")
            obj[key] = _ArrayStub(np.concatenate(arrays).reshape(tuple(meta["OriginShape"])))
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{path}: cannot join the slices of {key!r} listed in UnpackBigParamInfor@@ "
                               f"({type(e).__name__}: {e}); the file is damaged") from e
    return obj


def _arrays_to_tensors(obj: Any, path: Path, depth: int = 0) -> Any:
    if depth > 64:
        raise WeightsError(f"{path}: containers nested more than 64 deep; not a checkpoint")
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise WeightsError(f"{path}: a numpy array without data (no BUILD after _reconstruct)")
        array = obj.array
        try:
            return torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="), order="C", copy=True))
        except TypeError as e:
            raise WeightsError(f"{path}: numpy dtype {array.dtype} has no torch equivalent ({e})") from e
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], _ArrayStub):
        return _arrays_to_tensors(obj[1], path, depth)   # paddle 2.1+ nested save: Tensor -> (name, ndarray)
    if isinstance(obj, dict):
        return type(obj)((k, _arrays_to_tensors(v, path, depth + 1)) for k, v in obj.items())
    if isinstance(obj, list):
        return [_arrays_to_tensors(v, path, depth + 1) for v in obj]
    return obj


# -- TorchScript


@dataclass(frozen=True)
class _ClassInfo:
    is_module: bool
    parameters: tuple[str, ...]
    buffers: tuple[str, ...]


_CLASS_RE = re.compile(r"^class\s+(\w+)\s*\(\s*([\w.]*)\s*\)\s*:")
_SLOTS_RE = re.compile(r"^\s+(__parameters__|__buffers__)\s*=\s*(\[.*\])\s*$")


def _parse_classes(source: str) -> dict[str, _ClassInfo]:
    """Class headers and their ``__parameters__``/``__buffers__`` lists from a code/ file, read as text (never
    run): python_print writes them and torch.jit.load reads them back (pytorch/pytorch
    torch/csrc/jit/serialization/import_source.cpp) to tell parameters and buffers from other attributes."""
    found: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in source.splitlines():
        header = _CLASS_RE.match(line)
        if header:
            current = found.setdefault(header.group(1), {"module": header.group(2) == "Module"})
            continue
        slots = _SLOTS_RE.match(line)
        if slots and current is not None:
            names = ast.literal_eval(slots.group(2))   # a literal list of strings; never evaluated as code
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError(f"{slots.group(1)} is not a list of names")
            current[slots.group(1)] = tuple(names)
    return {name: _ClassInfo(c["module"], c.get("__parameters__", ()), c.get("__buffers__", ()))
            for name, c in found.items()}


class _ArchiveClasses:
    """`_ClassInfo` by qualified name, from ``<root>/code/<module path>.py`` (read lazily, once per file)."""

    def __init__(self, zf: zipfile.ZipFile, root: str, path: Path) -> None:
        self._zf, self._root, self._path = zf, root, path
        self._files: dict[str, dict[str, _ClassInfo]] = {}

    def get(self, qualname: str) -> _ClassInfo | None:
        module, _, name = qualname.rpartition(".")
        record = f"{self._root}/code/{module.replace('.', '/')}.py"
        if record not in self._files:
            try:
                info = self._zf.getinfo(record)
            except KeyError:
                self._files[record] = {}
                return None
            if info.file_size > 64 << 20:
                raise WeightsError(f"{self._path}: {record} is {info.file_size} bytes, too large for TorchScript code")
            try:
                self._files[record] = _parse_classes(self._zf.read(record).decode("utf-8"))
            except (ValueError, SyntaxError, UnicodeDecodeError) as e:
                raise WeightsError(f"{self._path}: cannot read the class declarations in {record} ({e})") from e
        return self._files[record].get(name)


def _archive_root(zf: zipfile.ZipFile, path: Path) -> str:
    roots = {n[: -len("/data.pkl")] for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1}
    if len(roots) != 1:
        found = "several data.pkl records" if roots else "no <name>/data.pkl record"
        raise WeightsError(f"{path} is a zip file but not a torch archive ({found}; pre-1.4 TorchScript files with "
                           "model.json are not read); re-save it with torch.save or safetensors")
    return roots.pop()


def _read_torchscript(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Parameters and buffers of a TorchScript archive, named as ``torch.jit.load(path).state_dict()`` names them.

    Layout (torch.jit.save): ``<root>/data.pkl`` pickles the module tree -- each module is NEWOBJ of its
    ``__torch__.*`` class plus BUILD with a dict of all attribute slots (parameters, buffers, submodules,
    ``training`` and other plain attributes); tensors are ``torch._utils._rebuild_tensor_v2`` over persistent
    storage ids ``('storage', torch.FloatStorage, key, location, numel)`` whose bytes are ``<root>/data/<key>``.
    ``<root>/code/`` holds the classes' TorchScript source, of which only the ``__parameters__``/``__buffers__``
    lists are read (as text). ``constants.pkl`` (tensor constants inlined in the code) and ``.debug_pkl`` files
    are not read.

    Kept: for each module, its parameters, then its buffers, then its submodules' entries, in slot order -- the
    order ``nn.Module.state_dict()`` uses. A parameter set to None (``bias=False``) is skipped. TorchScript does
    not record ``persistent=False``, so every buffer is kept (open_clip's ``attn_mask``; OpenAI's archives carry
    ``input_resolution``, ``context_length`` and ``vocab_size`` buffers, which openai/CLIP clip/model.py
    ``build_model`` deletes). Dropped with a note: tensor-valued attributes that are neither parameters nor
    buffers. Ignored: plain attributes (``training``, ints, strings) -- module configuration, not weights."""
    with zipfile.ZipFile(path) as zf:
        root = _archive_root(zf, path)
        names = set(zf.namelist())
        if f"{root}/byteorder" in names and zf.read(f"{root}/byteorder").strip() != b"little":
            raise WeightsError(f"{path} was written on a big-endian machine; re-save it on a little-endian one")
        storages: dict[str, _Storage] = {}

        def load_storage(pid: Any) -> _Storage:
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise _Refused(f"the persistent id {pid!r}; only ('storage', type, key, location, numel) is read")
            _, kind, key, _location, numel = pid
            if not isinstance(kind, _StorageType) or not isinstance(key, str) or not re.fullmatch(r"\w+", key):
                raise _Refused(f"the storage id {pid!r}")
            if not isinstance(numel, int) or numel < 0:
                raise ValueError(f"storage {key} has {numel!r} elements")
            if key not in storages:
                size = numel * torch.empty((), dtype=kind.dtype).element_size()
                record = zf.getinfo(f"{root}/data/{key}")
                if record.file_size < size:
                    raise ValueError(f"storage record {record.filename} has {record.file_size} bytes, {size} expected")
                raw = bytearray(size)
                with zf.open(record) as stream:
                    if stream.readinto(raw) != size:
                        raise EOFError(f"storage record {record.filename} ends early")
                flat = torch.frombuffer(raw, dtype=kind.dtype, count=numel) if numel else \
                    torch.empty(0, dtype=kind.dtype)
                storages[key] = _Storage(flat)
            return storages[key]

        allowed = ("TorchScript module objects (as inert stubs), tensors over the archive's storage records, "
                   "OrderedDict and torch.jit._pickle's list helpers")
        with zf.open(f"{root}/data.pkl") as f:
            tree = RestrictedUnpickler(f, f"{path} ({root}/data.pkl)", _torchscript_global, load_storage,
                                       allowed).load()
        classes = _ArchiveClasses(zf, root, path)
        root_info = classes.get(tree.qualname) if isinstance(tree, ScriptObjectStub) else None
        if root_info is None or not root_info.is_module:
            raise WeightsError(f"{path}: {root}/data.pkl does not hold a TorchScript module (found {tree!r})")
        tensors: dict[str, torch.Tensor] = {}
        dropped: dict[str, str] = {}
        _walk_module(tree, root_info, "", classes, tensors, dropped, path)
    notes = [f"TorchScript archive {root}/: parameters and buffers as torch.jit.load(...).state_dict() names them, "
             "every buffer included (TorchScript does not record persistent=False); no code was run and "
             "constants.pkl and the debug records were not read"]
    return tensors, dropped, notes


def _walk_module(obj: ScriptObjectStub, info: _ClassInfo, prefix: str, classes: _ArchiveClasses,
                 tensors: dict[str, torch.Tensor], dropped: dict[str, str], path: Path) -> None:
    if prefix.count(".") > 64:
        raise WeightsError(f"{path}: modules nested more than 64 deep ({prefix[:200]}...); not a model")
    state = obj.state
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: module {prefix or '<root>'} ({obj.qualname}) pickles a {type(state).__name__} "
                           "instead of its attributes (a custom __getstate__); its weights cannot be named")
    own = (*info.parameters, *info.buffers)
    for name in own:
        if name not in state:
            raise WeightsError(f"{path}: {obj.qualname} declares {prefix}{name} but data.pkl has no value for it")
        value = state[name]
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: {prefix}{name} of {obj.qualname} is a {type(value).__name__}, not a tensor")
        tensors[prefix + name] = value
    for name, value in state.items():
        if name in own:
            continue
        child = classes.get(value.qualname) if isinstance(value, ScriptObjectStub) else None
        if child is not None and child.is_module:
            _walk_module(value, child, f"{prefix}{name}.", classes, tensors, dropped, path)
        elif _holds_tensor(value):
            dropped[prefix + str(name)] = (f"a tensor attribute of {obj.qualname.rpartition('.')[2]} that is "
                                           "neither a parameter nor a buffer")


def _holds_tensor(value: Any, depth: int = 0) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if depth > 32:
        return False
    if isinstance(value, ScriptObjectStub):
        value = value.state
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v, depth + 1) for v in value)
    return False
