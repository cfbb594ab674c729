"""Strict loading of Keras weights files: the file must fit the model exactly.

`model.load_weights` only warns, or says nothing, when a file holds weights the
model lacks (a file of a deeper or wider network loads "successfully", the
rest ignored), and its errors for nested layers do not say which weight
differs. `load_weights_file` compares the file's weights with the model's
first, by their paths in the file (Keras's own layout, with the layer names
Keras records beside them), and names the first weight that is missing,
unexpected or of another shape; only a file that fits is loaded.

Paths are read through `tf.io.gfile` (URIs such as `gs://...` are copied to
a local temporary file first, as Keras itself does).
"""

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
import warnings
import zipfile

import h5py
import tensorflow as tf

from polynet_tf.weights.hdf5_heaps import HeapLoopError, check_global_heaps

_KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"


class CorruptWeightsFileError(OSError):
    """A weights file that h5py cannot read (truncated, corrupt, not HDF5)."""


class WeightsMismatchError(ValueError):
    """A weights file that does not fit the model, naming the first differing weight.

    Attributes:
        key: path of the first differing weight in the file layout.
        name: the same weight with the layer names Keras records.
        kind: "missing" (in the model, not the file), "unexpected" (in the
            file, not the model) or "shape".
        file_shape: its shape in the file (None when missing).
        model_shape: its shape in the model (None when unexpected).
    """

    def __init__(self, message, key, name, kind, file_shape, model_shape):
        super().__init__(message)
        self.key, self.name, self.kind = key, name, kind
        self.file_shape, self.model_shape = file_shape, model_shape


def exists(path):
    """Whether a weights file exists (a path or URI)."""
    return tf.io.gfile.exists(os.fspath(path))


def load_weights_file(model, path, allow_unused=()):
    """Loads a `.weights.h5` (or `.keras`) file into `model`, only if it fits exactly.

    Args:
        model: a built Keras model.
        path: the file, a path or URI.
        allow_unused: names of top-level layers of the file whose weights may
            stay unused when the model has no layer of that name, e.g.
            ("predictions",) to load a file with the classifier into a model
            built without it (`include_top=False`). Every other weight must fit.

    Returns:
        The path.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a `.weights.h5` or `.keras` file.
        CorruptWeightsFileError: the file cannot be read (truncated or corrupt).
        WeightsMismatchError: a weight missing from the file, one the model
            lacks, or one of another shape; the first is named.
    """
    path = os.fspath(path)
    if not path.endswith((".weights.h5", ".keras")):
        raise ValueError(
            "A weights file must be a Keras `.weights.h5` file (written by "
            f"`model.save_weights`) or a `.keras` archive. Received: {path}")
    if not exists(path):
        raise FileNotFoundError(f"Weights file not found: {path}")
    with _local_h5(path) as local:
        order = _layer_order(model)
        found = {key: value for key, value in _listing(local, path).items()
                 if _top_layer(value[1]) in order or _top_layer(value[1]) not in allow_unused}
        if _shapes(found) != sorted(tuple(v.shape) for v in model.weights):
            raise _mismatch(path, found, _model_listing(model), order)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.load_weights(local)
            except ValueError as error:
                raise _mismatch(path, found, _model_listing(model), order, error) from error
            except (OSError, RuntimeError, KeyError) as error:  # h5py read errors
                raise _corrupt(path, error) from error
        for warning in caught:
            if "Skipping" in str(warning.message):  # a group Keras did not find
                raise _mismatch(path, found, _model_listing(model), order, warning.message)
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
    return path


