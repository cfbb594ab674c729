"""Loading the source network's weights from any file the package writes.

Accepted: a Keras `.weights.h5` file (`model.save_weights`), a `.keras` model
file (`model.save`), and a TensorFlow checkpoint of the training engine,
`tf.train.Checkpoint(model=..., optimizer=..., step=...)` (a
`CheckpointManager` directory, whose latest checkpoint is taken, or a
checkpoint prefix). Only the model is restored, and every one of its weights
must be found: a file written for another architecture is an error. Paths may
be TensorFlow filesystem URIs (`gs://...`); Keras files are copied to a local
scratch file first (h5py reads local files only).
"""

import io
import os
import re
import warnings
import zipfile

import h5py
import keras
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from polynet_tf import fileio
from polynet_tf.grow.errors import GrowthError

KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5")
# The weights member of a `.keras` archive (Keras 3 saving format).
KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"


def load_source_weights(model, path):
    """Loads `path` into the built `model`, checking that it fits.

    Args:
        model: the source network, built from the source architecture.
        path: a `.weights.h5` / `.keras` file, a training run's model_dir or
            a TensorFlow checkpoint directory (its latest checkpoint), or a
            checkpoint prefix.

    Returns:
        The path actually read (the latest checkpoint prefix for a directory).

    Raises:
        GrowthError: the file does not exist, has an unknown format, or does
            not match the model (naming the first weight that does not).
    """
    path = os.fspath(path)
    if path.endswith(KERAS_SUFFIXES):
        if not fileio.isfile(path):
            raise GrowthError(path, "no such file.", in_source=True)
        with fileio.local_file_for_reading(path) as local:
            _load_keras_file(model, local, path)
        return path
    if fileio.isdir(path):
        # The run layout: a model_dir's checkpoints/ or the folder itself.
        from polynet_tf import runs  # noqa: PLC0415

        prefix, _ = runs.find_checkpoint(path)
        if prefix is None:
            raise GrowthError(path, "the directory holds no TensorFlow checkpoint "
                                    "(no `checkpoint` file of a CheckpointManager).",
                              in_source=True)
        _restore_tf_checkpoint(model, prefix)
        return prefix
    if fileio.isfile(path + ".index"):
        _restore_tf_checkpoint(model, path)
        return path
    raise GrowthError(
        path,
        "not a .weights.h5 or .keras file, a TensorFlow checkpoint directory or a "
        "checkpoint prefix (no such file, or no `<prefix>.index`).",
        in_source=True,
    )


def _load_keras_file(model, local, path):
    """Loads the local file `local`; errors name `path`, the file the user gave."""
    if local.endswith((".weights.h5", ".keras")):
        _load_strictly(model, local, path)
        return
    try:
        with warnings.catch_warnings():
            # Keras warns per variable on NumPy 2 (__array__ copy keyword).
            warnings.simplefilter("ignore")
            model.load_weights(local)
    except (ValueError, KeyError) as error:
        raise GrowthError(
            path,
            f"it does not match the source architecture `{model.name}` "
            f"({_keras_load_failure(error)}); check --from_architecture and the model "
            "options (width_multiplier, classes, path gates).",
            in_source=True,
        ) from error
    # Keras ignores what the file has beyond the model (e.g. the third block
    # of a 3-way loaded as a 2-way): count the stored weights.
    stored = _stored_weight_count(local)
    if stored is not None and stored != len(model.weights):
        raise GrowthError(
            path,
            f"the file holds {stored} weights but `{model.name}` has "
            f"{len(model.weights)}: it was written for another architecture (check "
            "--from_architecture and the model options).",
            in_source=True,
        )


def _load_strictly(model, local, path):
    """Keras 3 files: the first weight of another shape, or missing, is named."""
    from polynet_tf.weights import weights_file  # noqa: PLC0415

    try:
        weights_file.load_weights_file(model, local)
    except weights_file.WeightsMismatchError as error:
        if error.kind == "shape":
            what = (f"its weight {error.name} has shape {tuple(error.file_shape)} in the file "
                    f"but {tuple(error.model_shape)} in `{model.name}`")
        elif error.kind == "missing":
            what = f"it lacks the weight {error.name} of `{model.name}`"
        else:
            what = f"it holds the weight {error.name} that `{model.name}` lacks"
        raise GrowthError(
            path, f"it does not match the source architecture `{model.name}`: {what}; it "
                  "was written for another architecture (check --from_architecture and the "
                  "model options: width_multiplier, classes, path gates).",
            in_source=True) from error
    except (OSError, EOFError) as error:  # CorruptWeightsFileError included
        raise GrowthError(path, f"the file cannot be read: it is truncated or corrupt "
                                f"({type(error).__name__}: {str(error)[:200]}).",
                          in_source=True) from error


