"""Reading torch.save checkpoints without torch: values equal torch.load's, tensors
are memory-mapped, and pickles naming anything but tensors are refused unrun."""

from __future__ import annotations

import pickle
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from handspring.errors import CheckpointError
from handspring.weights.checkpoint import check_weights
from handspring.weights.torch_pickle import TorchCheckpoint

# ---- pickles written opcode by opcode, in a zip laid out like torch's ----


def _op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _op_int(number: int) -> bytes:
    return b"J" + struct.pack("<i", number)  # BININT


def _op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()  # GLOBAL


def _op_tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _tensor(key: str, numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """The opcodes torch writes for a float32 tensor: _rebuild_tensor_v2 on a persistent storage."""
    storage = [_op_str("storage"), _op_global("torch", "FloatStorage"), _op_str(key)]
    storage_id = _op_tuple([*storage, _op_str("cpu"), _op_int(numel)]) + b"Q"  # BINPERSID
    hooks = _op_global("collections", "OrderedDict") + b")R"  # OrderedDict()
    sizes, strides = _op_tuple([*map(_op_int, size)]), _op_tuple([*map(_op_int, stride)])
    args = _op_tuple([storage_id, _op_int(0), sizes, strides, b"\x89", hooks])  # \x89: False
    return _op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"  # REDUCE


def _call(module: str, name: str, args: tuple) -> bytes:
    """module.name(*args) by REDUCE; the arguments' opcodes come from pickle itself."""
    return _op_global(module, name) + pickle.dumps(args, protocol=2)[2:-1] + b"R"


def _state_dict_pickle(items: dict[str, bytes]) -> bytes:
    body = b"".join(_op_str(key) + value for key, value in items.items())
    return b"\x80\x02}(" + body + b"u."  # PROTO 2, EMPTY_DICT, MARK ... SETITEMS, STOP


def _write_torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return path


def _marker_payloads(marker: Path) -> list[tuple[str, str, bytes, bool]]:
    """(module, name, pickle, whether plain pickle.loads creates the marker): each
    payload would create `marker` when unpickled by anything that runs globals."""
    m = str(marker)
    calls = [
        ("os", "system", (f"touch '{m}'",), True),
        ("posix", "system", (f"touch '{m}'",), True),
        ("builtins", "eval", (f"open({m!r}, 'w').close()",), True),
        ("builtins", "exec", (f"open({m!r}, 'w').close()",), True),
        ("builtins", "open", (m, "w"), True),
        ("subprocess", "check_call", (["touch", m],), True),
        ("subprocess", "Popen", (["touch", m],), False),  # runs, but asynchronously
        ("torch", "save", (0, m), False),  # needs torch to run
        ("torch", "load", (m,), False),
        ("torch.storage", "_load_from_bytes", (b"",), False),  # calls torch.load
        ("torch._utils", "_rebuild_device_tensor_from_numpy", (0, 0, 0), False),  # unlisted name
    ]
    payloads = [
        (mod, name, b"\x80\x02" + _call(mod, name, args) + b".", live)
        for mod, name, args, live in calls
    ]
    inst = f"(Vtouch '{m}'\nios\nsystem\n.".encode()  # protocol 0: MARK, string, INST
    stack_global = (  # protocol 4: the global's names are strings on the stack
        b"\x80\x04\x8c\x02os\x8c\x06system\x93" + _op_str(f"touch '{m}'") + b"\x85R."
    )
    hidden = _state_dict_pickle(
        {"w": _tensor("0", 4, (2, 2), (2, 1)), "x": _call("os", "system", (f"touch '{m}'",))}
    )
    return [
        *payloads,
        ("os", "system", inst, True),
        ("os", "system", stack_global, True),
        ("os", "system", hidden, False),  # plain pickle fails at the tensor first
    ]


def test_payloads_are_live(tmp_path: Path) -> None:
    """The hostile pickles below do create their marker when unpickled plainly."""
    for module, name, payload, live in _marker_payloads(tmp_path / "marker"):
        if live:
            (tmp_path / "marker").unlink(missing_ok=True)
            list(pickletools.genops(payload))  # well-formed
            result = pickle.loads(payload)
            if hasattr(result, "close"):
                result.close()
            assert (tmp_path / "marker").exists(), f"{module}.{name}"


_PAYLOAD_IDS = [
    f"{case}-{module}.{name}" for case, (module, name, *_) in enumerate(_marker_payloads(Path("m")))
]


@pytest.mark.parametrize("case", range(len(_PAYLOAD_IDS)), ids=_PAYLOAD_IDS)
def test_forbidden_globals_are_refused_unrun(tmp_path: Path, case: int) -> None:
    marker = tmp_path / "marker"
    module, name, payload, _ = _marker_payloads(marker)[case]
    path = _write_torch_zip(tmp_path / "evil.pt", payload, {"0": bytes(16)})
    with pytest.raises(
        CheckpointError, match=re.escape(f"forbidden global {module}.{name} ")
    ) as caught:
        TorchCheckpoint.open(path)
    assert caught.value.source == str(path)
    assert not marker.exists()


def test_hand_written_checkpoint_views(tmp_path: Path) -> None:
    data = np.arange(6, dtype="<f4")
    pkl = _state_dict_pickle(
        {"rows": _tensor("0", 6, (2, 3), (3, 1)), "columns": _tensor("0", 6, (3, 2), (1, 3))}
    )
    checkpoint = TorchCheckpoint.open(
        _write_torch_zip(tmp_path / "w.pt", pkl, {"0": data.tobytes()})
    )
    np.testing.assert_array_equal(checkpoint["rows"], data.reshape(2, 3))
    np.testing.assert_array_equal(checkpoint["columns"], data.reshape(2, 3).T)
    assert np.shares_memory(checkpoint["rows"], checkpoint["columns"])


def test_short_storage_and_view_outside_it_name_the_key(tmp_path: Path) -> None:
    pkl = _state_dict_pickle(
        {"short": _tensor("0", 8, (8,), (1,)), "outside": _tensor("1", 4, (3, 3), (3, 1))}
    )
    path = _write_torch_zip(tmp_path / "w.pt", pkl, {"0": bytes(16), "1": bytes(16)})
    checkpoint = TorchCheckpoint.open(path)
    assert checkpoint.shape("outside") == (3, 3)
    with pytest.raises(CheckpointError, match="holds 16 bytes, its storage needs 32") as short:
        checkpoint["short"]
    with pytest.raises(CheckpointError, match="outside its storage") as outside:
        checkpoint["outside"]
    assert (short.value.key, outside.value.key) == ("short", "outside")
    assert short.value.source == outside.value.source == str(path)
    with pytest.raises(CheckpointError, match="missing tensor"):
        checkpoint["absent"]


def test_corrupt_pickle_and_non_checkpoints(tmp_path: Path) -> None:
    pkl = _state_dict_pickle({"w": _tensor("0", 4, (4,), (1,))})
    path = _write_torch_zip(tmp_path / "w.pt", pkl, {"0": bytes(16)})
    raw = bytearray(path.read_bytes())
    raw[raw.find(pkl) + 20] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"unreadable archive/data\.pkl \(Bad CRC"):
        TorchCheckpoint.open(path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"not a zip archive.*safetensors"):
        TorchCheckpoint.open(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="file not found"):
        TorchCheckpoint.open(tmp_path / "absent.pt")
    no_pickle = tmp_path / "other.zip"
    with zipfile.ZipFile(no_pickle, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointError, match=r"no single <name>/data\.pkl"):
        TorchCheckpoint.open(no_pickle)


