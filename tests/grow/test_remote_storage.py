"""Growth with every path a `file://` URI (read and written only through tf.io.gfile)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from polynet_tf import PolyNet
from polynet_tf.grow import report_paths
from tests.conftest import TINY_WIDTH
from tests.grow.conftest import images, predict, randomize_batch_norms, tiny

SMALL = "A: ir | B: ir | C: ir"
BIG = "A: ir*2 | B: ir | C: ir"
ARGS = ["--width_multiplier", str(TINY_WIDTH), "--classes", "10"]


@pytest.mark.slow
def test_command_line_reads_and_writes_file_uris_from_an_empty_directory(tmp_path):
    data, work = tmp_path / "data", tmp_path / "cwd"
    data.mkdir()
    work.mkdir()
    small = randomize_batch_norms(tiny(SMALL), seed=2)
    small.save_weights(data / "small.weights.h5")
    output = data / "out" / "grown.weights.h5"
    command = [
        sys.executable, "-m", "polynet_tf.grow", "--from_architecture", SMALL,
        "--from_checkpoint", f"file://{data}/small.weights.h5", "--to_architecture", BIG,
        "--output", f"file://{output}", "--mode", "function_preserving", *ARGS,
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300,
                            cwd=work)
    assert result.returncode == 0, result.stderr
    assert os.listdir(work) == []  # no file:// path was taken for a relative local one
    text_report, json_report = report_paths(output)
    assert sorted(os.listdir(output.parent)) == sorted(
        os.path.basename(p) for p in (output, text_report, json_report))
    assert json.loads(open(json_report).read())["mode"] == "function_preserving"
    grown = PolyNet(BIG, weights=str(output), width_multiplier=TINY_WIDTH, classes=10,
                    input_shape=(75, 75, 3))
    x = images(seed=2)
    assert np.abs(predict(grown, x) - predict(small, x)).max() <= 1e-5
