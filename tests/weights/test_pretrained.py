"""`PolyNet(weights="imagenet")` with the download served from local files.

`keras.utils.get_file` is replaced by a function that copies a local file (or
fails as offline), and the published hashes by those of the random reference
checkpoints (in the preset's `PretrainedConfig`); URLs, file names and
everything else are the real ones.
"""

import dataclasses
import hashlib
import os
import shutil
import zipfile

import keras
import numpy as np
import pytest

from polynet_tf.models.architectures import get_architecture, get_pretrained_config
from polynet_tf.models.polynet import PolyNet
from polynet_tf.weights import WeightsMismatchError, convert_checkpoint, pretrained
from polynet_tf.weights.pretrained import HashMismatchError, PretrainedWeightsError

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

PRESET, REAL = get_pretrained_config(None, "imagenet")
CV_URL, PM_URL = (source.url for source in REAL.sources)
TOLERANCE = 1e-4


def _relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.std(expected))


def _digest(path, algorithm):
    with open(path, "rb") as handle:
        return hashlib.new(algorithm, handle.read()).hexdigest()


def test_published_metadata():
    cv, pm = REAL.sources
    assert cv.url.startswith("https://github.com/osmr/imgclsmob/releases/download/v0.0.96/")
    assert (cv.layout, cv.filename, cv.hash_algorithm) == (
        "pytorchcv", "polynet-0452-6a1b295d.pth", "sha1")
    assert cv.file_hash == "6a1b295dad3f261b48e845f1b283e4eef3ab5a0b"
    assert pm.url == "http://data.lip6.fr/cadene/pretrainedmodels/polynet-f71d82a5.pth"
    assert (pm.layout, pm.hash_algorithm, pm.file_hash) == (
        "pretrainedmodels", "sha256", "f71d82a5")


@pytest.fixture
def served(monkeypatch, tmp_path, pytorchcv_reference, pretrainedmodels_reference):
    """Serves the reference checkpoints under the real URLs; returns the URL -> file map.

    The pytorchcv checkpoint is zipped, as published; the published hashes are
    replaced by the reference files' own.
    """
    cv_zip = tmp_path / "served" / "polynet-0452-6a1b295d.pth.zip"
    cv_zip.parent.mkdir()
    with zipfile.ZipFile(cv_zip, "w") as archive:
        archive.write(pytorchcv_reference.checkpoint, "polynet-0452-6a1b295d.pth")
    cv, pm = REAL.sources
    spec = dataclasses.replace(REAL, sources=(
        dataclasses.replace(cv, file_hash=_digest(pytorchcv_reference.checkpoint, "sha1")),
        dataclasses.replace(pm, file_hash=_digest(pretrainedmodels_reference.checkpoint,
                                                  "sha256")[:8]),
    ))
    monkeypatch.setitem(get_architecture(PRESET).pretrained, "imagenet", spec)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    table = {CV_URL: str(cv_zip), PM_URL: pretrainedmodels_reference.checkpoint}
    calls = []

    def fake_get_file(fname=None, origin=None, cache_subdir="datasets", cache_dir=None, **kwargs):
        calls.append(origin)
        source = table.get(origin)
        if source is None:
            raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] offline")
        target = os.path.join(cache_dir, cache_subdir, fname)
        shutil.copyfile(source, target)
        return target

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    return {"table": table, "calls": calls, "cache": tmp_path / "keras_home" / "models"}


def test_download_convert_cache_and_load(served, pytorchcv_reference):
    model = PolyNet(weights="imagenet", classifier_activation=None)
    assert served["calls"] == [CV_URL]  # the https source first
    logits = keras.ops.convert_to_numpy(model(pytorchcv_reference.inputs, training=False))
    error = _relative_error(logits, pytorchcv_reference.logits)
    print(f"imagenet (pytorchcv zip): logits max abs diff / std = {error:.2e}")
    assert error <= TOLERANCE
    assert sorted(os.listdir(served["cache"])) == [
        "polynet-0452-6a1b295d.pth", "polynet_very_deep_imagenet.weights.h5"]

    # Converted once: offline now, and still loads (here without the top).
    served["table"].clear()
    del model
    features_model = PolyNet(weights="imagenet", include_top=False, input_shape=(331, 331, 3))
    assert served["calls"] == [CV_URL]
    features = keras.ops.convert_to_numpy(
        features_model(pytorchcv_reference.inputs, training=False))
    assert _relative_error(features, pytorchcv_reference.features) <= TOLERANCE


