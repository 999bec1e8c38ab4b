"""Read PyTorch checkpoint files safely, without PyTorch.

The published Efficient-3DCNNs checkpoints (``kinetics_mobilenetv2_1.0x_RGB_16_best.pth``
and friends) are ``torch.save`` files of::

    {'epoch': int, 'arch': str,
     'state_dict': OrderedDict('module.<name>' -> tensor),   # DataParallel prefix
     'optimizer': {...}, 'best_prec1': float}

:func:`load_checkpoint` turns such a file into a :class:`Checkpoint` whose ``state_dict``
maps the key names (``module.`` stripped) to contiguous numpy arrays, in file order.
Only numpy and the standard library are needed.

Formats
-------
``torch.save`` writes one of two container formats; both are read, and in both the
top-level object may be the checkpoint dict above or a bare state dict.

*Legacy* (PyTorch < 1.6, or ``_use_new_zipfile_serialization=False``), which is what the
published checkpoints use. One file holding, back to back:

1. a pickle of the magic number ``0x1950a86a20f9469cfc6c``;
2. a pickle of the protocol version (``1001``);
3. a pickle of ``sys_info`` (``little_endian``, type sizes);
4. the main pickle. Tensors in it are ``torch._utils._rebuild_tensor_v2(storage, offset,
   size, stride, requires_grad, backward_hooks[, metadata])`` (possibly wrapped by
   ``torch._utils._rebuild_parameter``); each ``storage`` is a *persistent id*, the tuple
   ``('storage', storage_type, key, location, numel, view_metadata)``, where
   ``storage_type`` is a global such as ``torch.FloatStorage`` and ``view_metadata`` is
   ``None`` or ``(view_key, offset, size)`` for an old-style storage view;
5. a pickle of the list of storage keys;
6. for each of those keys, in that order: the element count as 8-byte little-endian
   integer followed by the storage's raw bytes (``count * element_size``).

*Zip* (PyTorch >= 1.6): a zip archive (stored, not compressed) with one top folder whose
name varies (``archive/``, the file's stem, ...) holding ``data.pkl`` (the main pickle, with
persistent ids ``('storage', storage_type, key, location, numel)``), ``data/<key>`` (the raw
bytes of each storage), and optionally ``byteorder`` (``little``/``big``) and ``version``.

Storage types: Float, Double, Half, BFloat16 (returned as float32, exactly), Long, Int,
Short, Char, Byte, Bool, ComplexFloat, ComplexDouble and Untyped storages. Tensors may have
any offset and non-negative strides (views, transposes); every returned array is an
independent, contiguous, writeable copy in native byte order.

Safety model
------------
A pickle is a program: its ``GLOBAL``/``STACK_GLOBAL``/``INST``/``EXT`` opcodes import any
callable by name and ``REDUCE`` calls it, so ``pickle.load`` (and ``torch.load`` without
``weights_only=True``) on a hostile checkpoint can run arbitrary code. Here every pickle in
the file, including the small header pickles, is read by :class:`_SafeUnpickler`, whose
``find_class`` - the only way a pickle can obtain a callable - resolves names through an
explicit allow-list to *this module's own* reimplementations (nothing is ever imported):

* ``collections.OrderedDict`` (the real class: building it only stores data);
* ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` / ``_rebuild_parameter`` /
  ``_rebuild_parameter_with_state`` -> functions that only record a tensor description;
* ``torch.<Type>Storage`` -> inert, non-callable markers of the element type;
* ``torch.Size`` -> ``tuple`` of ints, ``torch.device`` -> ``str``;
* ``builtins.set``/``frozenset``; ``_codecs.encode`` (latin-1 only, how protocol-2 pickles
  spell ``bytes``); ``numpy.dtype`` and ``numpy.core.multiarray.scalar`` for numpy scalars
  (non-object dtypes only, rebuilt from their raw bytes).

Anything else (``posix.system``, ``builtins.eval``, a ``torch.nn`` module class from a
whole-model ``torch.save(model)``, TorchScript ``__torch__`` classes, ...) raises
:class:`UnsafeCheckpointError` naming the global, *before* anything is called. Persistent
ids other than storages (the legacy ``'module'`` ids of whole-model saves) are refused the
same way, and so are the ``EXT1/2/4`` opcodes (the copyreg extension registry, which the C
unpickler can resolve from a cache without calling ``find_class``); each pickle's opcodes are
scanned for them before it is loaded, with its stack simulated: containers nested deeper
than ``_MAX_NESTING`` (whose hashing would crash CPython) and a ``BUILD`` on an allowed global
(setting attributes on this module's own functions) are refused too. Tensor descriptions are
checked against their storage's bounds, at most 64 dimensions of sizes under 2**62, before
numpy touches memory, and all of a file's tensors together may take little more than its
storages hold; sizes read from the file are checked against the file's size before reading;
zip records must be stored as ``torch.save`` stores them (a compressed one could inflate to
gigabytes). Legacy storages are little-endian whatever ``sys_info`` says, as PyTorch writes
and reads them. Truncated or corrupt files raise :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import io
import lzma
import math
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from typing import Any

import numpy as np

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "SkippedTensor",
    "UnsafeCheckpointError",
    "load_checkpoint",
]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
DATA_PARALLEL_PREFIX = "module."
# The most a tensor whose strides repeat its storage's elements may expand to.
_MAX_REPEATED_BYTES = 64 * 2**20
_MAX_DIMS = 64
_MAX_INDEX = 2**62
# Containers nested deeper than this are refused before unpickling: CPython hashes a deeply
# nested tuple (a dict key, a frozenset item) recursively in C and crashes the process; a
# torch.save pickle nests a few levels.
_MAX_NESTING = 100


class CheckpointError(ValueError):
    """The file is not a readable PyTorch checkpoint (truncated, corrupt, unsupported)."""


class UnsafeCheckpointError(CheckpointError):
    """The file's pickle references something other than tensors and plain containers."""


