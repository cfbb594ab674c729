"""`python -m polynet_tf.export` from a training run and from a weights file + config, with
`file://` URIs for every path."""

import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from polynet_tf import export
from polynet_tf.configs import base
from polynet_tf.data import preprocessing as data_preprocessing
from polynet_tf.data import write_class_index
from polynet_tf.models.factory import build_model
from polynet_tf.serving import exporter, warmup
from polynet_tf.configs.experiment import load_experiment
from tests.conftest import TINY_WIDTH
from tests.serving.conftest import ARCHITECTURE, encode, random_image

CLASSES = ["cat", "dog", "fox", "owl"]
MEAN, STD = [0.45, 0.45, 0.45], [0.25, 0.25, 0.25]
IMAGE = encode(random_image(88, 131, 21), "PNG")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A training model_dir (params.yaml, checkpoints/) with shards' class index."""
    root = tmp_path_factory.mktemp("run")
    (root / "shards").mkdir()
    write_class_index(str(root / "shards"), CLASSES, label_offset=0)
    config = {
        "model": {"architecture": ARCHITECTURE, "num_classes": len(CLASSES),
                  "width_multiplier": TINY_WIDTH, "dropout_rate": 0.0},
        "train_data": {"file_pattern": str(root / "shards" / "train-*"), "image_size": 75},
        "eval_data": {"file_pattern": str(root / "shards" / "validation-*"), "image_size": 75,
                      "crop_fraction": 1.0, "mean": MEAN, "std": STD},
    }
    model_dir = root / "model_dir"
    model_dir.mkdir()
    base.write_yaml(config, str(model_dir / "params.yaml"))
    experiment = load_experiment([str(model_dir / "params.yaml")], mode=None)
    model = build_model(experiment.model, image_size=75)
    for variable in model.non_trainable_variables:
        if "moving_mean" in variable.path:
            variable.assign(np.full(variable.shape, 0.1, "float32"))
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, step=tf.Variable(3, dtype=tf.int64)),
        str(model_dir / "checkpoints"), max_to_keep=1)
    manager.save(checkpoint_number=3)
    return root, model


def _probabilities(version_dir, signature="serving_default"):
    loaded = tf.saved_model.load(version_dir)
    return loaded.signatures[signature](images=tf.constant([IMAGE]))


def test_export_from_a_training_run(run, tmp_path, capsys, monkeypatch):
    root, model = run
    (tmp_path / "warmup.png").write_bytes(IMAGE)
    # Every path a file:// URI, run from an empty directory: nothing may land in it (a URI
    # taken for a relative local path would).
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    status = export.main(["--output_base", f"file://{tmp_path}/models", "--model_name", "pets",
                          "--checkpoint", f"file://{root}/model_dir", "--top_k", "2",
                          "--warmup_image", f"file://{tmp_path}/warmup.png"])
    assert status == 0, capsys.readouterr().err
    assert "version 1" in capsys.readouterr().out
    assert os.listdir(work) == [] and os.listdir(tmp_path / "models" / "pets") == ["1"]
    outputs = _probabilities(str(tmp_path / "models" / "pets" / "1"))
    crop = data_preprocessing.preprocess_for_eval(tf.constant(IMAGE), 75, 1.0, mean=MEAN,
                                                  std=STD)
    expected = tf.nn.softmax(model(crop[None], training=False)).numpy()
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5, rtol=0)
    best = np.argsort(-expected[0])[:2]
    assert [v.decode() for v in outputs["labels"][0].numpy()] == [CLASSES[i] for i in best]
    metadata = exporter.read_metadata(str(tmp_path / "models" / "pets" / "1"))
    assert metadata["source"].endswith("ckpt-3")
    assert metadata["class_names_source"].startswith("class_index.json")
    assert metadata["class_names"] == CLASSES
    assert len(warmup.read_warmup_requests(str(tmp_path / "models" / "pets" / "1"))) > 0

    status = export.main(["--output_base", str(tmp_path / "models"), "--model_name", "pets",
                          "--checkpoint", str(root / "model_dir"), "--version", "1"])
    assert status == 2 and "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("protocol, crop_function", [
    ("shorter_side", data_preprocessing.shorter_side_center_crop),
    ("squash", data_preprocessing.squash_center_crop),
])
def test_export_from_weights_and_config_with_the_released_protocol(run, tmp_path, capsys,
                                                                    protocol, crop_function):
    root, model = run
    weights = str(tmp_path / "tiny.weights.h5")
    model.save_weights(weights)
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\nd\n")
    status = export.main(["--output_base", str(tmp_path / "models"), "--model_name", "w",
                          "--weights", f"file://{weights}",
                          "--config", f"file://{root}/model_dir/params.yaml",
                          "--protocol", protocol, "--class_names", f"file://{names}"])
    assert status == 0, capsys.readouterr().err
    outputs = _probabilities(str(tmp_path / "models" / "w" / "1"))
    # 75 x 378 / 331 = 85.6 -> 86: the protocol's ratio at the config's crop size.
    crop = crop_function(tf.constant(IMAGE), 86, 75, mean=MEAN, std=STD)
    expected = tf.nn.softmax(model(crop[None], training=False)).numpy()
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5, rtol=0)
    assert set(v.decode() for v in outputs["labels"][0].numpy()) <= set("abcd")


