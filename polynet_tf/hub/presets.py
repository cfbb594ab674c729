"""Saving and loading PolyNet presets: whole or not at all, on any filesystem, with clear errors.

keras-hub writes a preset with Python's `open` into the directory it is
given, file by file. Here the files are written to a temporary directory
beside the destination (or to local scratch space for a `gs://`-style URI,
then copied through `tf.io.gfile`) and moved into place last, `config.json`
(what makes a directory a preset) after all other files. Loading checks the
directory's `config.json` before keras-hub does, and refuses weight files
that do not fit every weight (Keras itself ignores a file's extra entries).
"""

import contextlib
import json
import os
import shutil
import tempfile
import threading
import warnings

import keras
import keras_hub
import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.weights.weights_file import (
    CorruptWeightsFileError,
    WeightsMismatchError,
    load_weights_file,
)

CONFIG_FILE = "config.json"
TASK_CONFIG_FILE = "task.json"
# Schemes keras-hub downloads from itself (no `tf.io.gfile` look-ahead possible).
_REMOTE_HANDLES = ("kaggle", "hf", "modelscope")
_REMEDY = ("Write the preset again with `save_to_preset(dir)` or "
           "`python -m polynet_tf.hub.make_preset`.")


class PresetError(ValueError):
    """A preset that is not a PolyNet preset, or is incomplete or damaged."""


# True while `save_preset` stages a task: keras-hub then calls the backbone's
# `save_to_preset` on the staging directory, which must be written directly.
_STATE = threading.local()


def _is_staging():
    return getattr(_STATE, "staging", False)


def save_preset(model, preset_dir, max_shard_size=10):
    """Writes a `PolyNetBackbone` or `PolyNetImageClassifier` as a keras-hub preset.

    A backbone's preset also holds its default image converter
    (`default_image_converter()`: the `PolyNetImageConverter` of its input
    contract), so `ImageClassifier.from_preset(dir, num_classes=...)` finds a
    preprocessor. An existing preset at `preset_dir` is replaced as a whole
    (never merged: a stale `task.json` would otherwise be loaded with new
    weights).

    Args:
        model: the backbone or task.
        preset_dir: a directory path or URI (`gs://...`, `file://...`).
        max_shard_size: keras-hub's weight shard size in GB.

    Returns:
        `preset_dir`.

    Raises:
        FileExistsError: `preset_dir` exists and is a non-empty directory
            that is not a preset (nothing there is touched).
    """
    preset_dir = os.fspath(preset_dir)
    if _is_staging():  # keras-hub saving a task calls the backbone's save_to_preset.
        _write(model, preset_dir, max_shard_size)
        return preset_dir
    if fileio.isdir(preset_dir) and fileio.listdir(preset_dir) and not fileio.exists(
            fileio.join(preset_dir, CONFIG_FILE)):
        raise FileExistsError(
            f"{preset_dir!r} is a non-empty directory that is not a keras-hub preset (no "
            f"{CONFIG_FILE}); saving would replace it. Choose a new or empty directory."
        )
    if fileio.isfile(preset_dir):
        raise FileExistsError(f"{preset_dir!r} is a file; a preset is a directory.")
    _STATE.staging = True
    try:
        with fileio.atomic_output(preset_dir, overwrite=True, last=(CONFIG_FILE,)) as staged:
            if fileio.is_local(staged):
                _write(model, staged, max_shard_size)
            else:
                _write_remote(model, staged, max_shard_size)
    finally:
        _STATE.staging = False
    return preset_dir


def _write(model, local_dir, max_shard_size):
    """keras-hub's own saving into a local directory."""
    os.makedirs(local_dir, exist_ok=True)
    if isinstance(model, keras_hub.models.Backbone):
        keras_hub.models.Backbone.save_to_preset(model, local_dir, max_shard_size=max_shard_size)
        if not os.path.exists(os.path.join(local_dir, "image_converter.json")):
            model.default_image_converter().save_to_preset(local_dir)
    else:
        keras_hub.models.Task.save_to_preset(model, local_dir, max_shard_size=max_shard_size)


