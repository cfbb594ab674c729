"""Published weights (`PolyNet(weights="imagenet")`): downloaded, checked, converted once.

The released Very Deep PolyNet weights exist publicly only as PyTorch
checkpoints (docs/design.md section 1). What to fetch, and the hashes to
check, is the preset's `PretrainedConfig` (`polynet_tf.models.architectures`),
which the caller passes in: this package does not know the presets. On first
use the checkpoint is fetched with `keras.utils.get_file` into a temporary
folder inside the Keras cache (`$KERAS_HOME/models`, default
`~/.keras/models`), its hash is checked, it is moved into the cache, converted
to a Keras `.weights.h5` file (written atomically) and that file is loaded;
later calls load the converted file directly, without the network. Reading
the checkpoint needs no PyTorch (`polynet_tf.weights.torch_format`).
"""

import logging
import os
import tempfile
import urllib.parse

import keras
import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.weights.checkpoint import extract_single_pth, file_digest
from polynet_tf.weights.convert import convert_checkpoint
from polynet_tf.weights.weights_file import (
    CorruptWeightsFileError,
    WeightsMismatchError,
    load_weights_file,
)

_LOG = logging.getLogger(__name__)


class PretrainedWeightsError(OSError):
    """The published weights could not be obtained; the message says how to place them by hand."""


class HashMismatchError(PretrainedWeightsError):
    """A downloaded or hand-placed checkpoint whose hash is not the published one."""


def cache_folder(cache_dir=None):
    """The Keras model cache: `<cache_dir or $KERAS_HOME or ~/.keras>/models`.

    Like `keras.utils.get_file`, falls back to `/tmp/.keras` when the home
    folder is not writable.
    """
    base = cache_dir or os.environ.get("KERAS_HOME")
    if not base:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else tempfile.gettempdir(), ".keras")
    base = os.path.expanduser(base)
    if os.path.isdir(base) and not os.access(base, os.W_OK):
        base = os.path.join(tempfile.gettempdir(), ".keras")
    return os.path.join(base, "models")


def load_pretrained_weights(model, pretrained, architecture, cache_dir=None,
                            build_full_model=None):
    """Loads a preset's published weights into a model built by `PolyNet()`.

    The first time, the checkpoint is converted straight into `model` when it
    has the full classifier (and saved from it), else into a new full model.

    Args:
        model: the Keras model (with or without the top).
        pretrained: the preset's `PretrainedConfig` (its `name`,
            `num_classes`, `sources` and `converted_filename` are read).
        architecture: the preset's name, for messages.
        cache_dir: Keras cache base folder (default `$KERAS_HOME` or `~/.keras`).
        build_full_model: a function returning a new model of the preset
            with the full classifier; needed when `model` has no top and the
            converted file is not cached yet (`PolyNet()` passes one: this
            package does not build networks itself).

    Returns:
        The path of the converted weights file.

    Raises:
        PretrainedWeightsError: no source could be downloaded (offline).
        HashMismatchError: a checkpoint's hash is not the published one.
        ValueError: `pretrained` has no sources or converted file name.
    """
    converted = _converted_path(pretrained, architecture, cache_dir)
    if _is_file(converted):
        _load_whole(model, converted)
        return converted
    if _has_full_top(model, pretrained.num_classes):
        return _convert_into_cache(pretrained, architecture, cache_dir, model)
    _convert_into_cache(pretrained, architecture, cache_dir,
                        _full_model_builder(build_full_model, architecture))
    _load_whole(model, converted)
    return converted


def _load_whole(model, path):
    """Loads the converted file strictly; a stale or damaged one is refused with a remedy.

    A converted file from another version of the layers, or one cut short,
    must not load half-way.
    """
    try:
        # The converted file has the 1000-class top; a model without it leaves it unused.
        load_weights_file(model, path, allow_unused=("predictions",))
    except (WeightsMismatchError, CorruptWeightsFileError) as error:
        raise PretrainedWeightsError(
            f"The converted weights file {path} in the Keras cache cannot be used (made by "
            "another version of polynet-tf, or damaged). Delete it and call again: it is "
            f"converted anew from the checkpoint. {error}") from error


def pretrained_weights_file(pretrained, architecture, cache_dir=None,
                            build_full_model=None):
    """Path of a preset's converted published weights in the cache, made on first use.

    Args:
        pretrained: the preset's `PretrainedConfig`.
        architecture: the preset's name, for messages.
        cache_dir: Keras cache base folder (default `$KERAS_HOME` or `~/.keras`).
        build_full_model: as in `load_pretrained_weights`; needed when the
            file is not cached yet.

    Returns:
        Path of the `.weights.h5` file.

    Raises:
        See `load_pretrained_weights`.
    """
    converted = _converted_path(pretrained, architecture, cache_dir)
    if _is_file(converted):
        return converted
    return _convert_into_cache(pretrained, architecture, cache_dir,
                               _full_model_builder(build_full_model, architecture))


