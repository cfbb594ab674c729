"""Writes a servable PolyNet: `BASE/NAME/VERSION/` in TF Serving's layout.

The version directory is written under a temporary name beside it
(`.tmp-<pid>-<random>-VERSION`: TF Serving only loads directories named by an
integer) and renamed when complete: the SavedModel,
`assets.extra/polynet_export.json` and the warm-up requests are written, then
the SavedModel is loaded back and every warm-up request is run through it,
its probabilities checked against the Keras model. Any failure removes the
temporary directory. An existing version is replaced only with
`overwrite=True`, and never leaves a moment without it: the new version is
completed (written and checked) under the next free integer, the old one is
moved to a hidden name, the new one renamed to the version, the old one
deleted. TF Serving, polling the model directory, always finds a whole
integer version (with the `latest` policy it may load the staged number for
a moment); a failure puts the old version back and removes the new one.

`output_base` may be any TensorFlow filesystem URI (`gs://bucket/models`).
Locally and on HDFS the rename is one atomic step, so a version directory
that exists is whole. On object stores (GCS, S3) a directory rename is a
copy, object by object: the files are moved one at a time with
`saved_model.pb` last, so the version directory is not a SavedModel until
everything else is in place (`polynet_tf.fileio.move_into_place`); a server
that polls during the move can fail to load it once, and TF Serving retries
failed loads.
"""

import dataclasses
import datetime
import re
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from polynet_tf import fileio
from polynet_tf.models import folding
from polynet_tf.serving import preprocessing as serving_preprocessing
from polynet_tf.serving import signatures, warmup
from polynet_tf.version import __version__

METADATA_FILENAME = "polynet_export.json"
METADATA_FORMAT = "polynet_tf.export"
# Largest difference of probabilities between the written SavedModel and the
# Keras model tolerated by the check after writing (float32 arithmetic in a
# different graph).
VERIFY_TOLERANCE = 1e-5
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# What makes a directory a SavedModel: moved last where a rename is a copy.
_LAST_FILES = ("saved_model.pb",)


class ExportError(RuntimeError):
    """The export stopped; nothing was left in the output directory."""


@dataclasses.dataclass
class ExportResult:
    """What `export_saved_model` wrote.

    Attributes:
      path: the version directory.
      version: its integer version.
      signatures: signature names.
      metadata: the contents of `assets.extra/polynet_export.json`.
    """

    path: str
    version: int
    signatures: List[str]
    metadata: Dict


def existing_versions(model_dir: str) -> List[int]:
    """Integer versions present in `BASE/NAME` (what TF Serving would load), sorted."""
    if not fileio.isdir(model_dir):
        return []
    return sorted(int(name) for name in fileio.listdir(model_dir)
                  if name.isdigit() and fileio.isdir(fileio.join(model_dir, name)))


def next_version(model_dir: str) -> int:
    """One more than the highest existing version; 1 for a new model."""
    versions = existing_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def _check_names(output_base, model_name, version):
    if not output_base:
        raise ValueError("output_base must name a directory, e.g. /models or gs://bucket/models.")
    if not model_name or not _MODEL_NAME.match(model_name):
        raise ValueError(
            f"model_name must be letters, digits, '_', '-' or '.' (it is a directory and the "
            f"name clients use); received {model_name!r}.")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ValueError(f"version must be a positive integer; received {version!r}.")


