"""Tests for keras_efficient3d.torch_checkpoint: reading torch.save files without PyTorch.

The checkpoints of tests/fixtures/reference were written by the original implementation
(legacy format). The other fixtures are written here by hand, with a small pure-Python pickler that can emit any
global by name and persistent ids, so that no PyTorch is needed to make them either.
"""

import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from keras_efficient3d.torch_checkpoint import (
    Checkpoint,
    CheckpointError,
    SkippedTensor,
    UnsafeCheckpointError,
    load_checkpoint,
)

NAMES = ["mobilenet_0.5x", "mobilenetv2_0.2x", "shufflenet_0.5x_g3", "shufflenetv2_0.25x", "squeezenet_1.1"]
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# --------------------------------------------------------------------------------------
# A tiny torch.save imitation
# --------------------------------------------------------------------------------------


class Global:
    """Pickles as GLOBAL 'module name' (nothing is imported when writing)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # save_reduce wants a callable
        raise AssertionError("never called")


class Call:
    """Pickles as REDUCE(func, args)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Storage:
    """A storage: pickled as a persistent id, its bytes written after (legacy) or in data/<key> (zip)."""

    def __init__(self, kind, array, key):
        self.kind, self.array, self.key = kind, np.ascontiguousarray(array), key


REBUILD_TENSOR_V2 = Global("torch._utils", "_rebuild_tensor_v2")
REBUILD_PARAMETER = Global("torch._utils", "_rebuild_parameter")
ORDERED_DICT = Global("collections", "OrderedDict")


def tensor(storage, offset, size, stride, parameter=False):
    hooks = Call(ORDERED_DICT)
    t = Call(REBUILD_TENSOR_V2, storage, offset, tuple(size), tuple(stride), False, hooks)
    return Call(REBUILD_PARAMETER, t, True, Call(ORDERED_DICT)) if parameter else t


def ordered(items):
    return Call(ORDERED_DICT, [list(kv) for kv in items])