# ---- checkpoints written by torch.save, compared with torch.load ----


@pytest.fixture
def torch() -> ModuleType:
    return pytest.importorskip("torch")


def _assert_same_as_torch_load(torch: ModuleType, path: Path, unwrap: str | None = None) -> None:
    reference = torch.load(path, weights_only=True)
    reference = reference[unwrap] if unwrap else reference
    checkpoint = TorchCheckpoint.open(path)
    assert list(checkpoint) == list(reference)
    for key, tensor in reference.items():
        want = tensor.detach().float() if tensor.is_floating_point() else tensor
        got = checkpoint[key]
        assert checkpoint.shape(key) == tuple(want.shape)
        assert got.dtype == want.numpy().dtype, key
        np.testing.assert_array_equal(got, want.numpy(), err_msg=key)


@pytest.mark.reference
def test_dtypes_equal_torch_load(torch: ModuleType, tmp_path: Path) -> None:
    values = torch.randn(5, 7, generator=torch.Generator().manual_seed(0)) * 1e3
    state = {
        "f32": values,
        "f16": values.half(),
        "bf16": values.bfloat16(),
        "f64": values.double() / 3,  # not representable in float32: rounds like torch's .float()
        "i64": torch.arange(-5, 5),
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(values[:2].clone()),
        "bf16_parameter": torch.nn.Parameter(values[:3].bfloat16()),
    }
    torch.save(state, tmp_path / "w.pth")
    _assert_same_as_torch_load(torch, tmp_path / "w.pth")


@pytest.mark.reference
def test_views_and_shared_storages(torch: ModuleType, tmp_path: Path) -> None:
    base = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    state = {
        "base": base,
        "transposed": base.t(),
        "rows": base[2:5],
        "columns": base[:, 3:7],
        "strided": base[::2, 1::3],
        "flat_slice": base.view(48)[5:17],
        "broadcast": torch.randn(3, 1).expand(3, 4),  # stride 0
        "half_view": base.half()[1:, ::2].t(),
    }
    torch.save(state, tmp_path / "w.pth")
    _assert_same_as_torch_load(torch, tmp_path / "w.pth")
    checkpoint = TorchCheckpoint.open(tmp_path / "w.pth")
    assert np.shares_memory(checkpoint["base"], checkpoint["transposed"])
    assert np.shares_memory(checkpoint["rows"], checkpoint["strided"])


