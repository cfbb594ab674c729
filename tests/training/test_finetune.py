"""Fine-tuning (`init` section): transfer, freezing, BatchNorm, head rate, clear errors."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from polynet_tf.configs import ConfigError, load_experiment
from polynet_tf.configs.base import write_yaml
from polynet_tf.data import make_example, write_class_index, write_shard
from polynet_tf import train
from polynet_tf.models.factory import build_model
from polynet_tf.training import finetune
from polynet_tf.training.trainer import Trainer
from tests.training.conftest import (SMALL_ARCHITECTURE, TINY_CONFIG, free_ports, launch,
                                     overrides, train_command)
from tests.training.synthetic_data import synthetic_image

# The second task: 3 classes, stripe orientations the first task also had.
NEW_TASK_PATTERNS = (0, 1, 3)  # horizontal, vertical, checker
FAST = {"train_data.global_batch_size": 16, "trainer.steps_per_loop": 10,
        "trainer.checkpoint_interval": 1000, "trainer.eval_interval": 1000,
        "model.dropout_rate": 0.0}


def _write_new_task(directory, num_train=96, num_val=48, seed=7):
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    classes = [f"n1000000{i}" for i in range(len(NEW_TASK_PATTERNS))]
    for split, count in (("train", num_train), ("validation", num_val)):
        records = []
        for i in range(count):
            label = i % len(NEW_TASK_PATTERNS)
            buffer = io.BytesIO()
            Image.fromarray(synthetic_image(NEW_TASK_PATTERNS[label], rng)).save(
                buffer, "JPEG", quality=95)
            records.append(make_example(buffer.getvalue(), label, classes[label], 80, 80,
                                        f"{split}_{i}.jpg").SerializeToString())
        write_shard(os.path.join(directory, f"{split}-00000-of-00001"), records)
    write_class_index(directory, classes, 0)
    return os.path.join(directory, "train-*"), os.path.join(directory, "validation-*")


def _config(shards, **values):
    return load_experiment([TINY_CONFIG], overrides(shards, **{**FAST, **values}),
                           mode="train_and_eval")


def _trainer(config, model_dir):
    return Trainer(config, str(model_dir), tf.distribute.OneDeviceStrategy("/cpu:0"))


@pytest.fixture(scope="module")
def source_run(synthetic_shards, tmp_path_factory):
    """A run trained on the 4-class task: its model_dir (params.yaml, checkpoints/)."""
    model_dir = tmp_path_factory.mktemp("source_run")
    config = _config(synthetic_shards, **{"trainer.train_steps": 60})
    write_yaml(config.to_dict(), str(model_dir / "params.yaml"))
    trainer = _trainer(config, model_dir)
    trainer.train()
    return str(model_dir), {v.path: v.numpy() for v in trainer.model.weights}


@pytest.fixture(scope="module")
def new_task(tmp_path_factory):
    return _write_new_task(str(tmp_path_factory.mktemp("new_task")))


def _finetune_config(new_task, source, steps, **values):
    return _config(new_task, **{"model.num_classes": 3, "init.weights": source,
                                "trainer.train_steps": steps, **values})


@pytest.mark.slow
def test_finetuning_beats_training_from_scratch(source_run, new_task, tmp_path):
    model_dir, source_weights = source_run
    tuned = _trainer(_finetune_config(new_task, model_dir, 20), tmp_path / "tuned")
    report = json.loads((tmp_path / "tuned" / finetune.REPORT_FILE).read_text())
    # Everything but the 3-class head comes from the source run.
    assert [n["weight"] for n in report["new"]] == ["predictions/kernel", "predictions/bias"]
    assert report["new"][1] == {"weight": "predictions/bias", "shape": [3],
                                "source_shape": [4]}
    assert len(report["loaded"]) == len(tuned.model.weights) - 2
    for variable in tuned.model.weights[:5]:
        np.testing.assert_array_equal(variable.numpy(), source_weights[variable.path])
    scratch = _trainer(_config(new_task, **{"model.num_classes": 3, "trainer.train_steps": 20}),
                       tmp_path / "scratch")
    tuned.train()
    scratch.train()
    tuned_loss, scratch_loss = tuned.evaluate()["loss"], scratch.evaluate()["loss"]
    print(f"validation loss after 20 steps: fine-tuned {tuned_loss:.3f}, scratch "
          f"{scratch_loss:.3f}")
    assert tuned_loss < 0.8 * scratch_loss, (tuned_loss, scratch_loss)


def _changed(model, source_weights, prefixes):
    """{path: whether it differs from the source} of the weights under `prefixes`."""
    return {v.path: not np.array_equal(v.numpy(), source_weights[v.path])
            for v in model.weights if v.path.startswith(prefixes) and v.path in source_weights}


# What init.freeze=stage_b freezes in SMALL_ARCHITECTURE, and what it leaves to train.
FROZEN_BY_STAGE_B = ("stem/", "stage_a_", "reduction_a/", "stage_b_")
ABOVE_STAGE_B = ("reduction_b/", "stage_c_")


@pytest.mark.slow
def test_head_rate_multiplier_changes_only_the_head_and_batch_norm_stays_fixed(
        source_run, new_task, tmp_path):
    """One step from the same weights and batch with head multipliers 1 and 8."""
    model_dir, source_weights = source_run
    runs = {}
    for multiplier in (1.0, 8.0):
        config = _config(new_task, **{
            "trainer.train_steps": 1, "model.num_classes": 4, "init.weights": model_dir,
            "init.batch_norm_inference": True,
            "init.head_learning_rate_multiplier": multiplier})
        trainer = _trainer(config, tmp_path / str(multiplier))
        trainer.train()
        runs[multiplier] = {v.path: v.numpy() - source_weights[v.path]
                            for v in trainer.model.weights}
        assert (trainer.head_optimizer is None) == (multiplier == 1.0)
    for path, delta in runs[1.0].items():
        scale = np.abs(delta).max()
        if path.endswith(("moving_mean", "moving_variance")):
            assert scale == 0 and np.abs(runs[8.0][path]).max() == 0, path
        elif path.startswith("predictions/"):
            assert scale > 0
            np.testing.assert_allclose(runs[8.0][path], 8 * delta, rtol=0, atol=0.02 * 8 * scale)
        elif path.endswith("conv/kernel"):
            # The same update (up to float reassociation), not 8 times it.
            assert scale > 0, path
            np.testing.assert_allclose(runs[8.0][path], delta, rtol=0, atol=0.02 * scale,
                                       err_msg=path)
    # The head's optimizer is checkpointed with the rest.
    saved = tf.train.latest_checkpoint(str(tmp_path / "8.0" / "checkpoints"))
    assert any(name.startswith("head_optimizer/") for name, _ in tf.train.list_variables(saved))


def test_warm_up_starts_near_zero(new_task):
    from polynet_tf.training.optimization import build_optimizer

    config = _config(new_task, **{"schedule.warmup_steps": 100})
    _, schedule = build_optimizer(config.optimizer, config.schedule, 16)
    # The first step already runs at peak / warmup_steps, then linearly up.
    assert float(schedule(0)) == pytest.approx(schedule.peak / 100)
    assert float(schedule(49)) == pytest.approx(schedule.peak / 2)
    assert float(schedule(99)) == pytest.approx(schedule.peak)


def test_a_source_that_does_not_fit_stops_before_the_first_step(source_run, new_task,
                                                                 tmp_path):
    # A narrower model (model.width_multiplier) is the train command's case below.
    model_dir, _ = source_run
    config = _finetune_config(new_task, model_dir, 5, **{
        "model.architecture": "A: 2way | B: 2way | C: 2way"})
    with pytest.raises(finetune.FineTuneError,
                       match=r"do not fit the model .* `stage_b_0/.*` .* is missing from the "
                             r"source"):
        _trainer(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()
    assert not (tmp_path / finetune.REPORT_FILE).exists()


def _tree(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in folder.rglob("*") if path.is_file()}


@pytest.mark.slow
def test_the_train_command_stops_with_exit_status_2_and_writes_nothing(source_run, new_task,
                                                                      tmp_path):
    model_dir, _ = source_run
    # A misspelt source into a new folder; a source that does not fit into a
    # folder that already holds files (both commands at once: half the wait).
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("kept as it was")
    before = _tree(tmp_path / "existing")
    cases = {"new": {"init.weights": model_dir + "_typo"},
             "existing": {"init.weights": model_dir, "model.width_multiplier": 0.25}}
    processes = {name: launch(train_command(str(tmp_path / name), overrides(new_task, **{
        "model.num_classes": 3, "trainer.train_steps": 5, **values})),
        str(tmp_path / f"{name}.log")) for name, values in cases.items()}
    for process in processes.values():
        assert process.wait(timeout=300) == 2
    log = (tmp_path / "new.log").read_text()
    assert f"Cannot fine-tune: init.weights '{model_dir}_typo' does not exist" in log
    assert not (tmp_path / "new").exists()
    log = (tmp_path / "existing.log").read_text()
    assert "Cannot fine-tune: The initial weights" in log
    assert ("`stem/conv1/conv/kernel` has shape (3, 3, 3, 8) in the model but (3, 3, 3, 4) "
            "in the source") in log
    assert _tree(tmp_path / "existing") == before


@pytest.mark.slow
def test_two_workers_fine_tune_from_the_same_weights(source_run, new_task, tmp_path):
    model_dir, source_weights = source_run
    params = overrides(new_task, **{
        "model.num_classes": 3, "init.weights": model_dir, "init.freeze": "stage_b",
        "init.head_learning_rate_multiplier": 4.0, "trainer.train_steps": 3,
        "trainer.steps_per_loop": 1, "train_data.global_batch_size": 16,
        "runtime.collective_timeout_seconds": 60, "runtime.startup_timeout_seconds": 120})
    hosts = [f"localhost:{port}" for port in free_ports(2)]
    run_dir = tmp_path / "run"
    workers = [launch(train_command(str(run_dir), params, worker_hosts=hosts, task_index=i),
                      str(tmp_path / f"worker_{i}.log")) for i in range(2)]
    for index, worker in enumerate(workers):
        log = tmp_path / f"worker_{index}.log"
        assert worker.wait(timeout=600) == 0, log.read_text()[-3000:]
        # Every worker loads the source before its first step.
        assert "Fine-tuning from" in log.read_text()
    chief_log = (tmp_path / "worker_0.log").read_text()
    assert f"Initialized from {model_dir} (a new run, step 0)" in chief_log
    assert "Resumed from" not in chief_log
    assert json.loads((run_dir / finetune.REPORT_FILE).read_text())["frozen_layers"] == [
        "stem", "stage_a_0", "reduction_a", "stage_b_0"]
    final = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    assert final.endswith("ckpt-3")
    names = [name for name, _ in tf.train.list_variables(final)]
    assert any(name.startswith("head_optimizer/") for name in names)
    model = build_model(_finetune_config(new_task, model_dir, 3).model, image_size=75)
    tf.train.Checkpoint(model=model).restore(final).expect_partial()
    # The frozen stages stay bit-identical, kernels and BatchNorm statistics alike;
    # above them the kernels and moving means trained.
    frozen = _changed(model, source_weights, FROZEN_BY_STAGE_B)
    assert frozen and not any(frozen.values()), [p for p, c in frozen.items() if c]
    above = _changed(model, source_weights, ABOVE_STAGE_B)
    assert above and all(above[p] for p in above if p.endswith(("kernel", "moving_mean")))


def test_loads_into_mirrored_variables_in_the_strategy_scope(source_run, new_task, tmp_path):
    model_dir, source_weights = source_run
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    trainer = Trainer(_finetune_config(new_task, model_dir, 1, **{"init.freeze": "stage_b"}),
                      str(tmp_path), strategy)
    assert trainer.restored_from == model_dir and not trainer.resumed
    frozen = {v.path for v in trainer.model.weights if v.path.startswith(FROZEN_BY_STAGE_B)}
    assert frozen and {v.path for v in trainer.model.trainable_variables}.isdisjoint(frozen)
    assert train._start_message(trainer) == f"Initialized from {model_dir} (a new run, step 0)"
    # The copies of every replica (one here) hold the source's values.
    assert isinstance(trainer.model.weights[0].value, tf.distribute.DistributedValues)
    for variable in trainer.model.weights:
        if variable.path.startswith("predictions/"):
            assert variable.shape[-1] == 3
        else:
            np.testing.assert_array_equal(variable.numpy(), source_weights[variable.path])


def test_from_a_weights_file_its_classes_are_read_from_it(new_task, tmp_path):
    source = build_model(_config(new_task).model, image_size=75)  # 4 classes
    path = str(tmp_path / "source.weights.h5")
    source.save_weights(path)
    trainer = _trainer(_config(new_task, **{"init.weights": path, "model.num_classes": 3}),
                       tmp_path / "run")
    report = json.loads((tmp_path / "run" / finetune.REPORT_FILE).read_text())
    assert report["source"] == {"kind": "weights_file", "path": path,
                                "architecture": SMALL_ARCHITECTURE, "num_classes": 4}
    assert report["new"][0] == {"weight": "predictions/kernel", "shape": [256, 3],
                                "source_shape": [256, 4]}
    expected = {v.path: v.numpy() for v in source.weights}
    for variable in trainer.model.weights[:-2]:
        np.testing.assert_array_equal(variable.numpy(), expected[variable.path])


def test_a_weights_file_missing_weights_is_refused(new_task, tmp_path):
    smaller = _config(new_task, **{"model.architecture": "A: 2way | B: 2way | C: 2way"})
    path = str(tmp_path / "small.weights.h5")
    build_model(smaller.model, image_size=75).save_weights(path)
    # The file claims to be the model's architecture but lacks its poly-3 weights.
    config = _config(new_task, **{"init.weights": path, "model.num_classes": 3,
                                  "init.architecture": SMALL_ARCHITECTURE})
    with pytest.raises(finetune.FineTuneError, match="does not fit its architecture"):
        _trainer(config, tmp_path / "run")
    with pytest.raises(finetune.FineTuneError, match="does not exist"):
        _trainer(_config(new_task, **{"init.weights": str(tmp_path / "none")}), tmp_path / "b")


def test_init_section_round_trips_through_params_yaml(tmp_path):
    values = {"init": {"weights": "runs/a", "freeze": "reduction_a",
                       "batch_norm_inference": True, "head_learning_rate_multiplier": 10.0}}
    path = tmp_path / "params.yaml"
    write_yaml(values, str(path))
    loaded = load_experiment([TINY_CONFIG, str(path)], "train_data.file_pattern=/d/t-*")
    assert loaded.init.freeze == "reduction_a" and loaded.init.batch_norm_inference
    write_yaml(loaded.to_dict(), str(path))
    assert load_experiment([str(path)]).to_dict() == loaded.to_dict()
    assert yaml.safe_load(path.read_text())["init"]["head_learning_rate_multiplier"] == 10.0


@pytest.mark.parametrize("override, message", [
    ("init.freeze=stage_d", r"'init.freeze' must be one of \['none', 'stem'"),
    ("init.head_learning_rate_multiplier=0.0", "'init.head_learning_rate_multiplier' must be"),
    ("init.weights=imagenet", "'init.weights: imagenet' are the released very_deep weights"),
    ("init.num_classes=5", "describe 'init.weights'; set it too"),
    ("init.weights=x.weights.h5,init.head_learning_rate_multiplier=2.0,"
     "trainer.mixed_precision=mixed_float16", "mixed_bfloat16"),
])
def test_bad_init_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment([TINY_CONFIG], "train_data.file_pattern=/d/t-*," + override)


def test_freeze_parts_follow_the_layer_names():
    config = load_experiment([TINY_CONFIG], "train_data.file_pattern=/d/t-*")
    model = build_model(config.model, image_size=75)
    names = [layer.name for layer in finetune.frozen_layers(model, "reduction_a")]
    assert names == ["stem", "stage_a_0", "stage_a_1", "reduction_a"]
    backbone = [layer.name for layer in finetune.frozen_layers(model, "backbone")]
    assert backbone[-1] == "stage_c_1" and "predictions" not in backbone
    assert finetune.frozen_layers(model, "none") == []