@dataclasses.dataclass(frozen=True)
class SkippedTensor:
    """Stands in for a tensor outside the state dict that was not read (see ``load_checkpoint``)."""

    shape: tuple[int, ...]
    dtype: str


@dataclasses.dataclass
class Checkpoint:
    """The content of a PyTorch checkpoint.

    Attributes:
        state_dict: parameter and buffer name -> contiguous numpy array, in file order, with
            the DataParallel ``module.`` prefix removed when every key had it.
        arch: the ``'arch'`` entry (e.g. ``'mobilenetv2'``), ``None`` for a bare state dict.
        epoch: the ``'epoch'`` entry, ``None`` when absent.
        best_prec1: the ``'best_prec1'`` entry as a Python number, ``None`` when absent.
        format: ``'legacy'`` or ``'zip'`` for a checkpoint dict, ``'bare'`` when the file
            holds only a state dict.
        serialization: the container format, ``'legacy'`` or ``'zip'``, whatever ``format``.
        prefix_stripped: whether the ``module.`` prefix was removed from the keys.
        extra: the other top-level entries (``'optimizer'``, ...). Tensors in them are
            numpy arrays when loaded with ``load_extra_tensors=True``, else ``SkippedTensor``.
        path: the file read.
    """

    state_dict: dict[str, np.ndarray]
    arch: str | None = None
    epoch: int | None = None
    best_prec1: float | None = None
    format: str = "legacy"
    serialization: str = "legacy"
    prefix_stripped: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str | None = None

    @property
    def original_keys(self) -> list[str]:
        """The state-dict keys as written in the file (prefix restored)."""
        prefix = DATA_PARALLEL_PREFIX if self.prefix_stripped else ""
        return [prefix + key for key in self.state_dict]


# --------------------------------------------------------------------------------------
# Storage types and the objects the restricted unpickler builds
# --------------------------------------------------------------------------------------


class _StorageKind:
    """Inert, non-callable marker for a ``torch.<Type>Storage`` global."""

    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name: str, dtype: str):
        self.name = name
        self.dtype = np.dtype(dtype)  # the on-disk element type (little-endian)
        self.itemsize = self.dtype.itemsize

    def __repr__(self):
        return f"torch.{self.name}"

    def __setstate__(self, state):
        raise CheckpointError(f"unexpected pickle BUILD on {self!r}")


_STORAGE_KINDS = {
    name: _StorageKind(name, dtype)
    for name, dtype in [
        ("FloatStorage", "<f4"),
        ("DoubleStorage", "<f8"),
        ("HalfStorage", "<f2"),
        ("BFloat16Storage", "<u2"),  # widened to float32 when read
        ("LongStorage", "<i8"),
        ("IntStorage", "<i4"),
        ("ShortStorage", "<i2"),
        ("CharStorage", "i1"),
        ("ByteStorage", "u1"),
        ("BoolStorage", "u1"),  # read as bytes, compared with 0
        ("ComplexFloatStorage", "<c8"),
        ("ComplexDoubleStorage", "<c16"),
        ("UntypedStorage", "u1"),
    ]
}