def _converted_path(pretrained, architecture, cache_dir):
    if not pretrained.sources or not pretrained.converted_filename:
        raise ValueError(
            f"The {pretrained.name!r} weights of {architecture!r} name no published "
            "checkpoint (`sources`) or no `converted_filename` in their PretrainedConfig.")
    return os.path.join(cache_folder(cache_dir), pretrained.converted_filename)


def _full_model_builder(build_full_model, architecture):
    if build_full_model is None:
        raise ValueError(
            f"The converted {architecture} weights are not cached yet, and converting them "
            "needs a model with the full classifier: pass build_full_model, e.g. "
            f"lambda: PolyNet(architecture={architecture!r}, weights=None), or call "
            f"PolyNet(architecture={architecture!r}, weights='imagenet') once.")
    return build_full_model


def _is_file(path):
    return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _has_full_top(model, num_classes):
    try:
        head = model.get_layer("predictions")
    except ValueError:
        return False
    return getattr(head, "units", None) == num_classes


def _convert_into_cache(pretrained, architecture, cache_dir, target):
    """Obtains a checked checkpoint, converts it into `target` and saves that; returns the path.

    `target` is the model or a function building it, called only once the
    checkpoint is in hand and read (a full-size network built for a download
    that fails is wasted).
    """
    folder = cache_folder(cache_dir)
    converted = os.path.join(folder, pretrained.converted_filename)
    tf.io.gfile.makedirs(folder)
    source, checkpoint = _obtain_checkpoint(pretrained, architecture, folder, converted)
    _LOG.info("Converting %s (%s layout) to %s", checkpoint, source.layout, converted)
    return convert_checkpoint(checkpoint, converted, source.layout, target)


def _obtain_checkpoint(pretrained, architecture, folder, converted):
    """A hash-checked checkpoint in `folder`: one placed by hand, else a download."""
    failures = []
    for source in pretrained.sources:
        path = os.path.join(folder, source.filename)
        if _is_file(path):
            digest = file_digest(path, source.hash_algorithm)
            if digest.startswith(source.file_hash):
                return source, path
            failures.append((source, path, f"the file there has {source.hash_algorithm} "
                                           f"{digest}, not the published {source.describe_hash()}",
                             True))
    for source in pretrained.sources:
        try:
            return source, _download(source, folder)
        except HashMismatchError as error:
            failures.append((source, source.url, str(error), True))
        except Exception as error:  # pylint: disable=broad-except  # get_file raises Exception
            failures.append((source, source.url, f"{type(error).__name__}: {error}", False))
    raise _unavailable_error(pretrained, architecture, folder, converted, failures)


def _download(source, folder):
    """get_file into a temporary folder, check the hash, move into `folder`."""
    final = os.path.join(folder, source.filename)
    with fileio.temporary_directory_beside(final) as staging:
        fname = os.path.basename(urllib.parse.urlsplit(source.url).path)
        fetched = keras.utils.get_file(
            fname=fname, origin=source.url, cache_dir=staging, cache_subdir=""
        )
        checkpoint = extract_single_pth(fetched, staging) if fname.endswith(".zip") else fetched
        digest = file_digest(checkpoint, source.hash_algorithm)
        if not digest.startswith(source.file_hash):
            raise HashMismatchError(
                f"downloaded file has {source.hash_algorithm} {digest}, not the published "
                f"{source.describe_hash()} (deleted)"
            )
        fileio.move_into_place(checkpoint, final, overwrite=True)
    return final


def _unavailable_error(pretrained, architecture, folder, converted, failures):
    tried = "\n".join(f"  - {where}: {why}" for _, where, why, _ in failures)
    by_hand = "\n".join(
        f"  - {source.url}\n      -> {os.path.join(folder, source.filename)}"
        + ("  (unzip it)" if source.url.endswith(".zip") else "")
        + f"; {source.describe_hash()}"
        for source in pretrained.sources
    )
    first = pretrained.sources[0]
    message = (
        f"Could not obtain the {pretrained.name} weights of PolyNet {architecture!r}:\n{tried}\n"
        "To install them by hand, download one of these files on a machine with internet "
        f"access and put it at the path shown:\n{by_hand}\n"
        f"then call PolyNet(weights={pretrained.name!r}) again: it checks the hash and "
        "converts the file once. Or convert a checkpoint yourself and put the result at "
        f"{converted}:\n  python -m polynet_tf.convert_weights --source {first.layout} "
        f"--checkpoint {first.filename} --output {converted}"
    )
    error_type = HashMismatchError if any(bad for *_, bad in failures) else PretrainedWeightsError
    return error_type(message)
