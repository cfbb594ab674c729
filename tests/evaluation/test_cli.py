"""`python -m polynet_tf.evaluate` end to end on tiny TFRecords (a subprocess; main() here)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from polynet_tf.evaluation import data, get_protocol
from polynet_tf.evaluation.evaluator import Evaluator
from polynet_tf.evaluation.model_sources import ModelSpec, load_scorer
from tests.evaluation.conftest import COLOUR_IMAGES
from tests.evaluation.test_model_sources import save_colour_saved_model, tiny_run  # noqa: F401

pytestmark = pytest.mark.slow  # a multi-replica subprocess, tiny PolyNets loaded

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "polynet_tf.evaluate", "--noprogress", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_saved_model_multicrop_on_two_replicas_with_figure(colour_shards, tmp_path):
    save_colour_saved_model(tmp_path / "sm")
    output, figure = tmp_path / "report.json", tmp_path / "crops.png"
    result = run_cli(
        "--saved_model", str(tmp_path / "sm"), "--data_pattern",
        str(colour_shards / "validation-*"), "--protocol", "polynet_multicrop",
        "--crop_size", "32", "--scales", "36,40", "--topk_fraction", "0.5",
        "--strategy", "mirrored", "--num_cpu_devices", "2", "--batch_size", "4",
        # 5 images: the last batch has one image, so one replica gets none.
        "--max_images", "5", "--output", str(output), "--save_crops_figure", str(figure))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    ranks = np.array([rank for _, rank in COLOUR_IMAGES[:5]])
    assert report["num_images"] == 5 and report["replicas"] == 2
    assert report["top1_accuracy"] == pytest.approx(np.mean(ranks == 0))  # 3 / 5
    assert report["top5_accuracy"] == pytest.approx(np.mean(ranks < 5))  # 5 / 5
    assert report["protocol"]["scales"] == [36, 40] and report["protocol"]["topk"] == 18
    assert "Top-1: accuracy 60.00%" in result.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crops.png", "report.json", "sm"]


def test_ensemble_of_checkpoint_and_saved_model_matches_the_library(
        colour_shards, tiny_run, tmp_path):  # noqa: F811
    from polynet_tf import evaluate

    model_dir, _ = tiny_run
    save_colour_saved_model(tmp_path / "sm")
    specs = [f"checkpoint={model_dir},weight=1", f"saved_model={tmp_path / 'sm'},weight=3"]
    output = tmp_path / "report.json"
    # The command's entry point in this process (the multi-replica test above
    # and test_remote_storage.py run it as `python -m`).
    status = evaluate.main(["--noprogress", "--model", specs[0], "--model", specs[1],
                            "--data_pattern", str(colour_shards / "validation-*"),
                            "--protocol", "single", "--crop_size", "75",
                            "--output", str(output)])
    assert status == 0
    report = json.loads(output.read_text())
    assert [m["weight"] for m in report["models"]] == [0.25, 0.75]
    # The same evaluation in this process.
    protocol = get_protocol("single", crop_size=75)
    scorers = [load_scorer(ModelSpec("checkpoint", str(model_dir))),
               load_scorer(ModelSpec("saved_model", str(tmp_path / "sm")))]
    records = data.tfrecord_records(str(colour_shards / "validation-*"))
    expected = Evaluator(scorers, protocol, [1, 3]).evaluate(
        data.crops_dataset(records.dataset, protocol, 4), class_names=records.class_names,
        progress=False)
    for key in ("num_images", "top1_accuracy", "top5_accuracy", "per_class"):
        assert report[key] == expected[key]


def test_unknown_protocol_is_a_flag_error(colour_shards, capsys):
    # The command's entry point in this process: the flags are parsed before
    # anything is loaded, so no model or data is touched.
    from polynet_tf import evaluate

    status = evaluate.main(["--noprogress", "--saved_model", "nowhere", "--data_pattern",
                            str(colour_shards / "validation-*"), "--protocol", "tencrop"])
    stderr = capsys.readouterr().err
    assert status == 2
    assert "flag --protocol=tencrop: value should be one of <single|squash|" in stderr, stderr


@pytest.mark.parametrize("args, message", [
    (["--saved_model", "nowhere", "--data_pattern", "nothing-*"], "matched no TFRecord"),
    (["--data_pattern", "{shards}"], "No model"),
    (["--saved_model", "a", "--checkpoint", "b", "--data_pattern", "{shards}"],
     "Give one of --weights, --checkpoint, --saved_model"),
    (["--saved_model", "nowhere"], "Give exactly one data source"),
    (["--weights", "missing.weights.h5", "--architecture", "very_deep",
      "--data_pattern", "{shards}"], "'missing.weights.h5' does not exist"),
    (["--saved_model", "nowhere", "--data_pattern", "{shards}"], "No SavedModel in 'nowhere'"),
    (["--checkpoint", "nowhere", "--data_pattern", "{shards}"], "'nowhere' does not exist"),
    (["--saved_model", "nowhere", "--data_pattern", "{shards}", "--protocol",
      "polynet_multicrop", "--topk_fraction", "1.5"], r"topk_fraction must be in \(0, 1\]"),
    (["--saved_model", "nowhere", "--data_pattern", "{shards}", "--protocol", "shorter_side",
      "--crop_size", "400", "--scales", "378"], "crop_size 400 is larger than scale"),
    (["--saved_model", "nowhere", "--data_pattern", "{shards}", "--crop_fraction", "0.9",
      "--protocol", "shorter_side"], "--crop_fraction applies to --protocol single only"),
    (["--saved_model", "nowhere", "--data_pattern", "{shards}", "--protocol", "googlenet144",
      "--topk_fraction", "0.5"], "--topk_fraction applies to --protocol polynet_multicrop"),
    (["--saved_model", "nowhere", "--data_pattern", "{shards}", "--scales", "300"],
     "--scales applies to .* only; --protocol single does not use it"),
    (["--saved_model", "nowhere", "--data_pattern", "{shards}", "--protocol", "shorter_side",
      "--scales", "378,400"], "takes one scale"),
    (["--saved_model", "nowhere", "--data_pattern", "{shards}", "--protocol", "shorter_side",
      "--crops_per_scale", "18"], "--crops_per_scale applies to --protocol googlenet144"),
])
def test_bad_inputs_give_clear_errors(colour_shards, parsed_flags, args, message):
    from polynet_tf import evaluate

    flag_values = parsed_flags(
        *[a.replace("{shards}", str(colour_shards / "validation-*")) for a in args])
    with pytest.raises((evaluate.UsageError, ValueError, FileNotFoundError), match=message):
        evaluate.run(flag_values)


def test_corrupt_image_stops_with_a_clear_error_and_no_report(tmp_path, parsed_flags, capsys):
    from polynet_tf import evaluate
    from polynet_tf.data import example_format
    from tests.evaluation.test_model_sources import save_colour_saved_model as save

    save(tmp_path / "sm")
    example_format.write_shard(str(tmp_path / "validation-00000-of-00001"), [
        example_format.make_example(b"not an image", 0, "c", 1, 1, "bad.jpg")
        .SerializeToString()])
    output = tmp_path / "report.json"
    status = evaluate.main(["--noprogress", "--saved_model", str(tmp_path / "sm"),
                            "--data_pattern", str(tmp_path / "validation-*"), "--crop_size",
                            "16", "--output", str(output)])
    assert status == evaluate.EXIT_USAGE
    assert "evaluation stopped: Unknown image file format" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize("protocol, value, crops", [
    ("googlenet144", None, 36), ("googlenet144", "18", 18), ("polynet_multicrop", "36", 36),
    ("polynet_multicrop", "18", 18)])
def test_crops_per_scale_option_of_the_multicrop_protocols(parsed_flags, protocol, value, crops):
    from polynet_tf import evaluate

    args = ["--protocol", protocol] + (["--crops_per_scale", value] if value else [])
    protocol_object = evaluate.protocol_from_flags(parsed_flags(*args))
    assert protocol_object.crops_per_scale == crops
    assert protocol_object.mirror == (crops == 36)