def _decode_storage(raw: bytes | memoryview, kind: _StorageKind, numel: int, big_endian: bool) -> np.ndarray:
    """Raw storage bytes -> 1-D native-order numpy array of ``numel`` elements."""
    dtype = kind.dtype.newbyteorder(">") if big_endian and kind.itemsize > 1 else kind.dtype
    array = np.frombuffer(raw, dtype=dtype, count=numel)
    if kind.name == "BFloat16Storage":
        # bfloat16 is the upper half of a float32: widening is exact.
        return (array.astype(np.uint32) << 16).view(np.float32)
    if kind.name == "BoolStorage":
        return array != 0
    return array.astype(kind.dtype.newbyteorder("="), copy=False)


class _Storage:
    """A storage referenced by the pickle; ``array`` is filled in once its bytes are read."""

    __slots__ = ("kind", "key", "numel", "location", "array")

    def __init__(self, kind: _StorageKind, key: str, numel: int, location: Any):
        self.kind = kind
        self.key = key
        self.numel = numel
        self.location = location
        self.array: np.ndarray | None = None

    def root(self) -> _Storage:
        return self

    def get_array(self) -> np.ndarray:
        if self.array is None:
            raise CheckpointError(f"storage {self.key!r} was referenced but its data was never read")
        return self.array

    def __setstate__(self, state):
        raise CheckpointError("unexpected pickle BUILD on a storage")


class _StorageView:
    """Old-style (legacy format) view ``root[offset:offset + size]`` of a storage."""

    __slots__ = ("base", "offset", "numel", "kind")

    def __init__(self, base: _Storage, offset: int, numel: int):
        self.base = base
        self.offset = offset
        self.numel = numel
        self.kind = base.kind

    def root(self) -> _Storage:
        return self.base

    def get_array(self) -> np.ndarray:
        return self.base.get_array()[self.offset : self.offset + self.numel]

    def __setstate__(self, state):
        raise CheckpointError("unexpected pickle BUILD on a storage view")


class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns here: a description, materialised after reading."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        if not isinstance(storage, (_Storage, _StorageView)):
            raise CheckpointError(f"a tensor is built on {type(storage).__name__}, not on a storage")
        self.storage = storage
        self.offset = _as_index(offset, "storage offset")
        shape, stride = _as_sequence(shape, "size"), _as_sequence(stride, "stride")
        if len(shape) > _MAX_DIMS:  # before any arithmetic on them (numpy's own limit)
            raise CheckpointError(f"a tensor has {len(shape)} dimensions, more than {_MAX_DIMS}")
        self.shape = tuple(_as_index(s, "size") for s in shape)
        self.stride = tuple(_as_index(s, "stride") for s in stride)
        if len(self.shape) != len(self.stride):
            raise CheckpointError(f"a tensor has size {self.shape} but stride {self.stride}")

    @property
    def dtype(self) -> np.dtype:
        kind = self.storage.kind
        if kind.name == "BFloat16Storage":
            return np.dtype(np.float32)
        if kind.name == "BoolStorage":
            return np.dtype(bool)
        return kind.dtype.newbyteorder("=")

    def materialize(self) -> np.ndarray:
        base = self.storage.get_array()
        if any(s == 0 for s in self.shape):
            return np.zeros(self.shape, dtype=base.dtype)
        last = self.offset + sum((s - 1) * st for s, st in zip(self.shape, self.stride))
        if last >= base.shape[0]:
            raise CheckpointError(
                f"a tensor of size {self.shape}, stride {self.stride} at offset {self.offset} "
                f"reaches element {last} of a storage of {base.shape[0]} elements"
            )
        count = math.prod(self.shape)
        # Overlapping strides (an expanded tensor: stride 0) repeat a storage's elements: a
        # few bytes of file could ask for gigabytes. Allowed while it stays small.
        if count > base.shape[0] and count * base.itemsize > _MAX_REPEATED_BYTES:
            raise CheckpointError(
                f"a tensor of size {self.shape}, stride {self.stride} repeats a storage of "
                f"{base.shape[0]} elements into {count * base.itemsize / 2**20:.0f} MiB; refused "
                f"(a model's tensors hold their own data)"
            )
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.shape,
            strides=tuple(st * base.itemsize for st in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True, order="C")

    def __setstate__(self, state):
        raise CheckpointError("unexpected pickle BUILD on a tensor")


def _as_index(value, what: str) -> int:
    # bounded: products of a few thousand-bit integers made a 15 KB file take minutes
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MAX_INDEX:
        raise CheckpointError(f"invalid tensor {what}: {value!r}")
    return value


def _as_sequence(value, what: str):
    if not isinstance(value, (tuple, list)):
        raise CheckpointError(f"invalid tensor {what}: {value!r}")
    return value


