"""Reading torch.save files without torch: equal to torch.load, and safe.

Files are written here by torch itself (both formats); what the reader returns
is compared, array for array, with `torch.load(weights_only=True)`.
"""

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from polynet_tf.weights import CheckpointError, UnsafeCheckpointError, load_state_dict
from polynet_tf.weights.checkpoint import read_checkpoint

torch = pytest.importorskip("torch")

FORMATS = {"zip": True, "legacy": False}  # -> _use_new_zipfile_serialization


def _save(state, path, fmt):
    torch.save(state, str(path), _use_new_zipfile_serialization=FORMATS[fmt])
    return str(path)


def _as_numpy(tensor):
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: compare the same bits
        return tensor.view(torch.int16).numpy()
    return tensor.numpy()


def _assert_same_as_torch(got, path):
    expected = torch.load(path, weights_only=True)
    assert list(got) == list(expected)
    for key, tensor in expected.items():
        array = got[key]
        if tensor.dtype == torch.bfloat16:
            assert array.dtype.name == "bfloat16"
            array = array.view(np.int16)
        reference = _as_numpy(tensor)
        assert array.dtype == reference.dtype, key
        assert array.shape == reference.shape, key
        assert array.dtype.isnative and array.flags.c_contiguous, key
        np.testing.assert_array_equal(array, reference, err_msg=key)


def _mixed_state():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 10, generator=generator)
    big = torch.randn(4, 5, 6, generator=generator)
    return collections.OrderedDict(
        weight=torch.randn(3, 4, generator=generator),
        transposed=base.t(),  # non-contiguous view
        window=base[2:5, 3:7],  # offset into a shared storage, strided rows
        whole=base,  # the storage the two views share
        permuted=big.permute(2, 0, 1),
        every_other=big[:, ::2, 1:],
        half=torch.randn(5, generator=generator).half(),
        double=torch.randn(2, 3, dtype=torch.float64, generator=generator),
        bfloat=torch.randn(7, generator=generator).bfloat16(),
        long=torch.arange(-3, 5),
        int32=torch.arange(6, dtype=torch.int32).reshape(2, 3),
        int16=torch.tensor([-2, 7], dtype=torch.int16),
        int8=torch.tensor([-128, 127], dtype=torch.int8),
        uint8=torch.arange(250, 256, dtype=torch.uint8),
        flags=torch.tensor([True, False, True]),
        scalar=torch.tensor(3.5),
        empty=torch.zeros(0, 3),
        expanded=torch.ones(3, 1).expand(3, 4),  # stride 0
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_shared_storages_and_dtypes_read_as_torch_does(tmp_path, fmt):
    path = _save(_mixed_state(), tmp_path / f"mixed-{fmt}.pth", fmt)
    got = load_state_dict(path)
    _assert_same_as_torch(got, path)
    # Views are copies: changing one does not change the tensor it shared a storage with.
    got["window"][0, 0] = 1e6
    assert got["whole"][2, 3] != 1e6
    # Through a file:// URI (tf.io.gfile) too.
    _assert_same_as_torch(load_state_dict("file://" + path), path)


_ELEMENT_SIZES = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2,
                  "BFloat16Storage": 2, "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2}


class _StorageSizes(pickle.Unpickler):
    """Collects storage key -> element size from a data.pkl (test helper; builds no tensors)."""

    def __init__(self, data):
        super().__init__(io.BytesIO(data))
        self.sizes = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        return name if name.endswith("Storage") else (lambda *args: None)

    def persistent_load(self, pid):
        self.sizes[pid[2]] = _ELEMENT_SIZES.get(pid[1], 1)


def _byteswapped_zip(source, target):
    """The zip file as a big-endian machine writes it: each storage swapped, byteorder "big"."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        pickle_name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        prefix = pickle_name[: -len("data.pkl")]
        reader = _StorageSizes(archive.read(pickle_name))
        reader.load()
        for info in archive.infolist():
            data = archive.read(info)
            key = info.filename[len(prefix + "data/"):]
            if info.filename.startswith(prefix + "data/") and reader.sizes[key] > 1:
                data = np.frombuffer(data, f"u{reader.sizes[key]}").byteswap().tobytes()
            elif info.filename == prefix + "byteorder":
                data = b"big"
            out.writestr(info, data)
    return target


def test_big_endian_file(tmp_path):
    little = _save(_mixed_state(), tmp_path / "little.pth", "zip")
    with zipfile.ZipFile(little) as archive:
        assert any(n.endswith("/byteorder") and archive.read(n) == b"little"
                   for n in archive.namelist())
    big = _byteswapped_zip(little, str(tmp_path / "big.pth"))
    assert open(big, "rb").read() != open(little, "rb").read()
    got = load_state_dict(big)
    _assert_same_as_torch(got, little)  # the little-endian original's values, native order
    _assert_same_as_torch(got, big)  # and torch.load agrees on the big-endian file


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["pretrainedmodels", "pytorchcv"])
def test_reference_networks_state_dicts(request, tmp_path, layout):
    reference = request.getfixturevalue(f"{layout}_reference")
    # The fixture's file is the zip format; the legacy one is written here.
    legacy = _save(torch.load(reference.checkpoint, weights_only=True),
                   tmp_path / "legacy.pth", "legacy")
    for path in (reference.checkpoint, legacy):
        got = load_state_dict(path)
        assert list(got) == reference.keys
        _assert_same_as_torch(got, path)
    variance = next(key for key in got if key.endswith("running_var"))
    assert 0.5 <= got[variance].min() < got[variance].max() <= 2.0  # the random statistics
    # read_checkpoint (what the converter uses) gives float32 arrays of the same values.
    arrays = read_checkpoint(legacy)
    assert all(a.dtype in (np.float32, np.int64) for a in arrays.values())


class _Exploit:
    """Pickles to a call of os.system (through __reduce__)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_with_pickle(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        archive.writestr("archive/byteorder", "little")
    return str(path)


def _legacy_with_pickle(path, payload):
    with open(path, "wb") as handle:
        for part in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}, payload, []):
            pickle.dump(part, handle, protocol=2)
    return str(path)


