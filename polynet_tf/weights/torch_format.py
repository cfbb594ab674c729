"""Reads `torch.save` files of tensors with the standard library and NumPy, without torch.

Both formats `torch.save` writes are read:

- the zip format (PyTorch 1.6 and later, the default): a zip archive with
  `<prefix>/data.pkl` (the pickled object, storages as persistent ids),
  `<prefix>/data/<key>` (one raw storage per key) and `<prefix>/byteorder`
  ("little" or "big"; little when absent, as `torch.load` assumes);
- the legacy format (before 1.6, or `_use_new_zipfile_serialization=False`):
  five things back to back, a pickled magic number, a pickled protocol version
  (1001), a pickled system-information dict, the main pickle, the pickled list
  of storage keys, then each storage in that order as a little-endian int64
  element count followed by its little-endian elements.

The pickles are read by the restricted unpickler of `torch_pickle`, which
admits only what a state dict of tensors needs, mapped to local stand-ins:
torch is never imported and no other global is ever looked up or called.
Anything else is refused with `UnsafeCheckpointError` naming the global, as
`torch.load(weights_only=True)` refuses it.

Reference for the formats: `torch/serialization.py` (`_save`, `_legacy_save`,
`_load`, `_legacy_load`) and `torch/_utils.py` (`_rebuild_tensor_v2`).
"""

import collections
import io
import math
import pickle
import struct
import sys
import zipfile

import numpy as np
import tensorflow as tf

from polynet_tf.weights.torch_pickle import (
    CheckpointError,
    StorageRef,
    UnsafeCheckpointError,
    check_state,
    storage_from_pid,
    unpickle,
)

__all__ = ["CheckpointError", "UnsafeCheckpointError", "load_state_dict"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001


def _materialise(state, read_storage, byteorder):
    """Builds the arrays, reading each storage once, in native byte order.

    A tensor that is its whole storage, used by no other tensor, takes the
    storage's buffer without a copy; any other view is cut out with
    `as_strided` (bounds checked first) and copied.
    """
    users = collections.Counter(ref.storage.key for ref in state.values())
    by_storage = collections.defaultdict(list)
    for name, ref in state.items():
        by_storage[ref.storage.key].append((name, ref))
    arrays = {}
    for key, entries in by_storage.items():
        dtype = entries[0][1].storage.dtype
        data = read_storage(key)
        if len(data) % dtype.itemsize:
            raise CheckpointError(f"storage {key!r} has {len(data)} bytes, not a whole "
                                        f"number of {dtype.itemsize}-byte elements")
        storage = np.frombuffer(data, dtype=dtype)  # writable: `data` is a fresh bytearray
        if byteorder != sys.byteorder and dtype.itemsize > 1:
            storage.byteswap(inplace=True)
        for name, ref in entries:
            arrays[name] = _view(storage, ref, name, whole=users[key] == 1)
    return {name: arrays[name] for name in state}


def _view(storage, ref, name, whole):
    start = ref.storage.offset + ref.offset
    count = math.prod(ref.size)  # Python integers: no overflow on absurd sizes
    if min(ref.size, default=1) < 0 or min(ref.stride, default=0) < 0 or start < 0:
        raise CheckpointError(f"tensor {name!r} has a negative size, stride or offset")
    last = start + sum((s - 1) * st for s, st in zip(ref.size, ref.stride)) if count else start - 1
    if last >= storage.size or (ref.storage.offset + ref.storage.numel > storage.size):
        raise CheckpointError(
            f"tensor {name!r} reaches past the end of its storage {ref.storage.key!r} "
            f"({storage.size} elements); the file is corrupt or truncated")
    if whole and start == 0 and count == storage.size and (
            count == 0 or ref.stride == _contiguous_strides(ref.size)):
        return storage.reshape(ref.size)
    view = np.lib.stride_tricks.as_strided(
        storage[start:], shape=ref.size,
        strides=tuple(st * storage.itemsize for st in ref.stride), writeable=False)
    return np.array(view, copy=True, order="C")


def _contiguous_strides(size):
    strides, step = [], 1
    for s in reversed(size):
        strides.append(step)
        step *= max(s, 1)
    return tuple(reversed(strides))


class _PositionedFile:
    """A read-only file that skips seeks to where it already is and never reads past its end.

    zipfile seeks before every read; `tf.io.gfile.GFile.seek` is slow to call
    (a deprecation wrapper inspects its arguments each time), and members are
    read in order, so most of those seeks are no-ops. A read is cut to what
    the file still holds: a corrupt length field asks for exabytes, and
    `GFile.read` of such a size crashes the process (TensorFlow 2.21).
    """

    def __init__(self, handle, size):
        self._handle, self._position, self._size = handle, handle.tell(), size

    def seekable(self):
        return True

    def tell(self):
        return self._position

    def seek(self, offset, whence=0):
        if whence != 0 or offset != self._position:
            try:
                self._handle.seek(offset, whence)
            except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as error:
                # A corrupt directory offset (before the start or past the end): what
                # zipfile reports for a bad archive.
                raise zipfile.BadZipFile(f"cannot seek to {offset}: {error.message}") from None
            self._position = self._handle.tell()
        return self._position

    def read(self, size=-1):
        left = max(0, self._size - self._position)
        size = left if size is None or size < 0 else min(size, left)
        data = self._handle.read(size) if size else b""
        self._position += len(data)
        return data

    def readline(self, size=-1):
        line = self._handle.readline()
        if size is not None and 0 <= size < len(line):
            line = line[:size]
            self._handle.seek(self._position + size)  # The rest stays unread.
        self._position += len(line)
        return line

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _read_zip(handle, source, size):
    try:
        archive = zipfile.ZipFile(_PositionedFile(handle, size))
    except zipfile.BadZipFile as error:
        raise CheckpointError(
            f"{source} starts like a zip file but cannot be opened as one ({error}): it is "
            "truncated or corrupt") from None
    with archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")
                   or name == "data.pkl"]
        if len(pickles) != 1:
            raise CheckpointError(
                f"{source} is a zip file but not a torch.save file (no single data.pkl; found "
                f"{pickles or 'none'})")
        prefix = pickles[0][: -len("data.pkl")]
        names = set(archive.namelist())
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise CheckpointError(f"{source}: unknown byte order {byteorder!r}")
        state = unpickle(io.BytesIO(archive.read(pickles[0])),
                          lambda pid: storage_from_pid(pid, legacy=False))
        check_state(state, source)

        def read_storage(key):
            member = f"{prefix}data/{key}"
            if member not in names:
                raise CheckpointError(f"{source}: storage record {member} is missing")
            info = archive.getinfo(member)
            if info.compress_type == zipfile.ZIP_STORED and info.file_size > size:
                raise CheckpointError(f"{source}: storage record {member} claims "
                                      f"{info.file_size} bytes, more than the file's {size}")
            data = bytearray(info.file_size)
            with archive.open(member) as stream:
                if stream.readinto(data) != len(data):
                    raise CheckpointError(f"{source}: storage record {member} is short")
            return data

        return _materialise(state, read_storage, byteorder)