# --------------------------------------------------------------------------------------
# Safe reimplementations of the allowed globals
# --------------------------------------------------------------------------------------


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise CheckpointError(f"a parameter wraps {type(data).__name__}, not a tensor")
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return _rebuild_parameter(data)


def _torch_size(dims=()):
    return tuple(_as_index(d, "size") for d in dims)


def _torch_device(kind="cpu", index=None):
    if not isinstance(kind, str) or (index is not None and not isinstance(index, int)):
        raise CheckpointError(f"invalid torch.device({kind!r}, {index!r})")
    return kind if index is None else f"{kind}:{index}"


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles spell ``bytes`` as _codecs.encode(str, 'latin1'). Other encodings
    # are refused: codec lookup by name can import modules.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "iso-8859-1") or errors != "strict":
        raise UnsafeCheckpointError(f"_codecs.encode is only allowed for latin-1 text, got encoding {encoding!r}")
    return codecs.latin_1_encode(text)[0]


class _NumpyDtype:
    """Stand-in for ``numpy.dtype`` during unpickling: plain, non-object dtypes only."""

    __slots__ = ("dtype",)

    def __init__(self, spec, align=False, copy=False):
        if not isinstance(spec, str):
            raise UnsafeCheckpointError(f"numpy.dtype({spec!r}) is not a plain dtype")
        try:
            dtype = np.dtype(spec)
        except TypeError as exc:
            raise CheckpointError(f"invalid numpy dtype {spec!r}") from exc
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise UnsafeCheckpointError(f"numpy dtype {spec!r} is not a plain numeric dtype")
        self.dtype = dtype

    def __setstate__(self, state):
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("<", ">", "=", "|"):
            raise CheckpointError(f"invalid numpy dtype state {state!r}")
        if any(part is not None for part in state[2:5]):
            raise UnsafeCheckpointError("structured numpy dtypes are not allowed")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes):
        raise UnsafeCheckpointError("numpy scalars are only allowed as a plain dtype and its bytes")
    if len(data) != dtype.dtype.itemsize:
        raise CheckpointError(f"numpy scalar of {dtype.dtype} has {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


def _build_allow_list() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch", "Size"): _torch_size,
        ("torch", "device"): _torch_device,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("__builtin__", "set"): set,
        ("__builtin__", "frozenset"): frozenset,
        ("_codecs", "encode"): _codecs_encode,
        ("numpy", "dtype"): _NumpyDtype,
        ("numpy.core.multiarray", "scalar"): _numpy_scalar,
        ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    }
    for name, kind in _STORAGE_KINDS.items():
        allowed[("torch", name)] = kind
        allowed[("torch.cuda", name)] = kind
        allowed[("torch.storage", name)] = kind
    return allowed


_ALLOWED_GLOBALS = _build_allow_list()


# Modules whose globals a pickle names to run code (a shell command, Python source, a
# module import), never to rebuild data: a file that names one is an attack, not a mistake.
_CODE_MODULES = frozenset({
    "builtins", "__builtin__", "os", "posix", "nt", "subprocess", "sys", "runpy", "importlib",
    "code", "codeop", "pty", "shutil", "socket", "ctypes", "marshal", "pickle", "_pickle",
    "types", "operator", "functools", "webbrowser", "commands", "pdb", "timeit", "platform",
    "multiprocessing", "asyncio", "io", "_io", "tempfile",
})


# builtins a pickle names to rebuild data (protocol 2 stores bytearray, slice, range,
# complex through builtins): refused as anything not allowed is, not called an attack
_BUILTIN_DATA = frozenset({"bytearray", "bytes", "slice", "range", "complex", "set", "frozenset",
                           "list", "dict", "tuple", "int", "float", "bool", "str"})


