"""`python -m polynet_tf.grow`: files written, loadable, and errors without writes."""

import json
import os

import numpy as np

from polynet_tf import PolyNet
from polynet_tf.grow import report_paths
from polynet_tf.grow.__main__ import main
from tests.conftest import TINY_WIDTH
from tests.grow.conftest import images, predict, randomize_batch_norms, tiny

SMALL = "A: ir | B: ir*2 | C: ir"
ARGS = ["--width_multiplier", str(TINY_WIDTH), "--classes", "10"]


def test_command_line_writes_loadable_weights_and_both_reports(tmp_path, capsys):
    # The command's entry point in this process; test_remote_storage.py runs
    # it as `python -m polynet_tf.grow`.
    small = randomize_batch_norms(tiny(SMALL), seed=6)
    small.save_weights(tmp_path / "small.weights.h5")
    output = tmp_path / "out" / "grown.weights.h5"
    status = main([
        "--from_architecture", SMALL, "--from_checkpoint", str(tmp_path / "small.weights.h5"),
        "--to_architecture", "A: ir*2 | B: poly2*2 | C: mpoly2",
        "--output", str(output), "--mode", "function_preserving", "--path_gates", *ARGS,
    ])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert "stage_b_0 (poly2) <- stage_b_0 (ir)" in printed.out
    text_report, json_report = report_paths(output)
    assert sorted(os.listdir(output.parent)) == sorted(
        os.path.basename(p) for p in (output, text_report, json_report))
    report = json.loads(open(json_report).read())
    assert report["mode"] == "function_preserving" and report["target"]["path_gates"]
    assert "predictions/kernel" in open(text_report).read()
    grown = PolyNet("A: ir*2 | B: poly2*2 | C: mpoly2", weights=str(output), path_gates=True,
                    width_multiplier=TINY_WIDTH, classes=10, input_shape=(75, 75, 3))
    x = images(seed=6)
    assert np.abs(predict(grown, x) - predict(small, x)).max() <= 1e-5


def test_dry_run_and_errors_write_nothing(tmp_path, capsys):
    tiny(SMALL).save_weights(tmp_path / "small.weights.h5")
    output = tmp_path / "grown.weights.h5"
    status = main([
        "--from_architecture", SMALL, "--from_checkpoint", str(tmp_path / "small.weights.h5"),
        "--to_architecture", "A: ir*2 | B: 2way*2 | C: ir", "--output", str(output),
        "--dry_run", *ARGS,
    ])
    assert status == 0
    assert "stage_a_1 (ir) <- inserted" in capsys.readouterr().out
    status = main([
        "--from_architecture", SMALL, "--from_checkpoint", str(tmp_path / "small.weights.h5"),
        "--to_architecture", "A: ir | B: poly2*2 | C: ir", "--output", str(output),
        "--mode", "function_preserving", *ARGS,
    ])
    assert status == 2
    error = capsys.readouterr().err
    assert "`stage_b_0`" in error and "--path_gates" in error
    assert sorted(os.listdir(tmp_path)) == ["small.weights.h5"]


def test_source_of_another_width_or_truncated_is_named_not_a_keras_message(tmp_path, capsys):
    wide = PolyNet(SMALL, weights=None, width_multiplier=2 * TINY_WIDTH, classes=10,
                   input_shape=(75, 75, 3))
    wide.save_weights(tmp_path / "wide.weights.h5")
    output = tmp_path / "out" / "grown.weights.h5"
    args = ["--from_architecture", SMALL, "--from_checkpoint", str(tmp_path / "wide.weights.h5"),
            "--to_architecture", "A: ir*2 | B: ir*2 | C: ir", "--output", str(output), *ARGS]
    assert main(args) == 2
    error = capsys.readouterr().err
    conv = wide.get_layer("stem").weights[0]
    small_shape = (*conv.shape[:3], tiny(SMALL).get_layer("stem").weights[0].shape[3])
    assert f"has shape {tuple(conv.shape)} in the file but {small_shape}" in error, error
    assert "expected 1 variables" not in error and "Traceback" not in error
    data = (tmp_path / "wide.weights.h5").read_bytes()
    (tmp_path / "cut.weights.h5").write_bytes(data[: len(data) // 2])
    args[3] = str(tmp_path / "cut.weights.h5")
    assert main(args) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert not output.parent.exists()


def test_help_and_bad_values_of_the_command(capsys):
    assert main(["--help"]) == 0
    assert "--from_architecture" in capsys.readouterr().out
    assert main(["--from_architecture=a", "--from_checkpoint=b", "--to_architecture=c",
                 "--output=d.weights.h5", "--classes=0"]) == 2
    assert "--classes" in capsys.readouterr().err