def _read_legacy(handle, source, size):
    if unpickle(handle) != LEGACY_MAGIC_NUMBER:
        raise CheckpointError(
            f"{source} is neither a zip nor a legacy torch.save file (wrong magic number)")
    version = unpickle(handle)
    if version != LEGACY_PROTOCOL_VERSION:
        raise CheckpointError(f"{source}: unsupported legacy protocol version {version!r}")
    unpickle(handle)  # system information; storages are little-endian whatever it says
    storages = {}

    def persistent_load(pid):
        ref = storage_from_pid(pid, legacy=True)
        root = storages.setdefault(ref.key, StorageRef(ref.key, ref.dtype, pid[4]))
        return ref if ref.offset else root

    state = unpickle(handle, persistent_load)
    check_state(state, source)
    keys = unpickle(handle)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise CheckpointError(f"{source}: its storage list does not match its tensors")
    data = {}
    for key in map(str, keys):  # in file order; each is a count then the elements
        header = handle.read(8)
        if len(header) != 8:
            raise CheckpointError(f"{source} ends before storage {key!r}: truncated")
        (count,) = struct.unpack("<q", header)
        nbytes = count * storages[key].dtype.itemsize
        if nbytes > size:
            raise CheckpointError(f"{source}: storage {key!r} claims {nbytes} bytes, more than "
                                  f"the file's {size}: truncated or corrupt")
        if count != storages[key].numel:
            raise CheckpointError(f"{source}: storage {key!r} has {count} elements, "
                                        f"its tensors say {storages[key].numel}")
        data[key] = bytearray(handle.read(nbytes))
        if len(data[key]) != nbytes:
            raise CheckpointError(f"{source} ends inside storage {key!r}: truncated")
    return _materialise(state, data.pop, "little")


def load_state_dict(path):
    """Reads a state dict saved by `torch.save` as NumPy arrays, without torch.

    Args:
        path: file path or URI (read through `tf.io.gfile`).

    Returns:
        dict of name -> numpy array in the file's order, dtypes as saved
        (bfloat16 as `ml_dtypes.bfloat16`), native byte order, C-contiguous.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle refers to anything but tensors and
            dicts (never imported or run).
        CheckpointError: empty, truncated or corrupt, or not a flat
            state dict of tensors.
    """
    source = str(path)
    if not tf.io.gfile.exists(source):
        raise FileNotFoundError(f"Checkpoint file not found: {source}")
    with tf.io.gfile.GFile(source, "rb") as handle:
        head = handle.read(4)
        if not head:
            raise CheckpointError(f"{source} is empty (0 bytes)")
        handle.seek(0)
        size = handle.size()
        try:
            if head == b"PK\x03\x04":
                return _read_zip(handle, source, size)
            return _read_legacy(_PositionedFile(handle, size), source, size)
        except CheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
                IndexError, AttributeError, struct.error, zipfile.BadZipFile,
                zipfile.LargeZipFile, NotImplementedError, OverflowError, MemoryError,
                RecursionError, tf.errors.InvalidArgumentError,
                tf.errors.OutOfRangeError) as error:
            raise CheckpointError(
                f"{source} cannot be read as a torch.save file ({type(error).__name__}: "
                f"{error}): it is truncated or corrupt") from error