@pytest.mark.parametrize("arguments, message", [
    (["--weights", "x.weights.h5", "--checkpoint", "runs/a"], "exactly one model source"),
    (["--checkpoint", "/no/such/run"], "does not exist"),
    (["--weights", "/no/such.weights.h5", "--architecture", "ir_3_6_3"], "does not exist"),
    (["--weights", "some.weights.h5"], "--architecture"),
])
def test_bad_arguments_are_named(tmp_path, capsys, arguments, message):
    status = export.main(["--output_base", str(tmp_path), "--model_name", "m", *arguments])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_params_yaml_written_by_training_round_trips(run):
    root, _ = run
    values = yaml.safe_load((root / "model_dir" / "params.yaml").read_text())
    assert values["eval_data"]["mean"] == MEAN


def test_multicrop_option_builds_the_evaluator_protocol():
    protocol = export._multicrop_protocol("polynet_multicrop", "scales=[80,96]", 75)
    assert (protocol.crop_size, protocol.scales, protocol.num_crops) == (75, (80, 96), 72)
    # Without scales, the default scales keep their ratio to the crop.
    assert export._multicrop_protocol("googlenet144", "", 112).scales == (128, 144, 160, 176)
    with pytest.raises(ValueError, match="Unknown evaluation protocol"):
        export._multicrop_protocol("tencrop", "", 75)


def test_presets_use_the_published_squash_protocol_and_imagenet_statistics():
    from polynet_tf.data import normalization
    from polynet_tf.loading import preset_contract

    released = preset_contract("very_deep")
    protocol = released.crop_protocol()
    # The published 81.00 / 95.62: the whole image squashed to 378x378, centre 331.
    assert (released.protocol, protocol.crop_size, protocol.scales) == ("squash", 331, (378,))
    assert protocol.resize == "squash"
    shorter = preset_contract("very_deep", protocol="shorter_side").crop_protocol()
    assert (shorter.scales, shorter.resize, shorter.rounding) == (
        (378,), "shorter_side", "torchvision")
    pytorchcv = preset_contract("very_deep", protocol="pytorchcv").crop_protocol()
    assert (pytorchcv.scales, pytorchcv.resize) == ((379,), "shorter_side")
    assert released.mean == normalization.IMAGENET_MEAN
    assert released.std == normalization.IMAGENET_STD
    single = preset_contract("ir_5_10_5").crop_protocol()
    assert (single.crop_size, single.crop_fraction) == (299, 0.875)