def _write_remote(model, remote_dir, max_shard_size):
    scratch = tempfile.mkdtemp(prefix="polynet_tf-preset-")
    try:
        _write(model, scratch, max_shard_size)
        for folder, _, names in os.walk(scratch):
            relative = os.path.relpath(folder, scratch)
            target = remote_dir if relative == "." else fileio.join(remote_dir, relative)
            fileio.makedirs(target)
            for name in names:
                tf.io.gfile.copy(os.path.join(folder, name), fileio.join(target, name),
                                 overwrite=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _read_config(preset):
    """`config.json` of a directory or URI preset; None for hub handles."""
    if not isinstance(preset, (str, os.PathLike)):
        raise PresetError(f"A preset must be a directory path or a handle. Received: {preset!r}")
    preset = os.fspath(preset)
    if fileio.scheme(preset) in _REMOTE_HANDLES:
        return None
    path = fileio.join(preset, CONFIG_FILE)
    if not fileio.isdir(preset):
        raise PresetError(f"Preset directory {preset!r} does not exist.")
    if not fileio.exists(path):
        raise PresetError(
            f"{preset!r} has no {CONFIG_FILE}: it is not a keras-hub preset (or its writing "
            f"was interrupted). {_REMEDY}"
        )
    try:
        config = fileio.read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PresetError(f"{path} is not valid JSON ({error}): the preset is damaged. "
                          f"{_REMEDY}") from None
    if not isinstance(config, dict) or "registered_name" not in config:
        raise PresetError(f"{path} is not a Keras-serialized backbone config. {_REMEDY}")
    return config


@contextlib.contextmanager
def clear_errors(preset, backbone_cls):
    """Checks that `preset` holds a `backbone_cls`, and rewords loading failures.

    Raises:
        PresetError: another model's preset, a missing or damaged file.
    """
    config = _read_config(preset)
    if config is not None:
        found = keras.saving.get_registered_object(config["registered_name"])
        if found is None or not issubclass(found, backbone_cls):
            raise PresetError(
                f"The preset {os.fspath(preset)!r} holds a {config['registered_name']!r} "
                f"backbone, not a {backbone_cls.__name__}. Load it with "
                "`keras_hub.models.Backbone.from_preset` (or the task of its own model), "
                f"or pick a PolyNet preset."
            )
    try:
        yield
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PresetError(f"A JSON file of preset {os.fspath(preset)!r} is damaged ({error}). "
                          f"{_REMEDY}") from None
    except FileNotFoundError as error:
        raise PresetError(f"Preset {os.fspath(preset)!r} is incomplete: {error} {_REMEDY}") \
            from None


def load_backbone_weights(model, filepath):
    """Loads a `.weights.h5` file into `model` only if it fits every weight exactly.

    Raises:
        PresetError: a weight missing, extra or of another shape (the first is
            named), or a truncated or corrupt file.
    """
    try:
        load_weights_file(model, filepath)
    except (WeightsMismatchError, CorruptWeightsFileError) as error:
        raise PresetError(f"{error} {_REMEDY}") from error


def load_weights_strictly(load, filepath):
    """Runs `load()` (a Keras weight load), turning Keras's errors and warnings into errors.

    Args:
        load: a callable that loads `filepath` into a model.
        filepath: the weights file, named in the messages.

    Raises:
        PresetError: unreadable file, or weights that do not fit.
    """
    what = f"The weights file {os.fspath(filepath)}"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load()
    except OSError as error:
        raise PresetError(f"{what} cannot be read ({error}): it is damaged or truncated. "
                          f"{_REMEDY}") from None
    except ValueError as error:
        raise PresetError(f"{what} does not fit the model its config describes: "
                          f"{str(error)[:2000]} {_REMEDY}") from None
    for warning in caught:
        if "Skipping" in str(warning.message):
            raise PresetError(f"{what} does not fit the model: {warning.message} {_REMEDY}")
        warnings.warn_explicit(warning.message, warning.category, warning.filename,
                               warning.lineno)