@contextlib.contextmanager
def _local_h5(path):
    """A local HDF5 file with the weights: the file itself, or a temporary copy."""
    remote = "://" in path and not path.startswith("file://")
    if not remote and path.endswith(".weights.h5"):
        yield path[len("file://"):] if path.startswith("file://") else path
        return
    folder = tempfile.mkdtemp(prefix="polynet-weights-")
    try:
        local = os.path.join(folder, "model.weights.h5")
        if path.endswith(".keras"):
            try:
                with tf.io.gfile.GFile(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
                    with archive.open(_KERAS_ARCHIVE_WEIGHTS) as src, open(local, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, KeyError, EOFError) as error:
                raise _corrupt(path, error) from error
        else:
            tf.io.gfile.copy(path, local, overwrite=True)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _corrupt(path, error):
    return CorruptWeightsFileError(
        f"{path} is not a readable Keras weights file ({type(error).__name__}: {error}); it is "
        "truncated or corrupt. Delete it, then convert it again (python -m "
        "polynet_tf.convert_weights ...) or save it again with model.save_weights().")


def _listing(local, source):
    """{path in the file: (shape, readable name)} of every weight of a `.weights.h5` file."""
    try:
        # Before h5py reads the layer names: a corrupt heap would hang it.
        check_global_heaps(local)
        with h5py.File(local, "r") as handle:
            names = {}
            weights = {}

            def visit(name, item):
                if isinstance(name, bytes):
                    # h5py gives a name that is not UTF-8 as bytes: no Keras file has one.
                    raise ValueError(f"an object name that is not UTF-8: {name!r}")
                if isinstance(item, h5py.Dataset):
                    weights[name] = tuple(item.shape)
                elif name.endswith("vars") and "name" in item.attrs:
                    names[posixpath.dirname(name)] = str(item.attrs["name"])

            handle.visititems(visit)
    except (OSError, RuntimeError, KeyError, ValueError, HeapLoopError) as error:
        raise _corrupt(source, error) from error
    return {key: (shape, _readable(key, names)) for key, shape in weights.items()}


def _readable(key, names):
    """'layers/poly_inception_module_3/block_0/vars/1' -> 'stage_b_0/block_0 [1]'."""
    parts = key.split("/")
    shown = []
    for depth in range(1, len(parts) - 1):
        prefix = "/".join(parts[:depth])
        if parts[depth - 1] == "layers" and depth == 1:
            continue
        shown.append(names.get(prefix, parts[depth - 1]))
    return f"{'/'.join(shown) or '<model>'} [{parts[-1]}]"


def _shapes(listing):
    return sorted(shape for shape, _ in listing.values())


def _model_listing(model):
    """The model's weights as Keras lays them out in a file: saved to a temporary file, read."""
    folder = tempfile.mkdtemp(prefix="polynet-layout-")
    try:
        local = os.path.join(folder, "model.weights.h5")
        model.save_weights(local)
        return _listing(local, local)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _layer_order(model):
    return {layer.name: index for index, layer in enumerate(model.layers)}


def _top_layer(readable):
    """'stage_b_0/block_0 [1]' -> 'stage_b_0'."""
    return readable.split("/")[0].split(" ")[0]


def _sort_key(key, listing, order):
    """The model's layer order first (stem before head), then the path with numbers as numbers."""
    return (order.get(_top_layer(listing[key][1]), len(order)),
            [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)])


def _mismatch(path, found, expected, order, keras_said=None):
    differences = []
    both = {**found, **expected}
    for key in sorted(both, key=lambda k: _sort_key(k, both, order)):
        file_shape = found[key][0] if key in found else None
        model_shape = expected[key][0] if key in expected else None
        if file_shape != model_shape:
            name = (expected.get(key) or found.get(key))[1]
            kind = ("missing" if file_shape is None else
                    "unexpected" if model_shape is None else "shape")
            differences.append((key, name, kind, file_shape, model_shape))
    if not differences:
        # Same layout, yet Keras could not read it: the values themselves are
        # unreadable (a mutated dtype, say), so the file is corrupt.
        raise _corrupt(path, keras_said)
    key, name, kind, file_shape, model_shape = differences[0]
    loaded = "; nothing was loaded from it" if keras_said is None else ""
    first = {
        "missing": f"the model's weight {name} (shape {model_shape}) is missing from the file",
        "unexpected": f"the file has a weight {name} (shape {file_shape}) that the model "
                      "does not have",
        "shape": f"weight {name} has shape {file_shape} in the file but {model_shape} in "
                 "the model" + (f" (the file's {found[key][1]})" if kind == "shape"
                                and found[key][1] != name else ""),
    }[kind]
    counts = {k: sum(d[2] == k for d in differences) for k in ("missing", "unexpected", "shape")}
    return WeightsMismatchError(
        f"The weights file {path} does not fit this model{loaded}. First "
        f"difference: {first} (file layout path {key}). In all: {counts['missing']} missing, "
        f"{counts['unexpected']} unexpected, {counts['shape']} of another shape. Build the "
        "model with the architecture, width and head (include_top, classes) the file was "
        "saved with.", key, name, kind, file_shape, model_shape)
