"""The restricted unpickler behind `torch_format`: tensors in dicts, nothing else.

`torch.save` pickles a state dict as `collections.OrderedDict` of tensors, each
a call of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
whose storage is a persistent id `("storage", torch.<Type>Storage, key,
location, numel)` (legacy files add a view field). `RestrictedUnpickler` admits
exactly those globals, mapped to the local stand-ins below; it never imports
torch and never looks up or calls any other global, which it refuses with
`UnsafeCheckpointError` naming it (what `torch.load(weights_only=True)` refuses).
"""

import collections
import pickle

import numpy as np

# torch.<Name>Storage -> element type (native order; storages are swapped when the file's differs).
_STORAGE_DTYPES = {
    "DoubleStorage": "=f8",
    "FloatStorage": "=f4",
    "HalfStorage": "=f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "=i8",
    "IntStorage": "=i4",
    "ShortStorage": "=i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "=c8",
    "ComplexDoubleStorage": "=c16",
}


class CheckpointError(ValueError):
    """A file that is not a readable PyTorch state dict (empty, truncated, corrupt, wrong type)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that refers to a global a state dict of tensors does not need; never run."""


class StorageRef:
    """A storage named by the pickle: its key, element type and, for old views, an offset."""

    __slots__ = ("key", "dtype", "numel", "offset")

    def __init__(self, key, dtype, numel, offset=0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


class TensorRef:
    """A tensor named by the pickle: a strided view of a storage, materialised later."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _StorageType:
    """Stand-in for `torch.<Name>Storage`: carries only the element type."""

    def __init__(self, name):
        self.name = name
        self.dtype = _numpy_dtype(_STORAGE_DTYPES[name])


def _numpy_dtype(code):
    if code == "bfloat16":
        import ml_dtypes  # pylint: disable=import-outside-toplevel  # a TensorFlow dependency  # noqa: PLC0415

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(code)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Stand-in for `torch._utils._rebuild_tensor` and `_rebuild_tensor_v2`.

    v2 adds requires_grad, backward_hooks and an optional metadata dict, which
    a plain array does not need.
    """
    if not isinstance(storage, StorageRef):
        raise CheckpointError(f"a tensor refers to {type(storage).__name__}, not a storage")
    try:
        size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"a tensor has a malformed size or stride: {error}") from None
    if len(size) != len(stride):
        raise CheckpointError(f"a tensor has size {size} but stride {stride}")
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *unused):
    """Stand-in for `torch._utils._rebuild_parameter`: a Parameter is read as its tensor."""
    if not isinstance(data, TensorRef):
        raise CheckpointError(f"a parameter holds {type(data).__name__}, not a tensor")
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle._Unpickler):  # pylint: disable=protected-access
    """Unpickler that maps the few admitted globals to stand-ins and refuses all others.

    Built on the pure-Python unpickler: on a corrupt length field the C one
    (CPython 3.11) let a MemoryError escape with a bytearray still exported,
    then crashed the process; this one raises an exception we can report.
    The pickles of a state dict hold only names and storage references (the
    tensor bytes live outside them), so the slower unpickler costs little.
    """

    def __init__(self, file, persistent_load):
        super().__init__(file, encoding="utf-8")
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafeCheckpointError(
                f"the pickle refers to the global {module}.{name}, which a state dict of "
                "tensors does not need; it was refused without being imported or called "
                "(as torch.load(weights_only=True) refuses it). Only tensors in (ordered) "
                "dicts are read: save model.state_dict()."
            ) from None

    def persistent_load(self, pid):
        if self._persistent_load is None:
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        return self._persistent_load(pid)


def unpickle(handle, persistent_load=None):
    return RestrictedUnpickler(handle, persistent_load).load()


def storage_from_pid(pid, legacy):
    """A `StorageRef` from a persistent id ('storage', type, key, location, numel[, view])."""
    if not isinstance(pid, tuple) or not pid:
        raise CheckpointError(f"malformed persistent id {pid!r}")
    kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
    if kind != "storage" or len(pid) != (6 if legacy else 5):
        raise CheckpointError(
            f"unsupported persistent id {pid[:1]!r}: only tensor storages are read")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
        raise CheckpointError(f"unknown storage type {storage_type!r}")
    if not isinstance(numel, int) or numel < 0:
        raise CheckpointError(f"storage {key!r} has a bad size {numel!r}")
    offset = 0
    if legacy and pid[5] is not None:  # a view of a root storage (PyTorch < 0.4)
        try:
            _view_key, offset, numel = pid[5]
            offset, numel = int(offset), int(numel)
        except (TypeError, ValueError):
            raise CheckpointError(f"storage {key!r} has a malformed view {pid[5]!r}") from None
    return StorageRef(str(key), storage_type.dtype, numel, offset)


def check_state(state, source):
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{source} holds a {type(state).__name__}, not a state dict (names -> tensors)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, TensorRef):
            raise CheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a "
                "flat state dict (model.state_dict())")
