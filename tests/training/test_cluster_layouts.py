"""TF_CONFIG as Kubeflow's TFJob writes it (chief + worker + evaluator), with URIs."""

import os
import re

import pytest
import tensorflow as tf

from tests.training.conftest import free_ports, launch, overrides, train_command

pytestmark = pytest.mark.slow


def test_chief_and_worker_train_together_and_the_evaluator_stays_out(synthetic_shards,
                                                                    tmp_path):
    # Every path a URI that only TensorFlow resolves, run from an empty folder.
    train, validation = (f"file://{pattern}" for pattern in synthetic_shards)
    model_dir = tmp_path / "run"
    params = overrides((train, validation), **{
        "train_data.global_batch_size": 16, "trainer.train_steps": 4,
        "trainer.steps_per_loop": 2, "trainer.checkpoint_interval": 4,
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
        for name in ("chief", "worker", "evaluator")}
    logs = {}
    for name, process in tasks.items():
        code = process.wait(timeout=600)
        logs[name] = open(tmp_path / f"{name}.log").read()
        assert code == 0, (name, logs[name][-3000:])
    assert "nothing to do and exits" in logs["evaluator"]
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