def _runs_code(module, name):
    root = str(module).split(".")[0]
    if root in ("builtins", "__builtin__"):
        return str(name) not in _BUILTIN_DATA
    return root in _CODE_MODULES


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only through ``_ALLOWED_GLOBALS``."""

    def __init__(self, file, source: str, persistent_load=None):
        super().__init__(file)
        self._source = source
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            pass
        if _runs_code(module, name):
            raise UnsafeCheckpointError(
                f"refusing to load '{self._source}': it calls {module}.{name}: the file tries "
                "to run code when loaded; do not trust it (load it with nothing else either: "
                "a checkpoint holds tensors)")
        # A class of a torch.save(model) pickle (torch.nn.Conv3d, the original's models.*):
        # an innocent mistake, and what to save instead.
        hint = (" Was it saved with torch.save(model) instead of torch.save({'state_dict': "
                "model.state_dict()})?" if str(module).startswith("torch.") or
                str(name)[:1].isupper() else "")
        raise UnsafeCheckpointError(
            f"refusing to load '{self._source}': it references {module}.{name}, which could run "
            "code; only tensors and plain containers are allowed (collections.OrderedDict, "
            f"torch storages and torch._utils tensor rebuilders).{hint}"
        )

    def persistent_load(self, pid):
        if self._persistent_load is None:
            raise CheckpointError(f"unexpected persistent id {pid!r} in '{self._source}'")
        return self._persistent_load(pid)


_EXTENSION_OPCODES = frozenset({"EXT1", "EXT2", "EXT4"})


def _safe_load(f, source: str, persistent_load=None):
    """Unpickle one pickle from ``f`` with the allow-list.

    The opcodes are scanned first: the C unpickler resolves ``EXT*`` (copyreg extension
    registry) opcodes from ``copyreg._extension_cache`` without asking ``find_class`` once a
    code has been seen in this process, so they are refused outright (torch never writes them).
    """
    start = f.tell()
    _check_opcodes(f, source)
    f.seek(start)
    return _SafeUnpickler(f, source, persistent_load).load()


_MARK = object()
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
# Opcodes that add to (or set the state of) the object below their arguments: that object
# grows deeper, wherever else it is referenced (the memo, a DUP), and stays what it was.
_FILLS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})


class _Entry:
    """An object on the simulated stack: its nesting depth and whether it is a global. One
    entry per object, shared by the memo and DUP, so that filling it later counts wherever it
    is referenced."""

    __slots__ = ("depth", "is_global")

    def __init__(self, depth=0, is_global=False):
        self.depth, self.is_global = depth, is_global


def _check_opcodes(f, source: str):
    """Scans one pickle's opcodes, simulating its stack: refuses the copyreg extension
    registry (``EXT*``: the C unpickler resolves a code seen before in this process without
    asking ``find_class``), containers nested deeper than ``_MAX_NESTING``, and a ``BUILD``
    on a global (it would set attributes on the reader's own allowed functions or classes,
    for every later load). A malformed pickle is an ``UnpicklingError``."""
    stack, memo = [], {}

    def pop():
        if not stack or stack[-1] is _MARK:
            raise pickle.UnpicklingError(f"{name} on an empty stack")
        return stack.pop()

    def pop_to_mark():
        items = []
        while stack and stack[-1] is not _MARK:
            items.append(stack.pop())
        if not stack:
            raise pickle.UnpicklingError(f"{name} without a MARK")
        stack.pop()
        return items

    for opcode, arg, _ in pickletools.genops(f):
        name = opcode.name
        if name in _EXTENSION_OPCODES:
            raise UnsafeCheckpointError(
                f"refusing to load '{source}': it uses the pickle extension registry ({name}), "
                "which can name any callable; only tensors and plain containers are allowed"
            )
        if name in _MEMO_PUT:
            if not stack or stack[-1] is _MARK:
                raise pickle.UnpicklingError(f"{name} on an empty stack")
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            continue
        if name in _MEMO_GET:
            if arg not in memo:
                raise pickle.UnpicklingError(f"{name} of {arg!r}, which nothing put")
            stack.append(memo[arg])
            continue
        if name == "DUP":
            stack.append(stack[-1] if stack else pop())
            continue
        if name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "STACK_GLOBAL":
                pop(), pop()
            stack.append(_Entry(is_global=True))
            continue
        popped = []
        for item in reversed(opcode.stack_before):
            if item is pickletools.markobject:
                popped += pop_to_mark()
            elif item is not pickletools.stackslice:
                popped.append(pop())
        if name in _FILLS:
            target = popped[-1]  # popped last: it was lowest
            if name == "BUILD" and target.is_global:
                raise UnsafeCheckpointError(
                    f"refusing to load '{source}': it sets attributes on a global (pickle "
                    "BUILD); only tensors and plain containers are allowed")
            target.depth = max([target.depth] + [e.depth + 1 for e in popped[:-1]])
            entry = target
        else:
            entry = _Entry(max(e.depth for e in popped) + 1 if popped else 0)
        if entry.depth > _MAX_NESTING:
            raise CheckpointError(
                f"'{source}' nests containers more than {_MAX_NESTING} deep; refused (a "
                "checkpoint nests a few)")
        for item in opcode.stack_after:
            stack.append(_MARK if item is pickletools.markobject else entry)


# --------------------------------------------------------------------------------------
# Container formats
# --------------------------------------------------------------------------------------


def _check_pid(pid, source: str, length: int):
    if not isinstance(pid, tuple) or not pid:
        raise CheckpointError(f"invalid persistent id {pid!r} in '{source}'")
    if pid[0] != "storage":
        raise UnsafeCheckpointError(
            f"refusing to load '{source}': it holds a persistent object of type {pid[0]!r} "
            "(whole-module pickles need their source code to load); only tensor storages are allowed"
        )
    if len(pid) != length or not isinstance(pid[1], _StorageKind) or not isinstance(pid[2], str):
        raise CheckpointError(f"invalid storage id {pid!r} in '{source}'")
    if isinstance(pid[4], bool) or not isinstance(pid[4], int) or pid[4] < 0:
        raise CheckpointError(f"invalid storage size in {pid!r} in '{source}'")


def _load_legacy(f, source: str, file_size: int):
    try:
        magic = _safe_load(f, source)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"'{source}' is not a PyTorch checkpoint: neither a zip archive nor a legacy torch "
            f"pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if magic != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(f"'{source}' is not a PyTorch checkpoint (no legacy magic number, not a zip archive)")
    version = _safe_load(f, source)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"'{source}' has unsupported legacy protocol version {version!r}")
    _safe_load(f, source)  # sys_info: PyTorch writes and reads legacy data little-endian
    # whatever it says (THPStorage_writeFileRaw, and _legacy_load never reads it)
    big_endian = False

    storages: dict[str, _Storage] = {}
    views: dict[str, _StorageView] = {}

    def persistent_load(pid):
        _check_pid(pid, source, 6)
        _, kind, key, location, numel, view_metadata = pid
        storage = storages.get(key)
        if storage is None:
            storage = storages[key] = _Storage(kind, key, numel, location)
        elif storage.kind is not kind or storage.numel != numel:
            raise CheckpointError(f"storage {key!r} of '{source}' is declared twice differently")
        if view_metadata is None:
            return storage
        if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3):
            raise CheckpointError(f"invalid storage view {view_metadata!r} in '{source}'")
        view_key, offset, view_size = view_metadata
        if view_key not in views:
            offset, view_size = _as_index(offset, "view offset"), _as_index(view_size, "view size")
            if offset + view_size > numel:
                raise CheckpointError(f"storage view {view_metadata!r} exceeds its storage in '{source}'")
            views[view_key] = _StorageView(storage, offset, view_size)
        return views[view_key]

    obj = _safe_load(f, source, persistent_load)
    keys = _safe_load(f, source)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"'{source}' has an invalid storage key list")

    def read_storages(needed: set[str]):
        for key in keys:
            storage = storages.get(key)
            if storage is None:
                raise CheckpointError(f"'{source}' holds data for storage {key!r}, which nothing references")
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"'{source}' is truncated: storage {key!r} is missing")
            (count,) = struct.unpack("<q", head)
            if count != storage.numel:
                raise CheckpointError(
                    f"'{source}' is corrupt: storage {key!r} holds {count} elements, {storage.numel} declared"
                )
            nbytes = count * storage.kind.itemsize
            if f.tell() + nbytes > file_size:
                raise CheckpointError(f"'{source}' is truncated: storage {key!r} needs {nbytes} bytes")
            if key in needed:
                raw = f.read(nbytes)
                storage.array = _decode_storage(raw, storage.kind, count, big_endian)
            else:
                f.seek(nbytes, io.SEEK_CUR)
        missing = needed.difference(keys)
        if missing:
            raise CheckpointError(f"'{source}' is corrupt: no data for storages {sorted(missing)[:5]}")

    return obj, read_storages


def _load_zip(path: str, source: str):
    zf = zipfile.ZipFile(path)
    try:
        return _read_zip(zf, source)
    except BaseException:  # the caller closes it after reading; a refusal closes it here
        zf.close()
        raise


def _read_zip(zf, source: str):
    names = zf.namelist()
    pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1 and n.rsplit("/", 1)[-1] == "data.pkl"]
    if len(pickles) != 1:
        raise CheckpointError(f"'{source}' is a zip archive but not a torch.save checkpoint (no single data.pkl)")
    prefix = pickles[0][: -len("data.pkl")]
    # torch.save stores its records uncompressed (PyTorch reads them in place): a compressed
    # or encrypted one is not its writing, and a compressed one could inflate to gigabytes.
    for info in zf.infolist():
        if info.flag_bits & 0x1 or info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"'{source}': record {info.filename!r} is "
                f"{'encrypted' if info.flag_bits & 0x1 else 'compressed'}; torch.save stores "
                "its records as they are (not a torch.save checkpoint, or one re-zipped)")
    if any(n.startswith(prefix + "code/") for n in names):
        raise CheckpointError(
            f"'{source}' is a TorchScript archive (torch.jit.save); only torch.save checkpoints are supported"
        )
    big_endian = False
    if prefix + "byteorder" in names:
        order = zf.read(prefix + "byteorder").strip()
        if order not in (b"little", b"big"):
            raise CheckpointError(f"'{source}' has an invalid byteorder record {order!r}")
        big_endian = order == b"big"

    storages: dict[tuple[str, str], _Storage] = {}

    def persistent_load(pid):
        _check_pid(pid, source, 5)
        _, kind, key, location, numel = pid
        storage = storages.get((key, kind.name))
        if storage is None:
            storage = storages[(key, kind.name)] = _Storage(kind, key, numel, location)
        return storage

    obj = _safe_load(io.BytesIO(zf.read(pickles[0])), source, persistent_load)

    def read_storages(needed: set[str]):
        for storage in storages.values():
            if storage.key not in needed:
                continue
            record = prefix + "data/" + storage.key
            try:
                info = zf.getinfo(record)
            except KeyError:
                raise CheckpointError(f"'{source}' is corrupt: record {record!r} is missing") from None
            nbytes = storage.numel * storage.kind.itemsize
            if info.file_size < nbytes:
                raise CheckpointError(
                    f"'{source}' is corrupt: record {record!r} has {info.file_size} bytes, {nbytes} needed"
                )
            with zf.open(info) as record_file:
                raw = record_file.read(nbytes)
            if len(raw) != nbytes:
                raise CheckpointError(f"'{source}' is truncated in record {record!r}")
            storage.array = _decode_storage(raw, storage.kind, storage.numel, big_endian)

    return obj, read_storages, zf


# --------------------------------------------------------------------------------------
# Interpretation of the unpickled object
# --------------------------------------------------------------------------------------


def _collect_tensors(obj, out: list, seen: set):
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, _TensorRef):
        out.append(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            _collect_tensors(value, out, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in obj:
            _collect_tensors(value, out, seen)


def _convert(obj, load_tensors: bool, memo: dict):
    """Copy ``obj`` replacing tensor descriptions by arrays (or SkippedTensor)."""
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _TensorRef):
        if not load_tensors:
            result = SkippedTensor(obj.shape, obj.dtype.name)
        else:
            key = ("view",) + _view_key(obj)
            if key not in memo:
                memo[key] = obj.materialize()
            result = memo[key]
    elif isinstance(obj, (_Storage, _StorageView)):
        result = SkippedTensor((obj.numel,), obj.kind.name)
    elif isinstance(obj, dict):
        result = type(obj)() if type(obj) in (dict, collections.OrderedDict) else {}
        memo[id(obj)] = result
        for key, value in obj.items():
            result[key] = _convert(value, load_tensors, memo)
        return result
    elif isinstance(obj, list):
        result = []
        memo[id(obj)] = result
        result.extend(_convert(value, load_tensors, memo) for value in obj)
        return result
    elif isinstance(obj, tuple):
        result = tuple(_convert(value, load_tensors, memo) for value in obj)
    elif isinstance(obj, (set, frozenset)):
        result = type(obj)(_convert(value, load_tensors, memo) for value in obj)
    else:
        result = obj
    memo[id(obj)] = result
    return result


def _scalar(value, name: str, source: str):
    if isinstance(value, _TensorRef):
        array = value.materialize()
        if array.size != 1:
            raise CheckpointError(f"'{source}': {name!r} is a tensor of shape {array.shape}, not a number")
        return array.reshape(()).item()
    return value


def _is_tensor_dict(obj) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, _TensorRef) for k, v in obj.items())
    )


def load_checkpoint(path: str | os.PathLike, *, load_extra_tensors: bool = False) -> Checkpoint:
    """Read a ``torch.save`` checkpoint without PyTorch and without running code from it.

    Args:
        path: a ``.pth``/``.pt`` file in the legacy (PyTorch < 1.6) or zip format, holding
            ``{'state_dict': ..., 'arch': ..., 'epoch': ..., ...}`` or a bare state dict.
        load_extra_tensors: also read the tensors outside the state dict (optimizer
            momentum buffers, ...) into ``Checkpoint.extra``; by default they are left out
            and stand as ``SkippedTensor(shape, dtype)``.

    Returns:
        A ``Checkpoint``.

    Raises:
        UnsafeCheckpointError: the file references a global outside the allow-list (code).
        CheckpointError: the file is missing, truncated, corrupt, or holds no state dict.
    """
    path = os.fspath(path)
    source = os.path.basename(path) or path
    try:
        with open(path, "rb") as f:
            start = f.read(4)
            file_size = os.fstat(f.fileno()).st_size
            if start == b"PK\x03\x04":
                serialization = "zip"
            else:
                serialization = "legacy"
                f.seek(0)
                obj, read_storages = _load_legacy(f, source, file_size)
                return _interpret(obj, read_storages, serialization, path, source, load_extra_tensors)
        obj, read_storages, zf = _load_zip(path, source)
        with zf:
            return _interpret(obj, read_storages, serialization, path, source, load_extra_tensors)
    except CheckpointError:
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"cannot read checkpoint '{path}': no such file") from exc
    except IsADirectoryError as exc:  # not "truncated or corrupt"
        raise CheckpointError(f"cannot read checkpoint '{path}': a folder, not a file") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        struct.error,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        RecursionError,
        UnicodeDecodeError,
        OSError,
        RuntimeError,
        NotImplementedError,
        zlib.error,
        lzma.LZMAError,
    ) as exc:
        raise CheckpointError(
            f"cannot read checkpoint '{source}': the file is truncated or corrupt "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _view_key(tensor):
    """What makes two tensor descriptions the same tensor (tied weights: one storage, one
    view, under several keys): they are read once, as one array."""
    return id(tensor.storage), tensor.offset, tensor.shape, tensor.stride


def _check_total_size(tensors, source: str):
    """Refuses tensors that would take more memory in all than their storages hold plus
    `_MAX_REPEATED_BYTES` (or twice the storages): each tensor's own cap would let a file
    of a few bytes per tensor ask for 64 MiB per tensor (repeated views, stride 0). Counted
    in the file's element sizes (bfloat16 is read as float32), each distinct view once."""
    unique = {_view_key(t): t for t in tensors}.values()
    total = sum(math.prod(t.shape) * t.storage.kind.itemsize for t in unique)
    roots = {id(t.storage.root()): t.storage.root() for t in unique}.values()
    held = sum(r.numel * r.kind.itemsize for r in roots)
    if total > held + max(_MAX_REPEATED_BYTES, held):
        raise CheckpointError(
            f"'{source}': its tensors would take {total / 2**20:.0f} MiB from storages of "
            f"{held / 2**20:.0f} MiB; refused (a model's tensors hold their own data)")


