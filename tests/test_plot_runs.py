"""plot_runs: one point per finished run, cost from params.yaml, result by the documented rule."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml

from polynet_tf import plot_runs
from polynet_tf.models import PolyNet
from polynet_tf.runs import RunError, final_eval_result, read_scalars

SMALL = "A: 2way | B: 2way | C: 2way"
LARGER = "A: 2way | B: poly3[convs], 2way | C: 2way"


def _write_run(model_dir, architecture, width, train_steps=100, image_size=75):
    os.makedirs(model_dir, exist_ok=True)
    params = {"model": {"architecture": architecture, "num_classes": 10,
                        "width_multiplier": width},
              "train_data": {"image_size": image_size},
              "eval_data": {"image_size": image_size},
              "trainer": {"train_steps": train_steps}}
    with open(os.path.join(model_dir, "params.yaml"), "w") as f:
        yaml.safe_dump(params, f)
    return str(model_dir)


def _write_eval_summaries(model_dir, points):
    """Validation summaries as the trainer writes them (tf.summary.scalar in eval/)."""
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))
    with writer.as_default():
        for step, top1, top5 in points:
            tf.summary.scalar("top1", top1, step=step)
            tf.summary.scalar("top5", top5, step=step)
    writer.close()


def _write_json(model_dir, protocol, top1, top5):
    """A report in the evaluator's format (`python -m polynet_tf.evaluate --output`)."""
    report = {"num_images": 32, "top1_accuracy": top1, "top1_error": 1 - top1,
              "top5_accuracy": top5, "top5_error": 1 - top5, "per_class": [],
              "protocol": {"name": protocol, "crop_size": 75}}
    with open(os.path.join(model_dir, f"evaluation_{protocol}.json"), "w") as f:
        json.dump(report, f)


def test_points_come_from_params_and_results(tmp_path):
    small = _write_run(tmp_path / "small", SMALL, 0.0625)
    larger = _write_run(tmp_path / "larger", LARGER, 0.125)
    _write_eval_summaries(small, [(50, 0.5, 0.9), (100, 0.625, 0.875)])
    _write_json(larger, "single", 0.75, 0.96875)
    _write_json(larger, "polynet_multicrop", 0.8125, 1.0)

    point_small = plot_runs.run_point(small)
    point_larger = plot_runs.run_point(larger)
    assert (point_small.label, point_larger.label) == ("small", "larger")
    # Trainer summaries: the value at the last step; JSON: "single" among several protocols.
    assert point_small.value == pytest.approx(62.5)
    assert point_small.source == os.path.join(small, "eval")
    assert point_larger.value == pytest.approx(75.0)
    assert point_larger.source.endswith("evaluation_single.json")
    assert plot_runs.run_point(larger, protocol="polynet_multicrop").value == pytest.approx(81.25)
    assert plot_runs.run_point(small, metric="top5_error").value == pytest.approx(12.5)
    assert plot_runs.run_point(larger, metric="top1_error").value == pytest.approx(25.0)
    # Cost: a bigger network (wider, with a poly-3) costs more.
    assert point_larger.multiply_adds > 2 * point_small.multiply_adds


def test_cost_is_the_built_networks_multiply_adds(tmp_path):
    """The x coordinate against multiply-adds counted on the built Keras model."""
    run = _write_run(tmp_path / "run", SMALL, 0.0625)
    _write_json(run, "single", 0.5, 0.75)
    model = PolyNet(SMALL, width_multiplier=0.0625, classes=10, input_shape=(75, 75, 3))
    assert plot_runs.run_point(run).multiply_adds == _traced_multiply_adds(model)


def _traced_multiply_adds(model):
    """Sum over Conv2D/Dense calls of output pixels x kernel size, hooked on call()."""
    import keras

    counted = []
    originals = {}
    for cls in (keras.layers.Conv2D, keras.layers.Dense):
        originals[cls] = cls.call

        def hooked(self, inputs, *args, _cls=cls, **kwargs):
            outputs = originals[_cls](self, inputs, *args, **kwargs)
            kernel = np.prod(self.kernel.shape)
            pixels = np.prod(outputs.shape[1:-1]) if len(outputs.shape) > 2 else 1
            counted.append(int(kernel * pixels))
            return outputs

        cls.call = hooked
    try:
        # training=True: at inference ConvBN may convolve with a BatchNorm-scaled
        # kernel through keras.ops.conv, past Conv2D.call; training goes
        # through every Conv2D (same multiply-adds).
        model(np.zeros((1, 75, 75, 3), np.float32), training=True)
    finally:
        for cls, call in originals.items():
            cls.call = call
    return sum(counted)