class _Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file, pid_fn):
        super().__init__(file, protocol=2)
        self._pid_fn = pid_fn

    def persistent_id(self, obj):
        return self._pid_fn(obj) if isinstance(obj, Storage) else None

    def _save_global_marker(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = _save_global_marker


def write_legacy(path, obj, storages):
    """torch.save(obj, path, _use_new_zipfile_serialization=False) for our marker objects."""
    main = io.BytesIO()
    _Pickler(main, lambda s: ("storage", Global("torch", s.kind), s.key, "cpu", s.array.size, None)).dump(obj)
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
        pickle.dump(sys_info, f, protocol=2)
        f.write(main.getvalue())
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", s.array.size))
            f.write(s.array.tobytes())


def write_zip(path, obj, storages, folder="my_checkpoint"):
    """torch.save(obj, path) (zip format) for our marker objects."""
    main = io.BytesIO()
    _Pickler(main, lambda s: ("storage", Global("torch", s.kind), s.key, "cpu", s.array.size)).dump(obj)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{folder}/data.pkl", main.getvalue())
        zf.writestr(f"{folder}/byteorder", "little")
        for s in storages:
            zf.writestr(f"{folder}/data/{s.key}", s.array.tobytes())
        zf.writestr(f"{folder}/version", "3\n")


# --------------------------------------------------------------------------------------
# The checkpoints written by the original implementation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_original_checkpoint_matches_reference_keys(reference_dir, name):
    reference = json.loads((reference_dir / "state_dict_keys" / f"{name}.keys.json").read_text())
    ckpt = load_checkpoint(reference_dir / "pytorch_checkpoints" / f"{name}.pth")

    assert isinstance(ckpt, Checkpoint)
    assert ckpt.format == "legacy" and ckpt.serialization == "legacy"
    assert ckpt.arch == reference["arch"]
    assert isinstance(ckpt.epoch, int) and ckpt.epoch >= 1
    assert isinstance(ckpt.best_prec1, float)
    assert ckpt.prefix_stripped
    assert "optimizer" in ckpt.extra

    expected = reference["state_dict"]
    assert all(k.startswith("module.") for k in expected)
    assert ckpt.original_keys == list(expected), "keys or their order differ"
    assert list(ckpt.state_dict) == [k[len("module.") :] for k in expected]
    for key, array in ckpt.state_dict.items():
        assert isinstance(array, np.ndarray)
        assert list(array.shape) == expected["module." + key], key
        assert array.flags.c_contiguous and array.flags.writeable
        if key.endswith("num_batches_tracked"):
            assert array.dtype == np.int64 and array.shape == () and array >= 0
        else:
            assert array.dtype == np.float32, key
            assert np.all(np.isfinite(array)), key
        if key.endswith("running_var"):
            # Randomised BN statistics: a variance read from the wrong bytes would not all be > 0.
            assert np.all(array > 0), key

    # The classifier maps to num_classes.
    last_weight = [v for k, v in ckpt.state_dict.items() if k.endswith("weight")][-1]
    assert last_weight.shape[0] == reference["num_classes"]


def test_original_checkpoint_optimizer_tensors_are_skipped_or_loaded(reference_dir):
    path = reference_dir / "pytorch_checkpoints" / "mobilenet_0.5x.pth"
    lazy = load_checkpoint(path)
    full = load_checkpoint(path, load_extra_tensors=True)
    lazy_buffers = [s["momentum_buffer"] for s in lazy.extra["optimizer"]["state"].values()]
    full_buffers = [s["momentum_buffer"] for s in full.extra["optimizer"]["state"].values()]
    assert lazy_buffers and all(isinstance(b, SkippedTensor) for b in lazy_buffers)
    assert all(isinstance(b, np.ndarray) for b in full_buffers)
    assert [b.shape for b in lazy_buffers] == [b.shape for b in full_buffers]
    # SGD momentum buffers have the parameters' shapes, in order.
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    params = [v for k, v in full.state_dict.items() if not k.endswith(buffers)]
    assert [b.shape for b in full_buffers] == [p.shape for p in params]
    for key in lazy.state_dict:
        np.testing.assert_array_equal(lazy.state_dict[key], full.state_dict[key])


def test_original_checkpoint_rewritten_by_hand_reads_back_identically(reference_dir, tmp_path):
    """Write the loaded tensors with our own legacy writer (shared storage, transposed views) and reread."""
    original = load_checkpoint(reference_dir / "pytorch_checkpoints" / "shufflenetv2_0.25x.pth")
    items, storages = [], []
    for i, (key, array) in enumerate(original.state_dict.items()):
        if array.ndim == 2:
            # store the transpose, describe the tensor as a strided view of it
            s = Storage("FloatStorage", array.T.copy(), str(i))
            items.append(("module." + key, tensor(s, 0, array.shape, (1, array.shape[0]))))
        else:
            kind = "LongStorage" if array.dtype == np.int64 else "FloatStorage"
            s = Storage(kind, array.reshape(-1), str(i))
            strides = np.array(array.strides) // array.itemsize
            items.append(("module." + key, tensor(s, 0, array.shape, tuple(int(x) for x in strides), parameter=True)))
        storages.append(s)
    path = tmp_path / "rewritten.pth"
    write_legacy(path, {"epoch": 7, "arch": "shufflenetv2", "state_dict": ordered(items)}, storages)
    again = load_checkpoint(path)
    assert list(again.state_dict) == list(original.state_dict)
    for key in original.state_dict:
        np.testing.assert_array_equal(again.state_dict[key], original.state_dict[key])
        assert again.state_dict[key].dtype == original.state_dict[key].dtype


# --------------------------------------------------------------------------------------
# Hand-made checkpoints: values, strides, offsets, dtypes, bare state dicts
# --------------------------------------------------------------------------------------


def _handmade(write, path):
    base = np.arange(30, dtype=np.float32) * 0.5 - 3.0
    floats = Storage("FloatStorage", base, "0")
    counter = Storage("LongStorage", np.array([123456789012], dtype=np.int64), "1")
    bf16_values = np.array([1.5, -2.0, 0.15625, 2.0**100, -0.0], dtype=np.float32)
    bf16 = Storage("BFloat16Storage", (bf16_values.view(np.uint32) >> 16).astype(np.uint16), "2")
    half = Storage("HalfStorage", np.array([0.5, -1.25, 65504.0], dtype=np.float16), "3")
    doubles = Storage("DoubleStorage", np.array([np.pi, np.e]), "4")
    bools = Storage("BoolStorage", np.array([1, 0, 1], dtype=np.uint8), "5")
    storages = [floats, counter, bf16, half, doubles, bools]
    state = ordered(
        [
            # non-contiguous (transposed) view at an offset: t[i, j] = base[2 + i + 6 j]
            ("module.conv.weight", tensor(floats, 2, (3, 4), (1, 6), parameter=True)),
            # strided 1-D view of the same storage
            ("module.bn.bias", tensor(floats, 1, (5,), (3,))),
            # broadcast (stride 0) view
            ("module.bn.running_mean", tensor(floats, 29, (2, 3), (0, 0))),
            ("module.bn.num_batches_tracked", tensor(counter, 0, (), ())),
            ("module.bf16", tensor(bf16, 0, (5,), (1,))),
            ("module.half", tensor(half, 0, (3,), (1,))),
            ("module.double", tensor(doubles, 1, (1,), (1,))),
            ("module.mask", tensor(bools, 0, (3,), (1,))),
            ("module.empty", tensor(floats, 0, (0, 4), (4, 1))),
        ]
    )
    optimizer = {
        "state": {0: {"momentum_buffer": tensor(floats, 0, (3,), (1,))}},
        "param_groups": [{"lr": 0.1, "params": [0]}],
    }
    obj = {"epoch": 3, "arch": "mobilenet", "state_dict": state, "optimizer": optimizer, "best_prec1": 12.5}
    write(path, obj, storages)
    expected = {
        "conv.weight": np.array([[base[2 + i + 6 * j] for j in range(4)] for i in range(3)], dtype=np.float32),
        "bn.bias": np.array([base[1 + 3 * i] for i in range(5)], dtype=np.float32),
        "bn.running_mean": np.full((2, 3), base[29], dtype=np.float32),
        "bn.num_batches_tracked": np.array(123456789012, dtype=np.int64),
        "bf16": bf16_values,
        "half": np.array([0.5, -1.25, 65504.0], dtype=np.float16),
        "double": np.array([np.e]),
        "mask": np.array([True, False, True]),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    return expected


@pytest.mark.parametrize("fmt, write", [("legacy", write_legacy), ("zip", write_zip)])
def test_handmade_checkpoint_round_trips_exactly(tmp_path, fmt, write):
    path = tmp_path / f"handmade_{fmt}.pth"
    expected = _handmade(write, path)
    ckpt = load_checkpoint(path)
    assert ckpt.format == fmt and ckpt.serialization == fmt
    assert (ckpt.arch, ckpt.epoch, ckpt.best_prec1) == ("mobilenet", 3, 12.5)
    assert ckpt.prefix_stripped
    assert list(ckpt.state_dict) == list(expected)
    for key, want in expected.items():
        got = ckpt.state_dict[key]
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        np.testing.assert_array_equal(got, want, err_msg=key)
        assert got.flags.c_contiguous and got.flags.writeable
    # independent copies, not views of a shared buffer
    ckpt.state_dict["conv.weight"][...] = 0
    assert np.any(ckpt.state_dict["bn.bias"] != 0)
    assert ckpt.extra["optimizer"]["param_groups"] == [{"lr": 0.1, "params": [0]}]
    assert ckpt.extra["optimizer"]["state"][0]["momentum_buffer"] == SkippedTensor((3,), "float32")


@pytest.mark.parametrize("fmt, write", [("legacy", write_legacy), ("zip", write_zip)])
def test_bare_state_dict(tmp_path, fmt, write):
    weights = Storage("FloatStorage", np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=np.float32), "w")
    state = ordered(
        [
            ("fc.weight", tensor(weights, 0, (2, 3), (3, 1), parameter=True)),
            ("fc.bias", tensor(weights, 4, (2,), (1,))),
        ]
    )
    path = tmp_path / f"bare_{fmt}.pt"
    write(path, state, [weights])
    ckpt = load_checkpoint(path)
    assert ckpt.format == "bare" and ckpt.serialization == fmt
    assert ckpt.arch is None and ckpt.epoch is None and ckpt.best_prec1 is None and ckpt.extra == {}
    assert not ckpt.prefix_stripped
    assert list(ckpt.state_dict) == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(ckpt.state_dict["fc.weight"], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(ckpt.state_dict["fc.bias"], [5, 6])


def test_zip_top_folder_name_varies(tmp_path):
    s = Storage("FloatStorage", np.array([7.0], dtype=np.float32), "0")
    path = tmp_path / "other.pth"
    write_zip(path, {"state_dict": ordered([("w", tensor(s, 0, (1,), (1,)))])}, [s], folder="archive")
    np.testing.assert_array_equal(load_checkpoint(path).state_dict["w"], [7.0])


def test_legacy_storage_views_and_big_endian(tmp_path):
    """Old-style storage views (view_metadata), and a file from a big-endian machine: its
    sys_info says so, but PyTorch writes (and reads) legacy storages little-endian whatever
    the machine (THPStorage_writeFileRaw; _legacy_load never reads sys_info)."""
    data = np.arange(10, dtype="<f4")
    main = io.BytesIO()
    view = Global("torch", "FloatStorage")
    pid = {"whole": ("storage", view, "root", "cpu", 10, None),
           "view": ("storage", view, "root", "cpu", 10, ("v", 4, 5))}
    whole_marker, view_marker = Storage("FloatStorage", data, "whole"), Storage("FloatStorage", data, "view")
    obj = ordered([("a", tensor(whole_marker, 1, (2,), (1,))), ("b", tensor(view_marker, 1, (2, 2), (2, 1)))])
    _Pickler(main, lambda s: pid[s.key]).dump(obj)
    path = tmp_path / "views.pth"
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"little_endian": False}, f, protocol=2)
        f.write(main.getvalue())
        pickle.dump(["root"], f, protocol=2)
        f.write(struct.pack("<q", 10))
        f.write(data.tobytes())
    ckpt = load_checkpoint(path)
    np.testing.assert_array_equal(ckpt.state_dict["a"], [1.0, 2.0])
    np.testing.assert_array_equal(ckpt.state_dict["b"], [[5.0, 6.0], [7.0, 8.0]])
    assert ckpt.state_dict["b"].dtype == np.float32 and ckpt.state_dict["b"].dtype.isnative


