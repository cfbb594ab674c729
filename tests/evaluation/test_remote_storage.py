"""The evaluator on TensorFlow filesystem URIs: `ram://` in process, `file://` from the CLI."""

import json
import os
import subprocess
import sys
import uuid

import pytest
import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.evaluation import data, get_protocol, metrics
from polynet_tf.evaluation.evaluator import Evaluator
from polynet_tf.evaluation.figure import save_crops_figure
from polynet_tf.evaluation.model_sources import keras_scorer
from tests.evaluation import helpers
from tests.evaluation.conftest import colour_labels
from tests.evaluation.test_model_sources import tiny_run  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_shards_report_and_figure_on_ram(colour_shards):
    root = f"ram://evaluation-{uuid.uuid4().hex[:8]}"
    fileio.makedirs(f"{root}/shards")
    for path in tf.io.gfile.glob(str(colour_shards / "*")):
        tf.io.gfile.copy(path, f"{root}/shards/{os.path.basename(path)}")
    protocol = get_protocol("single", crop_size=32)
    records = data.tfrecord_records(f"{root}/shards/validation-*")
    assert records.num_images == 6 and records.class_names[0] == "colour0"  # class index read
    report = Evaluator([keras_scorer(helpers.colour_model())], protocol).evaluate(
        data.crops_dataset(records.dataset, protocol, 2), records.num_images,
        records.class_names, progress=False)
    _, top1, top5 = colour_labels()
    assert report["top1_accuracy"] == pytest.approx(top1)
    assert report["top5_accuracy"] == pytest.approx(top5)
    metrics.write_json_atomically(report, f"{root}/out/evaluation_single.json")
    assert fileio.read_json(f"{root}/out/evaluation_single.json")["top1_accuracy"] == \
        pytest.approx(top1)
    pytest.importorskip("matplotlib")
    save_crops_figure(helpers.solid(40, 56, (200, 30, 30)),
                      get_protocol("googlenet144", crop_size=24), f"{root}/out/crops.png")
    assert fileio.read_bytes(f"{root}/out/crops.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert fileio.listdir(f"{root}/out") == ["crops.png", "evaluation_single.json"]


def test_command_line_with_file_uris_from_an_empty_directory(
        colour_shards, tiny_run, tmp_path):  # noqa: F811
    model_dir, _ = tiny_run
    pytest.importorskip("matplotlib")
    image = tmp_path / "image.jpg"
    image.write_bytes(helpers.encode_jpeg(helpers.photo(60, 80)))
    work = tmp_path / "cwd"
    work.mkdir()
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": REPO}
    result = subprocess.run(
        [sys.executable, "-m", "polynet_tf.evaluate", "--noprogress",
         "--checkpoint", f"file://{model_dir}",
         "--data_pattern", f"file://{colour_shards}/validation-*", "--crop_size", "75",
         "--output", f"file://{tmp_path}/out/report.json",
         "--save_crops_figure", f"file://{tmp_path}/out/crops.png",
         "--figure_image", f"file://{image}"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(work) == []  # no URI was taken for a relative local path
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["num_images"] == 6 and report["per_class"][0]["name"].startswith("colour")
    assert (tmp_path / "out" / "crops.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "out")) == ["crops.png", "report.json"]


def test_a_missing_figure_image_uri_is_named():
    import types  # noqa: PLC0415

    from polynet_tf import evaluate  # noqa: PLC0415

    missing = f"ram://evaluation-{uuid.uuid4().hex[:8]}/missing.jpg"
    flags = types.SimpleNamespace(figure_image=missing, save_crops_figure=f"{missing}.png")
    with pytest.raises(FileNotFoundError, match=f"--figure_image '{missing}' does not exist"):
        evaluate._save_figure(tf, None, get_protocol("single", crop_size=32), flags)
    assert not fileio.exists(f"{missing}.png")