def test_unfinished_runs_and_runs_without_results_are_named(tmp_path):
    unfinished = _write_run(tmp_path / "unfinished", SMALL, 0.0625, train_steps=200)
    _write_eval_summaries(unfinished, [(100, 0.5, 0.9)])
    with pytest.raises(RunError, match="not finished: its last evaluation is at step 100 of 200"):
        final_eval_result(unfinished)
    empty = _write_run(tmp_path / "empty", SMALL, 0.0625)
    with pytest.raises(RunError, match="has no evaluation result"):
        plot_runs.run_point(empty)
    with pytest.raises(RunError, match="no params.yaml"):
        plot_runs.run_point(str(tmp_path / "nothing"))
    ambiguous = _write_run(tmp_path / "ambiguous", SMALL, 0.0625)
    _write_json(ambiguous, "googlenet144", 0.5, 0.9)
    _write_json(ambiguous, "polynet_multicrop", 0.6, 0.9)
    with pytest.raises(RunError, match="choose one with --protocol"):
        plot_runs.run_point(ambiguous)
    # The trainer's validation stands in for "single" only, never for a multi-crop protocol.
    finished = _write_run(tmp_path / "finished", SMALL, 0.0625)
    _write_eval_summaries(finished, [(100, 0.5, 0.9)])
    assert plot_runs.run_point(finished, protocol="single").value == pytest.approx(50.0)
    with pytest.raises(RunError, match="has no polynet_multicrop evaluation report"):
        plot_runs.run_point(finished, protocol="polynet_multicrop")


def test_cli_writes_a_png_atomically_and_fails_clearly(tmp_path, capsys):
    first = _write_run(tmp_path / "first", SMALL, 0.0625)
    second = _write_run(tmp_path / "second", LARGER, 0.0625)
    _write_eval_summaries(first, [(100, 0.5, 0.875)])
    _write_json(second, "single", 0.75, 1.0)
    output = tmp_path / "figures" / "fig6.png"
    assert plot_runs.main([first, second, "--output", str(output), "--labels", "IR,Poly"]) == 0
    with open(output, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(output.parent)) == ["fig6.png"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(output).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    printed = capsys.readouterr().out
    assert "IR:" in printed and "Poly:" in printed and "top-1 accuracy (%) 75.00" in printed

    missing = tmp_path / "missing.png"
    assert plot_runs.main([first, str(tmp_path / "nowhere"), "--output", str(missing)]) == 2
    assert "no params.yaml" in capsys.readouterr().err
    assert not missing.exists()


def test_read_scalars_keeps_the_last_value_of_a_rewritten_step(tmp_path):
    _write_eval_summaries(str(tmp_path), [(10, 0.25, 0.5), (20, 0.5, 0.75)])
    first = set(os.listdir(tmp_path / "eval"))
    _write_eval_summaries(str(tmp_path), [(20, 0.625, 0.75)])  # a resumed run rewrote step 20
    scalars = read_scalars(os.path.join(tmp_path, "eval"))
    assert scalars["top1"] == [(10, 0.25), (20, 0.625)]
    # The later file may sort first by name (two writers in the same second):
    # its events are still the later ones.
    (rewrite,) = set(os.listdir(tmp_path / "eval")) - first
    os.rename(tmp_path / "eval" / rewrite, tmp_path / "eval" / "events.out.tfevents.0000000000.a")
    scalars = read_scalars(os.path.join(tmp_path, "eval"))
    assert scalars["top1"] == [(10, 0.25), (20, 0.625)]


def test_runs_and_figure_on_ram():
    """A run directory read and a figure written through tf.io.gfile only (`ram://`)."""
    import uuid  # noqa: PLC0415

    from polynet_tf import fileio  # noqa: PLC0415
    from polynet_tf.configs import write_yaml  # noqa: PLC0415
    from polynet_tf.runs import read_params  # noqa: PLC0415

    root = f"ram://runs-{uuid.uuid4().hex[:8]}"
    write_yaml({"model": {"architecture": SMALL, "num_classes": 10, "width_multiplier": 0.0625},
                "eval_data": {"image_size": 75}, "trainer": {"train_steps": 100}},
               f"{root}/summaries/params.yaml")
    _write_eval_summaries(f"{root}/summaries", [(50, 0.25, 0.5), (100, 0.375, 0.75)])
    assert read_params(f"{root}/summaries")["trainer"]["train_steps"] == 100
    result = final_eval_result(f"{root}/summaries")
    assert (result.top1, result.top5, result.step) == (0.375, 0.75, 100)
    write_yaml({"model": {"architecture": LARGER, "num_classes": 10, "width_multiplier": 0.0625}},
               f"{root}/json/params.yaml")
    fileio.write_json(f"{root}/json/evaluation_single.json",
                      {"top1_accuracy": 0.5, "top5_accuracy": 1.0, "protocol": {"name": "single"}})
    assert final_eval_result(f"{root}/json").source == f"{root}/json/evaluation_single.json"
    points = [plot_runs.run_point(f"{root}/{name}") for name in ("summaries", "json")]
    assert [p.label for p in points] == ["summaries", "json"]
    plot_runs.plot_points(points, f"{root}/figures/fig6.png")
    assert fileio.read_bytes(f"{root}/figures/fig6.png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_with_file_uris_from_an_empty_directory(tmp_path):
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    run = _write_run(tmp_path / "run", SMALL, 0.0625)
    _write_json(run, "single", 0.625, 0.875)
    work = tmp_path / "cwd"
    work.mkdir()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": repo}
    result = subprocess.run(
        [sys.executable, "-m", "polynet_tf.plot_runs", f"file://{run}",
         "--output", f"file://{tmp_path}/figures/fig6.png"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(work) == []  # no URI was taken for a relative local path
    assert "run:" in result.stdout and "62.50" in result.stdout
    assert (tmp_path / "figures" / "fig6.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path / "figures") == ["fig6.png"]