# --------------------------------------------------------------------------------------
# Safety
# --------------------------------------------------------------------------------------


class SystemCall:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class EvalCall:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


def test_malicious_legacy_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned_legacy"
    payload = SystemCall(f"touch '{marker}'")
    # Sanity: this payload really runs code under plain pickle.
    pickle.loads(pickle.dumps(payload, protocol=2))
    assert marker.exists()
    marker.unlink()

    weights = Storage("FloatStorage", np.ones(2, dtype=np.float32), "0")
    obj = {"epoch": 1, "arch": payload, "state_dict": ordered([("w", tensor(weights, 0, (2,), (1,)))])}
    path = tmp_path / "evil_legacy.pth"
    write_legacy(path, obj, [weights])
    with pytest.raises(UnsafeCheckpointError, match=r"evil_legacy\.pth.*(posix|os|nt)\.system.*tries to run code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_zip_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned_zip"
    payload = EvalCall(f"open({str(marker)!r}, 'w').close()")
    pickle.loads(pickle.dumps(payload, protocol=2))
    assert marker.exists()
    marker.unlink()

    weights = Storage("FloatStorage", np.ones(2, dtype=np.float32), "0")
    obj = {"state_dict": ordered([("w", tensor(weights, 0, (2,), (1,)))]), "best_prec1": payload}
    path = tmp_path / "evil.pth"
    write_zip(path, obj, [weights])
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*(__builtin__|builtins)\.eval"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_header_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned_header"
    path = tmp_path / "evil_header.pth"
    path.write_bytes(pickle.dumps(SystemCall(f"touch '{marker}'"), protocol=2))
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickle_extension_registry_is_refused(tmp_path):
    """EXT opcodes: once cached by copyreg, the C unpickler would resolve them without find_class."""
    import copyreg

    marker = tmp_path / "pwned_ext"
    code = 0x7FFFFFF0
    copyreg.add_extension(os.system.__module__, "system", code)
    try:
        data = pickle.dumps({"state_dict": SystemCall(f"touch '{marker}'")}, protocol=2)
        assert b"\x84" in data  # EXT4
        pickle.loads(data)  # primes copyreg._extension_cache, and shows the payload works
        assert marker.exists()
        marker.unlink()
        path = tmp_path / "ext.pth"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("ext/data.pkl", data)
        with pytest.raises(UnsafeCheckpointError, match="extension registry"):
            load_checkpoint(path)
        assert not marker.exists()
    finally:
        copyreg.remove_extension(os.system.__module__, "system", code)


def test_whole_model_pickle_is_refused(tmp_path):
    """torch.save(model) references module classes; those need code and are refused."""
    weights = Storage("FloatStorage", np.ones(2, dtype=np.float32), "0")
    module = Call(Global("torch.nn.modules.conv", "Conv3d"))
    obj = {"state_dict": ordered([("w", tensor(weights, 0, (2,), (1,)))]), "model": module}
    path = tmp_path / "model.pth"
    write_zip(path, obj, [weights])
    with pytest.raises(UnsafeCheckpointError, match="torch.nn.modules.conv.Conv3d"):
        load_checkpoint(path)


@pytest.mark.parametrize("module, name, attack", [
    ("builtins", "exec", True), ("posix", "system", True), ("builtins", "eval", True),
    ("subprocess", "Popen", True), ("os", "system", True), ("__builtin__", "getattr", True),
    ("importlib", "import_module", True),
    ("torch.nn.modules.conv", "Conv3d", False), ("models.mobilenetv2", "MobileNetV2", False),
    # data that protocol 2 stores through builtins: refused, not called an attack
    ("builtins", "bytearray", False), ("__builtin__", "slice", False),
])
def test_a_pickle_that_runs_code_is_called_an_attack_not_a_whole_model_save(tmp_path, module,
                                                                            name, attack):
    """The refusal of exec/system/eval suggested an innocent cause (torch.save(model)), which
    fits the classes of a whole-model save only."""
    weights = Storage("FloatStorage", np.ones(2, dtype=np.float32), "0")
    obj = {"state_dict": ordered([("w", tensor(weights, 0, (2,), (1,)))]),
           "model": Call(Global(module, name))}
    path = tmp_path / "file.pth"
    write_zip(path, obj, [weights])
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert f"{module}.{name}" in message
    assert ("tries to run code when loaded; do not trust it" in message) == attack
    # the whole-model hint for the classes such a save names (torch's, the original's)
    assert ("torch.save(model)" in message) == (not attack and name[:1].isupper())


def test_unsafe_error_is_a_checkpoint_error_and_value_error():
    assert issubclass(UnsafeCheckpointError, CheckpointError)
    assert issubclass(CheckpointError, ValueError)


# --------------------------------------------------------------------------------------
# Broken files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.0005, 0.002, 0.004, 0.5, 0.999])
def test_truncated_legacy_checkpoint(reference_dir, tmp_path, fraction):
    data = (reference_dir / "pytorch_checkpoints" / "mobilenetv2_0.2x.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=r"cut\.pth"):
        load_checkpoint(path)


def test_truncated_zip_checkpoint(tmp_path):
    path = tmp_path / "whole.pth"
    _handmade(write_zip, path)
    data = path.read_bytes()
    cut = tmp_path / "cut_zip.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut_zip\.pth"):
        load_checkpoint(cut)


def test_tensor_beyond_its_storage_is_corrupt(tmp_path):
    s = Storage("FloatStorage", np.zeros(4, dtype=np.float32), "0")
    path = tmp_path / "oob.pth"
    write_zip(path, {"state_dict": ordered([("w", tensor(s, 1, (2, 2), (2, 1)))])}, [s])
    with pytest.raises(CheckpointError, match="reaches element 4 of a storage of 4"):
        load_checkpoint(path)


def test_a_tensor_repeating_its_storage_into_gigabytes_is_refused(tmp_path):
    # A few hundred bytes of file, stride 0 over one element: 40 GB if materialised.
    s = Storage("FloatStorage", np.zeros(1, dtype=np.float32), "0")
    path = tmp_path / "bomb.pth"
    write_zip(path, {"state_dict": ordered([("w", tensor(s, 0, (100000, 100000), (0, 0)))])}, [s])
    assert path.stat().st_size < 2000
    with pytest.raises(CheckpointError, match=r"its tensors would take 38147 MiB from storages "
                                              r"of 0 MiB; refused"):
        load_checkpoint(path)


def test_many_tensors_repeating_one_storage_are_refused_together(tmp_path):
    """Each under the one-tensor cap (16 Mi floats, 64 MiB), eight of them 512 MiB from a
    912-byte file."""
    s = Storage("FloatStorage", np.zeros(1, dtype=np.float32), "0")
    path = tmp_path / "amp.pth"
    # eight views, not one view eight times (which is read once: tied weights)
    write_zip(path, {"state_dict": ordered([(f"w{i}", tensor(s, 0, (4096, 4096 - i), (0, 0)))
                                            for i in range(8)])}, [s])
    assert path.stat().st_size < 2000
    with pytest.raises(CheckpointError, match=r"its tensors would take 512 MiB"):
        load_checkpoint(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match=r"noise\.pth"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pth")
    # not "the file is truncated or corrupt (IsADirectoryError ...)"
    (tmp_path / "adir").mkdir()
    with pytest.raises(CheckpointError, match=r"'.*adir': a folder, not a file$"):
        load_checkpoint(tmp_path / "adir")


def test_no_state_dict(tmp_path):
    path = tmp_path / "plain.pth"
    write_zip(path, {"epoch": 1, "notes": "hello"}, [])
    with pytest.raises(CheckpointError, match=r"no state dict.*epoch.*notes"):
        load_checkpoint(path)


def _zip_with_pickle(path, body):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("d/data.pkl", b"\x80\x02" + body + pickle.STOP)
    return path


@pytest.mark.parametrize("use", ["key", "frozenset"])
def test_containers_nested_past_any_checkpoint_are_refused_before_unpickling(tmp_path, use):
    """A 200 KB tuple nested 200,000 deep, hashed as a dict key or a frozenset item, crashed
    the interpreter (CPython's tuple hash recurses in C): no error could be raised."""
    nested = pickle.EMPTY_TUPLE + pickle.TUPLE1 * 200_000
    if use == "key":
        body = pickle.EMPTY_DICT + nested + pickle.NONE + pickle.SETITEM
    else:
        body = (b"c__builtin__\nfrozenset\n" + pickle.EMPTY_LIST + nested + pickle.APPEND
                + pickle.TUPLE1 + pickle.REDUCE)
    path = _zip_with_pickle(tmp_path / "deep.pth", body)
    with pytest.raises(CheckpointError, match=r"'deep\.pth' nests containers more than 100 deep"):
        load_checkpoint(path)


@pytest.mark.parametrize("route", ["direct", "dup", "memo"])
def test_setting_attributes_on_an_allowed_global_is_refused(tmp_path, route):
    """BUILD on a function of the allow-list set attributes on the reader's own function, for
    every later load in the process; a DUP or a memo GET of the global got past the first
    check."""
    from keras_efficient3d import torch_checkpoint

    state = (pickle.EMPTY_DICT + pickle.BINUNICODE + struct.pack("<I", 6) + b"marker"
             + pickle.BININT1 + b"\x01" + pickle.SETITEM)
    body = b"ctorch\ndevice\n" + {
        "direct": b"",
        "dup": pickle.DUP,
        "memo": pickle.BINPUT + b"\x00" + pickle.POP + pickle.BINGET + b"\x00"}[route] + state
    body += pickle.BUILD + (pickle.POP if route == "dup" else b"")
    path = _zip_with_pickle(tmp_path / "mut.pth", body)
    with pytest.raises(UnsafeCheckpointError, match="sets attributes on a global"):
        load_checkpoint(path)
    assert not hasattr(torch_checkpoint._torch_device, "marker")


def test_a_list_filled_after_it_was_memoised_counts_its_depth_everywhere(tmp_path):
    """A list memoised while empty and filled later: a GET of it pushed its empty depth, so
    a 299-deep list passed a scan capped at 100."""
    body = pickle.EMPTY_LIST + pickle.BINPUT + b"\x00"
    for level in range(1, 150):  # each new list holds the one before, through the memo
        body += (pickle.EMPTY_LIST + pickle.LONG_BINPUT + struct.pack("<I", level)
                 + pickle.LONG_BINGET + struct.pack("<I", level - 1) + pickle.APPEND + pickle.POP)
    body += pickle.LONG_BINGET + struct.pack("<I", 149)
    path = _zip_with_pickle(tmp_path / "memo.pth", body)
    with pytest.raises(CheckpointError, match="nests containers more than 100 deep"):
        load_checkpoint(path)


def test_tied_weights_and_bfloat16_stay_within_the_total_cap(tmp_path, monkeypatch):
    """The total cap counted a weight tied under three keys three times (real torch.save
    files of 128 MiB refused) and bfloat16 at its widened float32 size (any view beside a
    weight over the cap refused). The cap made small here: 1 KiB past the storages."""
    from keras_efficient3d import torch_checkpoint

    monkeypatch.setattr(torch_checkpoint, "_MAX_REPEATED_BYTES", 1024)
    s = Storage("FloatStorage", np.arange(4000, dtype=np.float32), "0")
    path = tmp_path / "tied.pth"
    write_zip(path, {"state_dict": ordered([(k, tensor(s, 0, (4000,), (1,)))
                                            for k in ("a", "b", "c")])}, [s])
    tied = load_checkpoint(path).state_dict
    np.testing.assert_array_equal(tied["c"], np.arange(4000))
    assert tied["a"] is tied["b"] is tied["c"]  # read once, as PyTorch shares it
    bits = (np.arange(4000, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    b = Storage("BFloat16Storage", bits, "0")
    write_zip(path, {"state_dict": ordered([("w", tensor(b, 0, (4000,), (1,))),
                                            ("row", tensor(b, 0, (10,), (1,)))])}, [b])
    assert load_checkpoint(path).state_dict["w"].shape == (4000,)
    write_zip(path, {"state_dict": ordered([(f"r{i}", tensor(s, 0, (1000 - i, 4), (0, 1)))
                                            for i in range(3)])}, [s])  # 48 KB of repeats
    with pytest.raises(CheckpointError, match="its tensors would take"):
        load_checkpoint(path)


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA])
def test_a_compressed_record_is_refused_before_it_is_inflated(tmp_path, compression):
    """torch.save stores its records: a compressed one could inflate to gigabytes (a 256 KB
    file DEFLATEd 512 MiB into memory), and a damaged one raised zlib's or lzma's error."""
    s = Storage("FloatStorage", np.zeros(1 << 20, dtype=np.float32), "0")
    plain = tmp_path / "plain.pth"
    write_zip(plain, {"state_dict": ordered([("w", tensor(s, 0, (1 << 20,), (1,)))])}, [s])
    path = tmp_path / "packed.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", compression=compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    assert path.stat().st_size < 100_000
    with pytest.raises(CheckpointError, match=r"'packed\.pth': record '.*' is compressed; "
                                              r"torch\.save stores its records as they are"):
        load_checkpoint(path)


def test_a_tensor_of_more_dimensions_than_numpy_takes_is_refused_at_once(tmp_path):
    """2000 dimensions of one 8000-bit size (15 KB of file): computing the element count took
    70 s, growing with the square of the file."""
    s = Storage("FloatStorage", np.zeros(1, dtype=np.float32), "0")
    path = tmp_path / "dims.pth"
    write_zip(path, {"state_dict": ordered([("w", tensor(s, 0, (1 << 8000,) * 2000,
                                                         (0,) * 2000))])}, [s])
    with pytest.raises(CheckpointError, match="a tensor has 2000 dimensions, more than 64"):
        load_checkpoint(path)
    write_zip(path, {"state_dict": ordered([("w", tensor(s, 0, (1 << 70,), (0,)))])}, [s])
    with pytest.raises(CheckpointError, match="invalid tensor size"):
        load_checkpoint(path)