def test_offline_error_says_where_to_put_the_file(served, pretrainedmodels_reference,
                                                  monkeypatch):
    conversions = []

    def counted(*args, **kwargs):
        conversions.append(args[0])
        return convert_checkpoint(*args, **kwargs)

    monkeypatch.setattr(pretrained, "convert_checkpoint", counted)
    served["table"].clear()
    with pytest.raises(PretrainedWeightsError) as info:
        PolyNet(weights="imagenet", include_top=False, pooling="avg")
    message = str(info.value)
    assert not isinstance(info.value, HashMismatchError)
    hand_placed = os.path.join(served["cache"], "polynet-f71d82a5.pth")
    assert hand_placed in message and "offline" in message
    assert "python -m polynet_tf.convert_weights" in message
    assert os.listdir(served["cache"]) == []  # nothing half-written

    # Doing what the message says works, still offline (the pretrainedmodels layout).
    shutil.copyfile(pretrainedmodels_reference.checkpoint, hand_placed)
    model = PolyNet(weights="imagenet", include_top=False, pooling="avg")
    pooled = keras.ops.convert_to_numpy(model(pretrainedmodels_reference.inputs, training=False))
    expected = pretrainedmodels_reference.features.mean(axis=(1, 2))
    assert _relative_error(pooled, expected) <= TOLERANCE
    assert conversions == [hand_placed]  # once, into a full model, then loaded without the top


def test_hash_mismatch_deletes_download_and_falls_back(served, pretrainedmodels_reference,
                                                        tmp_path):
    # The https source serves a file with the wrong hash: deleted, then the
    # second source is used.
    bad_zip = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad_zip, "w") as archive:
        archive.writestr("polynet-0452-6a1b295d.pth", b"not the published checkpoint")
    served["table"][CV_URL] = str(bad_zip)
    model = PolyNet(weights="imagenet", classifier_activation=None)
    assert served["calls"] == [CV_URL, PM_URL]
    assert sorted(os.listdir(served["cache"])) == [
        "polynet-f71d82a5.pth", "polynet_very_deep_imagenet.weights.h5"]
    logits = keras.ops.convert_to_numpy(model(pretrainedmodels_reference.inputs, training=False))
    assert _relative_error(logits, pretrainedmodels_reference.logits) <= TOLERANCE


def test_hash_mismatch_everywhere_leaves_nothing(served, tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\0" * 1024)
    bad_zip = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad_zip, "w") as archive:
        archive.write(corrupt, "polynet-0452-6a1b295d.pth")
    served["table"].update({CV_URL: str(bad_zip), PM_URL: str(corrupt)})
    with pytest.raises(HashMismatchError) as info:
        PolyNet(weights="imagenet")
    message = str(info.value)
    assert "not the published" in message and "deleted" in message
    assert os.path.join(served["cache"], "polynet-0452-6a1b295d.pth") in message
    assert os.listdir(served["cache"]) == []


def test_stale_converted_file_is_refused(served):
    # A converted file that does not fit (here: made by a narrower network
    # without the top; a small file, the same refusal) must not load
    # half-way; the error says to delete it.
    stale = os.path.join(served["cache"], "polynet_very_deep_imagenet.weights.h5")
    os.makedirs(served["cache"])
    PolyNet(include_top=False, width_multiplier=0.0625).save_weights(stale)
    with pytest.raises(PretrainedWeightsError, match="Delete it") as info:
        PolyNet(weights="imagenet")
    assert isinstance(info.value.__cause__, WeightsMismatchError)
    assert served["calls"] == []
