"""Exports to TensorFlow filesystem URIs.

`ram://` in process (versions, overwrite, failures); `file://` from the command line.
"""

import uuid

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.serving import exporter, warmup
from tests.serving.conftest import CLASS_NAMES, random_image, signature_options
from tests.serving.test_cli import run  # noqa: F401  (fixture)

# Exports a network (module fixture) and loads it back several times.
pytestmark = pytest.mark.slow


def test_export_to_a_uri_writes_whole_versions_and_leaves_nothing_on_failure(exported):
    model = exported[0]
    options = signature_options(multicrop=False)
    base = f"ram://export-{uuid.uuid4().hex[:8]}/models"
    first = exporter.export_saved_model(model, base, "m", options)
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


def test_command_line_with_file_uris_from_an_empty_directory(run, tmp_path):  # noqa: F811
    import os  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from polynet_tf.data import preprocessing as data_preprocessing  # noqa: PLC0415
    from tests.serving.test_cli import CLASSES, IMAGE, MEAN, STD  # noqa: PLC0415

    root, model = run
    (tmp_path / "warmup.png").write_bytes(IMAGE)
    work = tmp_path / "cwd"
    work.mkdir()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": repo}
    result = subprocess.run(
        [sys.executable, "-m", "polynet_tf.export", "--output_base", f"file://{tmp_path}/models",
         "--model_name", "pets", "--checkpoint", f"file://{root}/model_dir",
         "--class_names", f"file://{root}/shards/class_index.json",
         "--warmup_image", f"file://{tmp_path}/warmup.png"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(work) == []  # no URI was taken for a relative local path
    assert os.listdir(tmp_path / "models" / "pets") == ["1"]
    version = str(tmp_path / "models" / "pets" / "1")
    assert exporter.read_metadata(version)["class_names"] == CLASSES
    served = tf.saved_model.load(version).signatures["serving_default"](
        images=tf.constant([IMAGE]))["probabilities"]
    crop = data_preprocessing.preprocess_for_eval(tf.constant(IMAGE), 75, 1.0, mean=MEAN,
                                                  std=STD)
    expected = tf.nn.softmax(model(crop[None], training=False)).numpy()
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5, rtol=0)