def _stored_weight_count(path):
    """Number of layer weights in a Keras 3 weights file (None: other layout)."""
    if path.endswith(".keras"):
        with zipfile.ZipFile(path) as archive:
            if KERAS_ARCHIVE_WEIGHTS not in archive.namelist():
                return None
            handle = h5py.File(io.BytesIO(archive.read(KERAS_ARCHIVE_WEIGHTS)), "r")
    else:
        handle = h5py.File(path, "r")
    with handle:
        if "layers" not in handle:  # a legacy (Keras 2) .h5 layout
            return None
        datasets = []
        handle["layers"].visititems(
            lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
        return len(datasets)


def _keras_load_failure(error):
    """The gist of a Keras load error: how many objects failed, and the first."""
    text = str(error)
    summary = text.strip().splitlines()[0].split(" Example error")[0] if text.strip() else ""
    path = re.search(r"path=([^,\s>]+)", text)
    shapes = re.search(r"variable\.shape=(\(.*?\)), Received: value\.shape=(\(.*?\))", text)
    missing = re.search(
        r"(Layer '[^']+' expected .*?)(?: during loading)?\. Expected: (\[[^\]]*\])", text)
    if path and shapes:
        return (f"{summary} First: {path.group(1)} has shape {shapes.group(1)} in the "
                f"model but {shapes.group(2)} in the file")
    if missing:
        return f"{summary} First: {missing.group(1)} {missing.group(2)}"
    return summary or repr(error)


def _restore_tf_checkpoint(model, prefix):
    checkpoint = tf.train.Checkpoint(model=model)
    reachable = {id(obj) for obj in tf.train.TrackableView(checkpoint).descendants()}
    unreachable = [w for w in model.weights if id(w) not in reachable]
    if unreachable:
        raise GrowthError(
            unreachable[0].path,
            f"{len(unreachable)} of the {len(model.weights)} weights of `{model.name}` "
            "cannot be reached by tf.train.Checkpoint (Keras 3 does not track layers "
            "kept in Python lists for TensorFlow checkpoints, keras-team/keras#18398), so "
            "no TensorFlow checkpoint of this model holds them; grow from a "
            "`.weights.h5` or `.keras` file instead.",
            in_source=True,
        )
    expected = sum(1 for obj in tf.train.TrackableView(model).descendants()
                   if isinstance(obj, (tf.Variable, keras.Variable)))
    stored = _checkpoint_model_variables(prefix)
    if stored != expected:
        raise GrowthError(
            prefix,
            f"its model holds {stored} variables but `{model.name}` has {expected}: it was "
            "written for another architecture (check --from_architecture and the model "
            "options).",
            in_source=True,
        )
    try:
        status = checkpoint.restore(prefix)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        first = re.search(r"path=([^,\s]+)|name ([^\s:]+)", str(error))
        name = next((g for g in first.groups() if g), prefix) if first else prefix
        raise GrowthError(
            name,
            f"the checkpoint {prefix} does not match the source architecture "
            f"`{model.name}`: {str(error).splitlines()[0][:300]}",
            in_source=True,
        ) from error


def _checkpoint_model_variables(prefix):
    """Number of variables stored under the checkpoint's `model` object."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    reader = tf.train.load_checkpoint(prefix)
    graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    roots = [c.node_id for c in graph.nodes[0].children if c.local_name == "model"]
    if not roots:
        raise GrowthError(prefix, "the checkpoint has no `model` object (it must be "
                                  "written by tf.train.Checkpoint(model=model, ...)).",
                          in_source=True)
    seen, stack = set(), list(roots)
    while stack:
        node_id = stack.pop()
        if node_id in seen:
            continue
        seen.add(node_id)
        stack.extend(c.node_id for c in graph.nodes[node_id].children)
    return sum(
        1 for node_id in seen
        if any(a.name == "VARIABLE_VALUE" for a in graph.nodes[node_id].attributes)
    )
