"""TF_CONFIG as Kubeflow's TFJob writes it (chief + worker + evaluator), with URIs."""

import json
import os
import re

import pytest
import tensorflow as tf

from tests.training.conftest import free_ports, launch, overrides, train_command

pytestmark = pytest.mark.slow


def test_chief_and_worker_train_together_and_the_evaluator_evaluates_each_checkpoint(
        synthetic_shards, tmp_path):
    # Every path a URI that only TensorFlow resolves, run from an empty folder.
    train, validation = (f"file://{pattern}" for pattern in synthetic_shards)
    model_dir = tmp_path / "run"
    params = overrides((train, validation), **{
        "train_data.global_batch_size": 16, "trainer.train_steps": 4,
        "trainer.steps_per_loop": 2, "trainer.checkpoint_interval": 2,
        "trainer.eval_interval": 4, "trainer.summary_interval": 2,
        "runtime.collective_timeout_seconds": 60, "runtime.startup_timeout_seconds": 120})
    ports = free_ports(3)
    cluster = {"chief": [f"localhost:{ports[0]}"], "worker": [f"localhost:{ports[1]}"],
               "evaluator": [f"localhost:{ports[2]}"]}
    empty = tmp_path / "cwd"
    empty.mkdir()
    command = train_command(f"file://{model_dir}", params, mode="train_and_eval")
    tasks = {name: launch(command, tmp_path / f"{name}.log", cwd=str(empty), tf_config={
        "cluster": cluster, "task": {"type": name, "index": 0}})
        for name in ("evaluator", "chief", "worker")}
    logs = {}
    for name, process in tasks.items():
        code = process.wait(timeout=600)
        logs[name] = open(tmp_path / f"{name}.log").read()
        assert code == 0, (name, logs[name][-3000:])
    assert "final step" not in logs["evaluator"]
    # Two input pipelines, one per training task, in tf.distribute's order.
    assert "task 0: training input pipeline 0 of 2, 2 replica(s)" in logs["chief"]
    assert "task 1: training input pipeline 1 of 2, 2 replica(s)" in logs["worker"]
    # Evaluation on both replicas read the 64 validation images once.
    assert "final step 4:" in logs["chief"], logs["chief"][-3000:]
    assert re.search(r"step 4 validation: .* on 64 images", logs["chief"]), logs["chief"][-3000:]
    # Only the chief wrote: one params.yaml, the checkpoint, no worker copy left.
    assert os.listdir(empty) == []
    assert (model_dir / "params.yaml").exists()
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")).endswith("ckpt-4")
    assert not tf.io.gfile.glob(str(model_dir / ".worker_tmp" / "*" / "*"))
    assert len(os.listdir(model_dir / "train")) == 1  # one events file: one writer
    _check_the_evaluator(model_dir, synthetic_shards[1], logs["evaluator"], tmp_path)


def _check_the_evaluator(model_dir, validation, log, tmp_path):
    """Its figures are those of python -m polynet_tf.evaluate; a restart evaluates nothing."""
    from polynet_tf import evaluate, runs

    record = json.loads((model_dir / "continuous_eval" / "record.json").read_text())
    evaluated = record["evaluated"]
    # Each checkpoint once; the last one always (one written while another is
    # evaluated may be passed over for a later one).
    assert "ckpt-4" in evaluated and set(evaluated) <= {"ckpt-2", "ckpt-4"}, log[-3000:]
    assert "continuous evaluation: %d checkpoint(s) evaluated; best" % len(evaluated) in log
    for name, entry in evaluated.items():
        report = json.loads((model_dir / "continuous_eval" / f"{name}.json").read_text())
        assert report["step"] == entry["step"] == int(name.split("-")[1])
        output = tmp_path / f"evaluate_{name}.json"
        assert evaluate.main(["--noprogress", "--checkpoint", str(model_dir / "checkpoints"
                                                                  / name),
                              "--data_pattern", validation, "--output", str(output)]) == 0
        expected = json.loads(output.read_text())
        assert expected["num_images"] == 64
        for key in ("num_images", "top1_accuracy", "top4_accuracy", "per_class", "protocol"):
            assert report[key] == expected[key], (name, key)
    best = max(evaluated.values(), key=lambda e: (e["top1_accuracy"], -e["step"]))
    assert record["best"]["checkpoint"] == best["checkpoint"]
    top1 = dict(runs.read_scalars(str(model_dir / "eval"))["top1"])
    assert all(top1[e["step"]] == pytest.approx(e["top1_accuracy"]) for e in evaluated.values())
    # Restarted with another network asked for: it reads params.yaml, never
    # writes it, and evaluates nothing twice.
    params, reports = model_dir / "params.yaml", model_dir / "continuous_eval"
    before = {p.name: p.stat().st_mtime_ns for p in [params, *reports.iterdir()]}
    again = launch(train_command(model_dir, overrides((validation, validation), **{
        "model.num_classes": 5}), mode="continuous_eval"), tmp_path / "again.log")
    assert again.wait(timeout=300) == 0, open(tmp_path / "again.log").read()[-3000:]
    assert "continuous evaluation: %d checkpoint(s) evaluated" % len(evaluated) in open(
        tmp_path / "again.log").read()
    assert {p.name: p.stat().st_mtime_ns for p in [params, *reports.iterdir()]} == before
