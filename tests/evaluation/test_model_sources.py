"""Model sources: spec parsing, checkpoints, weights files and SavedModels load right."""

import shutil

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.configs import write_yaml
from polynet_tf.evaluation import model_sources
from polynet_tf.evaluation.model_sources import ModelSpec, load_scorer, parse_model_spec
from polynet_tf.models import preprocess_input
from polynet_tf.models.factory import build_model
from tests.conftest import TINY_WIDTH
from tests.evaluation import helpers

TINY_MODEL = {
    "architecture": "A: 2way | B: poly3[convs] | C: ir",
    "num_classes": 10,
    "width_multiplier": TINY_WIDTH,
    "dropout_rate": 0.0,
}
EVAL_STATS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def test_spec_parsing():
    spec = parse_model_spec("checkpoint=runs/a, weight=0.6")
    assert (spec.kind, spec.path, spec.weight, spec.weights_kind) == (
        "checkpoint", "runs/a", 0.6, "auto")
    assert parse_model_spec("checkpoint=runs/a,weights_kind=raw").weights_kind == "raw"
    spec = parse_model_spec("weights=imagenet")
    assert (spec.kind, spec.architecture, spec.weight) == ("weights", "very_deep", 1.0)
    spec = parse_model_spec("weights=w.h5,architecture=A: ir | B: (poly3, 2way)*2 | C: ir,"
                            "width_multiplier=0.5,classes=10")
    assert spec.architecture == "A: ir | B: (poly3, 2way)*2 | C: ir"
    assert (spec.width_multiplier, spec.classes) == (0.5, 10)


@pytest.mark.parametrize("text, message", [
    ("runs/a", "is not key=value"),
    ("checkpoint=a,saved_model=b", "exactly one of"),
    ("checkpoint=a,colour=red", "unknown key 'colour'"),
    ("checkpoint=a,weight=heavy", "must be numbers"),
    ("checkpoint=a,weight=-1", "positive number"),
    ("checkpoint=a,weights_kind=best", r"weights_kind must be one of \['auto', 'ema', 'raw'\]"),
    ("weights=x.weights.h5", "needs architecture=NAME or config=YAML"),
])
def test_bad_specs_are_refused_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        parse_model_spec(text)


@pytest.fixture()
def tiny_run(tmp_path):
    """A training-like model_dir: params.yaml and checkpoints/ of a tiny PolyNet."""
    model_dir = tmp_path / "run"
    (model_dir / "checkpoints").mkdir(parents=True)
    write_yaml({"model": TINY_MODEL, "eval_data": EVAL_STATS}, str(model_dir / "params.yaml"))
    model = build_model(helpers_config(), image_size=None)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model),
                                         str(model_dir / "checkpoints"), max_to_keep=1)
    manager.save()
    return model_dir, model


def helpers_config():
    from polynet_tf.configs.experiment import ModelConfig
    return ModelConfig(**TINY_MODEL)


def _normalised(crops):
    return (crops / 255.0 - 0.5) / 0.25


def test_checkpoint_scorer_restores_the_training_model(tiny_run):
    model_dir, model = tiny_run
    crops = np.random.default_rng(0).uniform(0, 255, (2, 75, 75, 3)).astype(np.float32)
    expected = tf.nn.softmax(model(_normalised(crops), training=False))
    for path in (model_dir, model_dir / "checkpoints"):
        scorer = load_scorer(ModelSpec("checkpoint", str(path)))
        assert scorer.num_classes == 10
        np.testing.assert_allclose(scorer(crops), expected, rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_model_is_refused(tiny_run, tmp_path):
    model_dir, _ = tiny_run
    other = tmp_path / "other.yaml"
    write_yaml({"model": {**TINY_MODEL, "width_multiplier": 0.125}}, str(other))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_scorer(ModelSpec("checkpoint", str(model_dir), config=str(other)))
    shutil.rmtree(model_dir / "checkpoints")
    (model_dir / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="No checkpoint in"):
        load_scorer(ModelSpec("checkpoint", str(model_dir)))


def test_weights_file_with_config(tmp_path):
    config_path = tmp_path / "params.yaml"
    write_yaml({"model": TINY_MODEL, "eval_data": EVAL_STATS}, str(config_path))
    model = build_model(helpers_config(), classifier_activation="softmax")
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    scorer = load_scorer(ModelSpec("weights", path, config=str(config_path)))
    crops = np.random.default_rng(1).uniform(0, 255, (2, 75, 75, 3)).astype(np.float32)
    np.testing.assert_allclose(scorer(crops), model(_normalised(crops)), rtol=1e-5, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scorer(ModelSpec("weights", str(tmp_path / "missing.weights.h5"),
                              architecture="very_deep"))


def test_weights_file_with_architecture_uses_preprocess_input(tmp_path):
    from polynet_tf import PolyNet
    architecture = "A: 2way | B: (poly3[convs], ir) | C: ir"
    model = PolyNet(architecture, input_shape=(None, None, 3), classes=10,
                    width_multiplier=TINY_WIDTH)
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    scorer = load_scorer(parse_model_spec(
        f"weights={path},architecture={architecture},classes=10,width_multiplier={TINY_WIDTH}"))
    crops = np.random.default_rng(3).uniform(0, 255, (2, 75, 75, 3)).astype(np.float32)
    np.testing.assert_allclose(scorer(crops), model(preprocess_input(crops)),
                               rtol=1e-5, atol=1e-6)


def save_colour_saved_model(path, signature_name="serve_images", with_serve_crops=False,
                            temperature=0.01):
    """A SavedModel of the colour classifier with a `serve_images` signature.

    With `with_serve_crops`, a `serve_crops` signature serves the colour model
    and `serve_images` a different one (uniform probabilities), as an export
    whose `serve_images` re-crops would differ. `temperature`: the colour
    model's (`helpers.colour_model`).
    """
    model = helpers.colour_model(temperature)

    class Exported(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def serve(self, images):
            return {"probabilities": self.model(preprocess_input(images))}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def uniform(self, images):
            return {"probabilities": tf.fill([tf.shape(images)[0], 10], 0.1)}

    module = Exported()
    signatures = ({"serve_crops": module.serve, "serve_images": module.uniform}
                  if with_serve_crops else {signature_name: module.serve})
    tf.saved_model.save(module, str(path), signatures=signatures)
    return model


def test_saved_model_scorer(tmp_path):
    model = save_colour_saved_model(tmp_path / "sm")
    scorer = load_scorer(ModelSpec("saved_model", str(tmp_path / "sm")))
    crops = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(scorer(crops), model(preprocess_input(crops)), rtol=1e-6)
    assert scorer.num_classes == 10


def test_saved_model_crops_go_to_serve_crops(tmp_path):
    model = save_colour_saved_model(tmp_path / "sm", with_serve_crops=True)
    scorer = load_scorer(ModelSpec("saved_model", str(tmp_path / "sm")))
    assert "signature serve_crops" in scorer.description
    crops = np.random.default_rng(4).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(scorer(crops), model(preprocess_input(crops)), rtol=1e-6)


def test_saved_model_without_serve_images_is_refused(tmp_path):
    save_colour_saved_model(tmp_path / "sm", signature_name="serving_default")
    with pytest.raises(ValueError, match="no 'serve_crops' or 'serve_images' signature"):
        load_scorer(ModelSpec("saved_model", str(tmp_path / "sm")))
    with pytest.raises(FileNotFoundError, match="No SavedModel"):
        load_scorer(ModelSpec("saved_model", str(tmp_path / "nothing")))
    assert model_sources.SERVE_IMAGES_SIGNATURE == "serve_images"
