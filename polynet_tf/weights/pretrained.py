"""`PolyNet(weights="imagenet")`: the published weights, downloaded, checked, converted once.

The released Very Deep PolyNet weights exist publicly only as PyTorch
checkpoints (docs/design.md section 1). On first use the checkpoint is
fetched with `keras.utils.get_file` into a temporary folder inside the Keras
cache (`$KERAS_HOME/models`, default `~/.keras/models`), its hash is checked,
it is moved into the cache, converted to a Keras `.weights.h5` file (written
atomically) and that file is loaded; later calls load the converted file
directly, without the network. Reading the checkpoint needs no PyTorch
(`polynet_tf.weights.torch_format`).

Sources of the metadata below (checked in this package's history, not fetched
at run time):
- pytorchcv: `pytorchcv/models/common/model_metainfos.csv` of pytorchcv 0.0.74
  (row `polynet,95366600,0452,6a1b295dad3f261b48e845f1b283e4eef3ab5a0b,v0.0.96`)
  and `model_store.get_model_file`, which downloads
  `https://github.com/osmr/imgclsmob/releases/download/<tag>/<name>-<error>-<sha1[:8]>.pth.zip`
  and checks the full SHA-1 of the unzipped `.pth`.
- pretrainedmodels: `pretrained_settings["polynet"]` in
  `pretrainedmodels/models/polynet.py` (PyPI 0.7.4 and GitHub master: `polynet-f71d82a5.pth`;
  an older revision named `polynet-c8b99e1f.pth`). The 8 hex digits follow the
  torch.hub convention (start of the file's SHA-256); the package itself never
  checks them. Served over plain http only (so the https source comes first).
"""

import dataclasses
import logging
import os
import tempfile
import urllib.parse

import keras
import tensorflow as tf

from polynet_tf.weights.checkpoint import extract_single_pth, file_digest
from polynet_tf.weights.convert import convert_checkpoint
from polynet_tf.weights.weights_file import (
    CorruptWeightsFileError,
    WeightsMismatchError,
    load_weights_file,
)

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """One public PyTorch checkpoint of a network.

    Attributes:
        layout: checkpoint key layout ("pytorchcv" or "pretrainedmodels").
        url: where it is published; a `.zip` URL holds the `.pth` file.
        filename: name of the `.pth` file (in the cache and in the zip).
        hash_algorithm: "sha1" or "sha256".
        file_hash: hex digest of the `.pth` file, or its first characters.
        reference: where these facts come from.
    """

    layout: str
    url: str
    filename: str
    hash_algorithm: str
    file_hash: str
    reference: str = ""

    def describe_hash(self):
        name = self.hash_algorithm.upper().replace("SHA", "SHA-")
        if len(self.file_hash) < 40:
            return f"{name} starting {self.file_hash}"
        return f"{name} {self.file_hash}"


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    """Published weights of one architecture preset.

    Attributes:
        architecture: preset name.
        name: weights name (the `weights=` argument), e.g. "imagenet".
        converted_filename: name of the converted file in the Keras cache.
        sources: checkpoints to try, in order of preference.
        description: provenance and published accuracy.
    """

    architecture: str
    name: str
    converted_filename: str
    sources: tuple
    description: str = ""


PRETRAINED_WEIGHTS = {
    ("very_deep", "imagenet"): PretrainedWeights(
        architecture="very_deep",
        name="imagenet",
        converted_filename="polynet_very_deep_imagenet.weights.h5",
        sources=(
            CheckpointSource(
                layout="pytorchcv",
                url="https://github.com/osmr/imgclsmob/releases/download/v0.0.96/"
                    "polynet-0452-6a1b295d.pth.zip",
                filename="polynet-0452-6a1b295d.pth",
                hash_algorithm="sha1",
                file_hash="6a1b295dad3f261b48e845f1b283e4eef3ab5a0b",
                reference="pytorchcv 0.0.74 model_metainfos.csv and model_store.py",
            ),
            CheckpointSource(
                layout="pretrainedmodels",
                url="http://data.lip6.fr/cadene/pretrainedmodels/polynet-f71d82a5.pth",
                filename="polynet-f71d82a5.pth",
                hash_algorithm="sha256",
                file_hash="f71d82a5",
                reference="pretrainedmodels 0.7.4 pretrainedmodels/models/polynet.py",
            ),
        ),
        description=(
            "CUHK's released Very Deep PolyNet (Caffe), as ported to PyTorch by "
            "pretrainedmodels and pytorchcv. ImageNet val, centre crop 331 after the "
            "shorter side is resized to 378 (aspect kept): top-1 81.0 / top-5 95.6."
        ),
    ),
}


class PretrainedWeightsError(OSError):
    """The published weights could not be obtained; the message says how to place them by hand."""


class HashMismatchError(PretrainedWeightsError):
    """A downloaded or hand-placed checkpoint whose hash is not the published one."""


def get_pretrained(architecture, name="imagenet"):
    """The `PretrainedWeights` entry of a preset.

    Raises:
        ValueError: no such published weights.
    """
    try:
        return PRETRAINED_WEIGHTS[(architecture, name)]
    except KeyError:
        known = sorted(f"{a}/{n}" for a, n in PRETRAINED_WEIGHTS)
        raise ValueError(
            f"No published {name!r} weights for architecture {architecture!r}; known: {known}"
        ) from None


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