def export_saved_model(
    model: keras.Model,
    output_base: str,
    model_name: str,
    options: signatures.SignatureOptions,
    version: Optional[int] = None,
    overwrite: bool = False,
    warmup_images: Optional[Sequence[bytes]] = None,
    description: Optional[Dict] = None,
    verify: bool = True,
    fold_batch_norms: Optional[bool] = None,
) -> ExportResult:
    """Exports `model` with every serving signature, ready for TF Serving.

    Args:
      model: a Keras PolyNet with the top.
      output_base: the directory TF Serving watches (`--model_base_path`'s parent);
        a local path or any TensorFlow filesystem URI (`gs://bucket/models`).
      model_name: the model's name (a directory under `output_base`).
      options: `signatures.SignatureOptions` (input contract, class names, top_k,
        multi-crop protocol).
      version: integer version; None takes the next free one.
      overwrite: replace an existing `version`.
      warmup_images: encoded images for the warm-up requests; None: a
        synthetic JPEG.
      description: extra entries for the metadata file (architecture, source).
      verify: load the written SavedModel and check it against `model`.
      fold_batch_norms: serve `polynet_tf.models.fold_batch_norms(model)`: the
        same function with every BatchNorm folded into its conv (a third fewer
        ops, about a quarter more weights for the released network); the check
        still compares against `model` itself. None (the default): fold a
        model that `fold_batch_norms` takes, serve any other (already folded,
        or not made by `PolyNet()`) as it is. True: fold, or raise if the model
        cannot be folded. False: serve `model` as it is.

    Returns:
      An `ExportResult`.

    Raises:
      ValueError: bad names or options, or `fold_batch_norms=True` for a model
        `fold_batch_norms` does not take.
      FileExistsError: the version exists and `overwrite` is False.
      ExportError: writing or checking failed (the cause is chained); nothing
        was left behind.
    """
    _check_names(output_base, model_name, version)
    served = served_model(model, fold_batch_norms)
    archive = signatures.build_export_archive(served, options)
    model_dir = fileio.join(output_base, model_name)
    fileio.makedirs(model_dir)
    version = next_version(model_dir) if version is None else version
    final_path = fileio.join(model_dir, str(version))
    if fileio.exists(final_path) and not overwrite:
        raise FileExistsError(
            f"Version {version} of {model_name!r} already exists at {final_path!r}; pass "
            "--overwrite to replace it, or leave --version out to write the next one.")
    names = signatures.signature_names(options.multicrop is not None,
                                       options.variable_size_signatures)
    # Replacing a version: the new one is first completed under the next free
    # integer, so that a whole version directory exists at every moment.
    replacing = fileio.exists(final_path)
    staged_path = (fileio.join(model_dir, str(next_version(model_dir))) if replacing
                   else final_path)
    try:
        # A non-integer temporary name (TF Serving ignores it), deleted on failure;
        # moved into place at the end.
        with fileio.atomic_output(staged_path, overwrite=False,
                                  last=_LAST_FILES) as temp_path:
            archive.write_out(temp_path, verbose=False)
            metadata = _metadata(
                model_name, version, options, names,
                {"batch_norms_folded": folding.is_folded(served), **(description or {})})
            fileio.write_json(fileio.join(temp_path, warmup.WARMUP_DIRNAME, METADATA_FILENAME),
                              metadata)
            requests = warmup_requests(options, warmup_images)
            warmup.write_warmup_requests(temp_path, requests, model_name)
            if verify:
                verify_export(temp_path, model, options, requests)
        if replacing:
            _replace_version(staged_path, final_path)
    except BaseException as error:
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        raise ExportError(
            f"Exporting {model_name!r} version {version} failed, nothing was written: "
            f"{type(error).__name__}: {_first_lines(error)}") from error
    return ExportResult(final_path, version, names, metadata)


def _replace_version(staged_path, final_path):
    """Puts the complete version `staged_path` in place of `final_path`.

    Order: the old version moves to a hidden name (the staged one, an integer
    directory, is complete and servable meanwhile), the staged one takes its
    name, the old one is deleted. On failure the old version is put back and
    the staged one removed: nothing changed.
    """
    aside = fileio.temporary_name(final_path)
    fileio.move_into_place(final_path, aside)
    try:
        fileio.move_into_place(staged_path, final_path, last=_LAST_FILES)
    except BaseException:
        fileio.move_into_place(aside, final_path)
        fileio.remove_tree(staged_path)
        raise
    fileio.remove_tree(aside)


def served_model(model: keras.Model, fold_batch_norms: Optional[bool]) -> keras.Model:
    """`model` with its BatchNorms folded, or as it is (see `export_saved_model`).

    Raises:
      ValueError: `fold_batch_norms=True` and the model cannot be folded.
    """
    if fold_batch_norms is False or (
            fold_batch_norms is None and not folding.has_batch_norms_to_fold(model)):
        return model
    try:
        return folding.fold_batch_norms(model)
    except Exception as error:  # pylint: disable=broad-except
        detail = _first_lines(" ".join(str(error).split()), limit=300).rstrip(".")
        message = f"fold_batch_norms cannot fold {model.name!r}: {type(error).__name__}: {detail}"
        if fold_batch_norms:
            raise ValueError(f"{message}. Export it with fold_batch_norms=False "
                             "(--nofold_batch_norms).") from error
        # Folding only makes serving faster: a model it does not take (built
        # some other way) is exported as it is, as with fold_batch_norms=False.
        logging.warning("%s; exporting it with its BatchNorms unfolded.", message)
        return model