@pytest.mark.parametrize("write", [_zip_with_pickle, _legacy_with_pickle])
def test_code_in_the_pickle_is_refused_without_running(tmp_path, write):
    marker = tmp_path / "was-run"
    path = write(tmp_path / "exploit.pth", {"weight": _Exploit(marker)})
    with pytest.raises(UnsafeCheckpointError, match=r"global posix\.system.*refused") as info:
        load_state_dict(path)
    assert "weights_only=True" in str(info.value)
    assert not marker.exists()
    # The same through the converter's reader.
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_whole_module_and_other_objects_are_refused(tmp_path):
    model_file = _save(torch.nn.Linear(2, 3), tmp_path / "module.pth", "zip")
    with pytest.raises(UnsafeCheckpointError, match=r"torch\.nn\.modules\.linear\.Linear"):
        load_state_dict(model_file)
    not_tensors = _save({"weight": torch.zeros(2), "note": "text"}, tmp_path / "str.pth", "zip")
    with pytest.raises(CheckpointError, match="'note' is a str, not a tensor"):
        load_state_dict(not_tensors)
    a_list = _save([torch.zeros(2)], tmp_path / "list.pth", "legacy")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_state_dict(a_list)


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_and_truncated_files(tmp_path, fmt):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_state_dict(str(empty))
    data = open(_save(_mixed_state(), tmp_path / "whole.pth", fmt), "rb").read()
    for fraction in (0.1, 0.5, 0.95):
        cut = tmp_path / f"cut-{fraction}.pth"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(CheckpointError, match="truncated"):
            load_state_dict(str(cut))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_state_dict(str(tmp_path / "none.pth"))


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    # A zip file whose storage record is shorter than its tensor: refused
    # instead of reading memory beyond the buffer.
    path = _save({"w": torch.arange(6.0)}, tmp_path / "ok.pth", "zip")
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(path) as archive, zipfile.ZipFile(bad, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            out.writestr(info, data[:8] if info.filename.endswith("/data/0") else data)
    with pytest.raises(CheckpointError, match="past the end of its storage"):
        load_state_dict(str(bad))


def test_positioned_file_reads_lines_like_a_python_file(tmp_path):
    # pickle reads text opcodes line by line; the wrapper must track its position.
    from polynet_tf.weights import torch_format  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    path = tmp_path / "lines.bin"
    path.write_bytes(b"first line\nsecond\nthird")
    with tf.io.gfile.GFile(str(path), "rb") as handle, open(path, "rb") as reference:
        ours = torch_format._PositionedFile(handle, path.stat().st_size)
        for size in (-1, 3, 100, 0, 2, -1, 4, -1):
            assert ours.readline(size) == reference.readline(size), size
            assert ours.tell() == reference.tell()
        assert ours.read() == reference.read() == b""
