"""Exports to TensorFlow filesystem URIs.

`ram://` in process (versions, overwrite, failures); `file://` URIs from the command line are
in tests/serving/test_cli.py.
"""

import uuid

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.serving import exporter, warmup
from tests.serving.conftest import CLASS_NAMES, random_image, signature_options

# Exports a network (module fixture) and loads it back several times.
pytestmark = pytest.mark.slow


def test_export_to_a_uri_writes_whole_versions_and_leaves_nothing_on_failure(exported):
    model = exported[0]
    options = signature_options(multicrop=False)
    base = f"ram://export-{uuid.uuid4().hex[:8]}/models"
    # Checked below against the local export (the written-model check is test_layout's).
    first = exporter.export_saved_model(model, base, "m", options, verify=False)
    assert first.path == f"{base}/m/1" and exporter.existing_versions(f"{base}/m") == [1]
    # ram:// has no atomic directory rename: the files were moved one by one.
    assert not fileio.has_atomic_rename(base)
    assert exporter.read_metadata(first.path)["class_names"] == CLASS_NAMES
    assert [r.model_spec.signature_name for r in warmup.read_warmup_requests(first.path)][0] \
        == "serving_default"
    loaded = tf.saved_model.load(first.path)
    images = np.stack([random_image(90, 120, seed) for seed in range(2)]).astype(np.float32)
    served = loaded.signatures["serve_images"](images=tf.constant(images))["probabilities"]
    local = tf.saved_model.load(exported[2]).signatures["serve_images"](
        images=tf.constant(images))["probabilities"]
    np.testing.assert_allclose(served.numpy(), local.numpy(), atol=1e-5)

    with pytest.raises(FileExistsError, match="--overwrite"):
        exporter.export_saved_model(model, base, "m", options, version=1, verify=False)
    with pytest.raises(exporter.ExportError, match="not an encoded"):
        exporter.export_saved_model(model, base, "m", options,
                                    warmup_images=[b"plain text, no image"])
    assert fileio.listdir(f"{base}/m") == ["1"]  # no temporary directory left

    replaced = exporter.export_saved_model(model, base, "m", signature_options(False, top_k=2),
                                           version=1, overwrite=True, verify=False)
    assert exporter.read_metadata(replaced.path)["top_k"] == 2
    assert fileio.listdir(f"{base}/m") == ["1"]
    assert exporter.next_version(f"{base}/m") == 2