def _first_lines(error, limit=600):
    text = str(error).strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def model_metadata(model_name: str, options: signatures.SignatureOptions) -> Dict:
    """The metadata entries every export format shares (format 2).

    The model's name, classes and `input_contract` (with its crop), and the
    library versions that wrote it.
    """
    return {
        "format": METADATA_FORMAT,
        # 2: the preprocessing is the model's `input_contract` (1: "preprocessing").
        "format_version": 2,
        "model_name": model_name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "num_classes": len(options.class_names),
        "class_names": list(options.class_names),
        "top_k": int(options.top_k),
        "input_contract": options.contract.to_dict(),
        "crop": options.contract.crop_protocol().to_dict(),
        "versions": {"polynet_tf": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__},
    }


def _metadata(model_name, version, options, names, description):
    return {
        **model_metadata(model_name, options),
        "model_version": version,
        "multicrop": None if options.multicrop is None else options.multicrop.to_dict(),
        "signatures": names,
        # What a TF Serving with --enable_batching (pad_variable_length_inputs:
        # false) can batch: every input varies in dimension 0 only.
        "batchable": not any(n in signatures.VARIABLE_SIZE_SIGNATURES for n in names),
        **(description or {}),
    }


def warmup_requests(options, warmup_images=None):
    """`(signature_name, inputs)` warm-up requests: one per signature, batch 1.

    `serving_multicrop` is left out: hundreds of crops per request would make
    every model load slow on CPUs.
    """
    size = int(options.contract.image_size)
    if warmup_images:
        encoded = [bytes(image) for image in warmup_images]
    else:
        image = warmup.synthetic_image(size + 37, size + 61)
        encoded = [tf.io.encode_jpeg(image, quality=90).numpy()]
    pixels = warmup.synthetic_image(size + 11, size + 5, seed=1)
    crop = warmup.synthetic_image(size, size, seed=2).astype(np.float32)
    example = warmup.image_example(encoded[0]).SerializeToString()
    requests = [
        (signatures.DEFAULT_SIGNATURE, {"images": np.array(encoded, dtype=object)}),
        (signatures.IMAGES_SIGNATURE, {"images": pixels[None].astype(np.float32)}),
        (signatures.IMAGES_UINT8_SIGNATURE, {"images": pixels[None]}),
        (signatures.CROPS_SIGNATURE, {"crops": crop[None]}),
        (signatures.EXAMPLES_SIGNATURE, {"examples": np.array([example], dtype=object)}),
    ]
    if not options.variable_size_signatures:
        requests = [r for r in requests if r[0] not in signatures.VARIABLE_SIZE_SIGNATURES]
    return requests


def verify_export(path, model, options, requests):
    """Runs the warm-up requests through the written SavedModel.

    The encoded-image request's probabilities must equal the Keras model's on
    the evaluator's crops of the same images.

    Raises:
      tf.errors.InvalidArgumentError: a request the SavedModel rejects (such
        as a warm-up image that is not an image).
      ValueError: the SavedModel and the Keras model disagree.
    """
    loaded = tf.saved_model.load(path)
    protocol = options.contract.crop_protocol()
    for signature_name, inputs in requests:
        outputs = loaded.signatures[signature_name](
            **{name: tf.constant(value) for name, value in inputs.items()})
        if signature_name != signatures.DEFAULT_SIGNATURE:
            continue
        crops = tf.stack([
            serving_preprocessing.single_crop(tf.io.decode_image(
                data, channels=3, expand_animations=False), protocol)
            for data in inputs["images"]])
        expected = model(options.contract.normalize(crops),
                         training=False)
        expected = tf.cast(expected, tf.float32)
        if options.model_outputs == "logits":
            expected = tf.nn.softmax(expected, axis=-1)
        difference = float(np.max(np.abs(outputs["probabilities"].numpy() - expected.numpy())))
        if not difference <= VERIFY_TOLERANCE:
            raise ValueError(
                f"The written SavedModel's probabilities differ from the Keras model's by "
                f"{difference:.3g} (> {VERIFY_TOLERANCE}) on the warm-up images.")


def read_metadata(version_dir: str) -> Dict:
    """The `assets.extra/polynet_export.json` of an exported version."""
    return fileio.read_json(fileio.join(version_dir, warmup.WARMUP_DIRNAME, METADATA_FILENAME))


__all__ = [
    "ExportError", "ExportResult", "export_saved_model", "existing_versions", "model_metadata",
    "next_version", "read_metadata", "served_model", "verify_export", "warmup_requests",
]