@pytest.mark.reference
@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_state_dict_inside_a_training_dict(torch: ModuleType, tmp_path: Path, wrapper: str) -> None:
    state = {"w": torch.randn(3, 4), "b": torch.zeros(4)}
    torch.save({wrapper: state, "epoch": 3, "lr": [0.1]}, tmp_path / "w.pth")
    _assert_same_as_torch_load(torch, tmp_path / "w.pth", unwrap=wrapper)


@pytest.mark.reference
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_module_state_dict(torch: ModuleType, tmp_path: Path, dtype: str) -> None:
    torch.manual_seed(2)
    nn = torch.nn
    module = nn.ModuleDict(
        {
            "attn": nn.MultiheadAttention(8, 2, add_bias_kv=True),
            "norm": nn.LayerNorm(8, eps=1e-6),
            "stem": nn.Conv3d(3, 8, kernel_size=(2, 3, 3), stride=(2, 3, 3), bias=False),
            "bn": nn.BatchNorm1d(8),
        }
    ).to(getattr(torch, dtype))
    module["bn"](torch.randn(4, 8, dtype=getattr(torch, dtype)))  # running stats, counter
    path = tmp_path / "module.pth"
    torch.save(module.state_dict(), path)
    _assert_same_as_torch_load(torch, path)
    checkpoint = TorchCheckpoint.open(path)
    assert checkpoint["bn.num_batches_tracked"].dtype == np.int64
    assert [f.path for f in checkpoint.files] == [path]
    assert checkpoint.file_of("attn.bias_k") == path and checkpoint.describe() == str(path)
    shapes = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    check_weights(checkpoint, shapes, ("attn.", "norm."), checkpoint.describe(), "test")


@pytest.mark.reference
def test_compressed_and_big_endian_records(torch: ModuleType, tmp_path: Path) -> None:
    """Zips rewritten by other tools: deflated records are read, not mapped; a
    byteorder record saying "big" is honoured."""
    state = {"f32": torch.randn(4, 5), "f16": torch.randn(3).half(), "i64": torch.arange(3)}
    torch.save(state, tmp_path / "w.pth")
    itemsize = {"w/data/0": 4, "w/data/1": 2, "w/data/2": 8}  # storages in pickling order
    with zipfile.ZipFile(tmp_path / "w.pth") as source:
        records = {info.filename: source.read(info) for info in source.infolist()}
    with zipfile.ZipFile(tmp_path / "deflated.pth", "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in records.items():
            target.writestr(name, data)
    with zipfile.ZipFile(tmp_path / "big.pth", "w") as target:
        for name, data in records.items():
            if name in itemsize:
                data = np.frombuffer(data, f"<u{itemsize[name]}").byteswap().tobytes()
            target.writestr(name, b"big" if name == "w/byteorder" else data)
    for name in ("deflated.pth", "big.pth"):
        checkpoint = TorchCheckpoint.open(tmp_path / name)
        for key, tensor in state.items():
            want = tensor.float() if tensor.is_floating_point() else tensor
            np.testing.assert_array_equal(checkpoint[key], want.numpy(), err_msg=f"{name} {key}")


def _bytes_read() -> int:
    """Bytes this process has read through read(2) and the like (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.reference
@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_tensors_are_memory_mapped_and_read_only_when_asked(
    torch: ModuleType, tmp_path: Path
) -> None:
    path = tmp_path / "big.pth"
    big = torch.randn(4 * 1024 * 1024)  # 16 MB
    torch.save({"big": big, "small": torch.arange(12.0).reshape(3, 4).t()}, path)
    before = _bytes_read()
    checkpoint = TorchCheckpoint.open(path)
    shapes = {key: checkpoint.shape(key) for key in checkpoint}
    small, whole = checkpoint["small"], checkpoint["big"]
    read = _bytes_read() - before
    print(
        f"open + shape() + two views of a {path.stat().st_size} byte checkpoint: {read} bytes read"
    )
    assert read < 1 << 20
    assert shapes == {"big": (4 * 1024 * 1024,), "small": (4, 3)}
    for array in (small, whole):
        mapped = array.base
        assert isinstance(mapped, np.memmap) and Path(mapped.filename) == path
        assert not array.flags.writeable
    np.testing.assert_array_equal(whole, big.numpy())
    np.testing.assert_array_equal(small, torch.arange(12.0).reshape(3, 4).t().numpy())


@pytest.mark.reference
def test_legacy_format_is_refused(torch: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=r"legacy torch\.save format.*safetensors") as caught:
        TorchCheckpoint.open(path)
    assert caught.value.source == str(path)


@pytest.mark.reference
def test_truncated_checkpoint_is_refused(torch: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:2500])
    with pytest.raises(CheckpointError, match="truncated or corrupt zip") as caught:
        TorchCheckpoint.open(path)
    assert caught.value.source == str(path)
