"""The demo's report tools: predictions through a real SavedModel signature, training curves."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from polynet_tf.demo import curves, predict

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _BrightnessClassifier(tf.Module):
    """A served model with a known answer: P(bright) = sigmoid((mean pixel - 128) / 8)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        def mean_pixel(data):
            return tf.reduce_mean(tf.cast(tf.io.decode_jpeg(data, channels=3), tf.float32))

        means = tf.map_fn(mean_pixel, image_bytes, fn_output_signature=tf.float32)
        bright = tf.sigmoid((means - 128.0) / 8.0)
        return {"probabilities": tf.stack([bright, 1.0 - bright], axis=1),
                "classes": tf.argmax(tf.stack([bright, 1.0 - bright], axis=1), axis=1)}


def _export(path):
    module = _BrightnessClassifier()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _write_images(root, levels):
    """levels: {class folder: [grey level of each image]}."""
    for name, values in levels.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for index, value in enumerate(values):
            Image.new("RGB", (16, 16), (value,) * 3).save(
                os.path.join(root, name, f"{index}.jpg"), quality=95)


def test_predict_sends_encoded_files_through_serving_default(tmp_path, capsys):
    saved_model = _export(str(tmp_path / "serving" / "toy" / "1"))
    images = str(tmp_path / "images")
    # One "dark" image is bright: the only expected mistake.
    _write_images(images, {"bright": [200, 230, 180], "dark": [20, 60, 220]})
    items = predict.list_labelled_images(images)
    found = predict.classify(saved_model, items, ["bright", "dark"], batch_size=2)
    assert [(p.true_class, p.predicted_class) for p in found] == [
        ("bright", "bright")] * 3 + [("dark", "dark")] * 2 + [("dark", "bright")]
    grey = 200.0
    assert found[0].probability == pytest.approx(1 / (1 + np.exp(-(grey - 128) / 8)), abs=0.02)

    page = tmp_path / "report" / "predictions.png"
    assert predict.main(["--saved_model", saved_model, "--image_dir", images, "--show", "6",
                         "--page", str(page)]) == 0
    printed = capsys.readouterr().out
    assert "served model accuracy on 6 held-out images: 0.8333" in printed
    assert "dark/2.jpg: predicted bright" in printed and "<- wrong" in printed
    assert "mistake: dark/2.jpg predicted bright" in printed
    # Printed and drawn samples take each class in turn, mistakes first on the page.
    sample = predict.balanced_sample(found, 3, mistakes_first=True)
    assert [(p.true_class, os.path.basename(p.path)) for p in sample] == [
        ("bright", "0.jpg"), ("dark", "0.jpg"), ("dark", "2.jpg")]
    assert [p.true_class for p in predict.balanced_sample(found, 4)] == [
        "bright", "bright", "dark", "dark"]
    assert page.read_bytes()[:8] == PNG_SIGNATURE
    assert os.listdir(page.parent) == ["predictions.png"]


def test_predict_errors_name_the_problem(tmp_path, capsys):
    images = str(tmp_path / "images")
    _write_images(images, {"a": [10]})
    assert predict.main(["--saved_model", str(tmp_path), "--image_dir", images]) == 2
    assert "holds no saved_model.pb" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(predict.PredictError, match="no images in class sub-folders"):
        predict.list_labelled_images(str(tmp_path / "empty"))
    saved_model = _export(str(tmp_path / "model"))
    with pytest.raises(predict.PredictError, match="The model has 2 classes but the class index "
                                                   "names 3"):
        predict.classify(saved_model, predict.list_labelled_images(images), ["a", "b", "c"])


def test_training_curves_from_summaries(tmp_path):
    run = str(tmp_path / "run")
    for folder, tags in (("train", ("loss", "top1", "learning_rate")), ("eval", ("loss", "top1"))):
        writer = tf.summary.create_file_writer(os.path.join(run, folder))
        with writer.as_default():
            for step in (20, 40, 60):
                for tag in tags:
                    tf.summary.scalar(tag, step / 100.0 + len(tag), step=step)
        writer.close()
    train, evaluation = curves.load_curves(run)
    assert [s for s, _ in train["loss"]] == [20, 40, 60]
    assert [v for _, v in train["loss"]] == pytest.approx([4.2, 4.4, 4.6])
    assert [s for s, _ in evaluation["top1"]] == [20, 40, 60]
    output = tmp_path / "report" / "curves.png"
    assert curves.main(["--model_dir", run, "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == PNG_SIGNATURE
    assert curves.main(["--model_dir", str(tmp_path / "none"), "--output",
                        str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