def _interpret(obj, read_storages, serialization, path, source, load_extra_tensors) -> Checkpoint:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        raw_state = obj["state_dict"]
        fields = {"arch": obj.get("arch"), "epoch": obj.get("epoch"), "best_prec1": obj.get("best_prec1")}
        extra_raw = {k: v for k, v in obj.items() if k not in ("state_dict", "arch", "epoch", "best_prec1")}
        fmt = serialization
    elif _is_tensor_dict(obj):
        raw_state, fields, extra_raw, fmt = obj, {}, {}, "bare"
    else:
        found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"'{source}' holds no state dict: expected a dict with a 'state_dict' entry or a dict of "
            f"tensors, found {found}"
        )

    not_tensors = [str(k) for k, v in raw_state.items() if not isinstance(v, _TensorRef)]
    if not_tensors:
        raise CheckpointError(f"'{source}': state-dict entries that are not tensors: {not_tensors[:10]}")
    bad_keys = [k for k in raw_state if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(f"'{source}': state-dict keys that are not strings: {bad_keys[:10]}")

    wanted: list[_TensorRef] = list(raw_state.values())
    for value in fields.values():
        if isinstance(value, _TensorRef):
            wanted.append(value)
    if load_extra_tensors:
        _collect_tensors(extra_raw, wanted, set())
    _check_total_size(wanted, source)
    read_storages({t.storage.root().key for t in wanted})

    memo: dict = {}
    state_dict = {key: _convert(value, True, memo) for key, value in raw_state.items()}
    prefix_stripped = bool(state_dict) and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state_dict)
    if prefix_stripped:
        state_dict = {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state_dict.items()}
    return Checkpoint(
        state_dict=state_dict,
        arch=_scalar(fields.get("arch"), "arch", source),
        epoch=_scalar(fields.get("epoch"), "epoch", source),
        best_prec1=_scalar(fields.get("best_prec1"), "best_prec1", source),
        format=fmt,
        serialization=serialization,
        prefix_stripped=prefix_stripped,
        extra={k: _convert(v, load_extra_tensors, memo) for k, v in extra_raw.items()},
        path=path,
    )