def load_imagenet_weights(model, architecture="very_deep", cache_dir=None,
                          build_full_model=None):
    """Loads the published ImageNet weights into a model built by `PolyNet()`.

    The first time, the checkpoint is converted straight into `model` when it
    has the 1000-class top (and saved from it), else into a new full model.

    Args:
        model: the Keras model (with or without the top).
        architecture: its preset name.
        cache_dir: Keras cache base folder (default `$KERAS_HOME` or `~/.keras`).
        build_full_model: a function returning a new model of `architecture`
            with the 1000-class top; needed when `model` has no top and the
            converted file is not cached yet (`PolyNet()` passes one: this
            package does not build networks itself).

    Returns:
        The path of the converted weights file.

    Raises:
        PretrainedWeightsError: no source could be downloaded (offline).
        HashMismatchError: a checkpoint's hash is not the published one.
    """
    spec = get_pretrained(architecture)
    converted = os.path.join(cache_folder(cache_dir), spec.converted_filename)
    if _is_file(converted):
        _load_whole(model, converted)
        return converted
    if _has_imagenet_top(model):
        return _convert_into_cache(spec, cache_dir, model)
    _convert_into_cache(spec, cache_dir, _full_model(build_full_model, architecture))
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


def imagenet_weights_file(architecture="very_deep", name="imagenet", cache_dir=None,
                          build_full_model=None):
    """Path of the converted weights in the cache, made on first use.

    Args:
        architecture: preset name.
        name: weights name.
        cache_dir: Keras cache base folder (default `$KERAS_HOME` or `~/.keras`).
        build_full_model: as in `load_imagenet_weights`; needed when the
            file is not cached yet.

    Returns:
        Path of the `.weights.h5` file.

    Raises:
        See `load_imagenet_weights`.
    """
    spec = get_pretrained(architecture, name)
    converted = os.path.join(cache_folder(cache_dir), spec.converted_filename)
    if _is_file(converted):
        return converted
    return _convert_into_cache(spec, cache_dir, _full_model(build_full_model, architecture))


def _full_model(build_full_model, architecture):
    if build_full_model is None:
        raise ValueError(
            f"The converted {architecture} weights are not cached yet, and converting them "
            "needs a model with the 1000-class top: pass build_full_model, e.g. "
            f"lambda: PolyNet(architecture={architecture!r}, weights=None), or call "
            f"PolyNet(architecture={architecture!r}, weights='imagenet') once.")
    return build_full_model()


def _is_file(path):
    return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def _has_imagenet_top(model):
    try:
        head = model.get_layer("predictions")
    except ValueError:
        return False
    return getattr(head, "units", None) == 1000


def _convert_into_cache(spec, cache_dir, target):
    """Obtains a checked checkpoint, converts it into `target` and saves that; returns the path."""
    folder = cache_folder(cache_dir)
    converted = os.path.join(folder, spec.converted_filename)
    tf.io.gfile.makedirs(folder)
    source, checkpoint = _obtain_checkpoint(spec, folder, converted)
    _LOG.info("Converting %s (%s layout) to %s", checkpoint, source.layout, converted)
    return convert_checkpoint(checkpoint, converted, source.layout, target)


def _obtain_checkpoint(spec, folder, converted):
    """A hash-checked checkpoint in `folder`: one placed by hand, else a download."""
    failures = []
    for source in spec.sources:
        path = os.path.join(folder, source.filename)
        if _is_file(path):
            digest = file_digest(path, source.hash_algorithm)
            if digest.startswith(source.file_hash):
                return source, path
            failures.append((source, path, f"the file there has {source.hash_algorithm} "
                                           f"{digest}, not the published {source.describe_hash()}",
                             True))
    for source in spec.sources:
        try:
            return source, _download(source, folder)
        except HashMismatchError as error:
            failures.append((source, source.url, str(error), True))
        except Exception as error:  # pylint: disable=broad-except  # get_file raises Exception
            failures.append((source, source.url, f"{type(error).__name__}: {error}", False))
    raise _unavailable_error(spec, folder, converted, failures)


def _download(source, folder):
    """get_file into a temporary folder, check the hash, move into `folder`."""
    staging = tempfile.mkdtemp(prefix=".polynet-download-", dir=folder)
    try:
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
        final = os.path.join(folder, source.filename)
        tf.io.gfile.rename(checkpoint, final, overwrite=True)
        return final
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)


def _unavailable_error(spec, folder, converted, failures):
    tried = "\n".join(f"  - {where}: {why}" for _, where, why, _ in failures)
    by_hand = "\n".join(
        f"  - {source.url}\n      -> {os.path.join(folder, source.filename)}"
        + ("  (unzip it)" if source.url.endswith(".zip") else "")
        + f"; {source.describe_hash()}"
        for source in spec.sources
    )
    first = spec.sources[0]
    message = (
        f"Could not obtain the {spec.name} weights of PolyNet {spec.architecture!r}:\n{tried}\n"
        "To install them by hand, download one of these files on a machine with internet "
        f"access and put it at the path shown:\n{by_hand}\n"
        f"then call PolyNet(weights={spec.name!r}) again: it checks the hash and converts the "
        "file once. Or convert a checkpoint yourself and put the result at "
        f"{converted}:\n  python -m polynet_tf.convert_weights --source {first.layout} "
        f"--checkpoint {first.filename} --output {converted}"
    )
    error_type = HashMismatchError if any(bad for *_, bad in failures) else PretrainedWeightsError
    return error_type(message)
