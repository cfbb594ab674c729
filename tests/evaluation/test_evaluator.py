"""The evaluator: known accuracies on real JPEGs, single-crop equivalence, ensembles."""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import preprocessing
from polynet_tf.evaluation import data, get_protocol, make_crops, metrics
from polynet_tf.evaluation.evaluator import Evaluator
from polynet_tf.evaluation.model_sources import keras_scorer
from polynet_tf.evaluation.protocols import CropProtocol
from polynet_tf.models import preprocess_input
from tests.evaluation import helpers
from tests.evaluation.conftest import COLOUR_IMAGES, colour_labels


def _evaluate(shards, protocol, scorers, weights=None, batch_size=2):
    records = data.tfrecord_records(str(shards / "validation-*"))
    evaluator = Evaluator(scorers, protocol, weights)
    return evaluator.evaluate(data.crops_dataset(records.dataset, protocol, batch_size),
                              records.num_images, records.class_names, progress=False)


@pytest.mark.parametrize("protocol", [
    get_protocol("single", crop_size=32),
    get_protocol("shorter_side", crop_size=32, scales=(36,)),
    get_protocol("squash", crop_size=32, scales=(36,)),
    get_protocol("googlenet144", crop_size=24),
    get_protocol("polynet_multicrop", crop_size=32, scales=(36, 44)),
], ids=lambda p: p.name)
def test_known_model_gives_known_accuracy(colour_shards, protocol):
    labels, top1, top5 = colour_labels()
    report = _evaluate(colour_shards, protocol, [keras_scorer(helpers.colour_model())])
    assert report["num_images"] == 6
    assert report["top1_accuracy"] == pytest.approx(top1)  # 3 / 6
    assert report["top5_accuracy"] == pytest.approx(top5)  # 5 / 6
    assert report["top5_error"] == pytest.approx(1 - top5)
    ranks = np.array([rank for _, rank in COLOUR_IMAGES])
    labels = np.array(labels)
    per_class = {e["label"]: e for e in report["per_class"]}
    assert sorted(per_class) == sorted(set(labels.tolist()))
    for label, entry in per_class.items():
        assert entry["num_images"] == np.sum(labels == label)
        assert entry["top1_accuracy"] == pytest.approx(np.mean(ranks[labels == label] == 0))
        assert entry["name"] == f"colour{label}"
    assert report["protocol"]["num_crops"] == protocol.num_crops


def test_one_scale_one_crop_equals_single_crop_evaluation():
    model = helpers.colour_model(temperature=2.0)
    scorer = keras_scorer(model)
    protocol = CropProtocol("one", crop_size=32, resize="squash", scales=(40,),
                            pooling="topk", topk_fraction=0.3)
    photos = [helpers.photo(48, 64, 0), helpers.photo(64, 48, 1)]
    # The single-crop path of the data package: squash, centre crop, normalise.
    expected = np.stack([
        model(preprocessing.squash_center_crop(tf.io.encode_png(p), 40, 32)[None])[0]
        for p in photos])
    crops = tf.stack([make_crops(p, protocol) for p in photos])
    predicted = Evaluator([scorer], protocol).predict(crops)
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_multicrop_prediction_is_pooled_per_scale():
    # The evaluator's batching (scales, images, crops) against pooling the
    # model's scores of every crop computed one at a time.
    model = helpers.colour_model(temperature=3.0)
    protocol = get_protocol("polynet_multicrop", crop_size=24, scales=(28, 32))
    images = [helpers.photo(40, 56, 0), helpers.photo(56, 40, 1)]
    crops = tf.stack([make_crops(image, protocol) for image in images])
    predicted = Evaluator([keras_scorer(model)], protocol).predict(crops)
    for image_index in range(2):
        scores = np.stack([model(preprocess_input(c[None].numpy()))[0]
                           for c in crops[image_index]])
        per_scale = scores.reshape(2, 36, -1)
        best = -np.sort(-per_scale, axis=1)[:, :11]
        np.testing.assert_allclose(predicted[image_index], best.mean(axis=1).mean(axis=0),
                                   rtol=1e-5, atol=1e-7)


def test_ensemble_is_the_weighted_mean_of_pooled_probabilities(colour_shards):
    protocol = get_protocol("googlenet144", crop_size=24)
    sharp, soft = (keras_scorer(helpers.colour_model(t)) for t in (0.01, 0.3))
    images = tf.stack([make_crops(helpers.photo(40, 56, i), protocol) for i in (0, 1)])
    p_sharp = Evaluator([sharp], protocol).predict(images)
    p_soft = Evaluator([soft], protocol).predict(images)
    combined = Evaluator([sharp, soft], protocol, [3.0, 1.0]).predict(images)
    np.testing.assert_allclose(combined, 0.75 * p_sharp + 0.25 * p_soft, rtol=1e-5)
    report = _evaluate(colour_shards, protocol, [sharp, soft], [3.0, 1.0])
    assert [m["weight"] for m in report["models"]] == [0.75, 0.25]


def test_default_normalisation_is_preprocess_input():
    import keras
    crops = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Flatten()(inputs))
    scorer = keras_scorer(model)
    np.testing.assert_allclose(scorer(crops), preprocess_input(crops).reshape(2, -1),
                               rtol=1e-6, atol=1e-6)


def test_evaluator_refuses_mismatched_models():
    import keras
    ten = keras_scorer(helpers.colour_model())
    inputs = keras.Input((32, 32, 3))
    three = keras_scorer(keras.Model(inputs, keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(inputs))))
    with pytest.raises(ValueError, match="same classes"):
        Evaluator([ten, three], get_protocol("single", crop_size=32))
    with pytest.raises(ValueError, match="takes 32x32 images but protocol 'single' makes 24x24"):
        Evaluator([three], get_protocol("single", crop_size=24))
    with pytest.raises(ValueError, match="one positive weight per model"):
        Evaluator([ten], get_protocol("single", crop_size=24), [0.0])


def test_labels_outside_the_model_classes_are_an_error():
    counter = metrics.AccuracyCounter(10)
    with pytest.raises(ValueError, match="Label 10 is outside"):
        counter.update(np.zeros((1, 5), int), [10])


def test_report_is_written_atomically(tmp_path):
    counter = metrics.AccuracyCounter(3)
    counter.update([[0, 1, 2], [2, 1, 0]], [0, 1])
    report = counter.results(["a", "b", "c"])
    assert report["top1_accuracy"] == 0.5 and report["top3_accuracy"] == 1.0
    path = metrics.write_json_atomically(report, str(tmp_path / "out" / "r.json"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["r.json"]
    assert "Top-1: accuracy 50.00%" in metrics.summary_text(report)
    del path
