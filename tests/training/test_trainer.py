"""The training loop on one worker, in process: learning, resuming, divergence."""

import inspect
import logging
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from absl import logging as absl_logging

from polynet_tf.configs import load_experiment
from polynet_tf.data import build_dataset
from polynet_tf.data.pipeline import PipelineStats
from polynet_tf.models import polyinception_modules
from polynet_tf.training.reporting import Reporter
from polynet_tf.training.trainer import Trainer, TrainingDivergedError
from tests.training.conftest import TINY_CONFIG, overrides
from tests.training.synthetic_data import write_dataset


def _trainer(shards, model_dir, **values):
    config = load_experiment([TINY_CONFIG], overrides(shards, **values), mode="train_and_eval")
    return Trainer(config, str(model_dir), tf.distribute.OneDeviceStrategy("/cpu:0"))


# Loops of 10 steps up to 120, one evaluation at the end.
LEARNING = {"trainer.train_steps": 120, "trainer.steps_per_loop": 10,
            "trainer.checkpoint_interval": 120, "trainer.eval_interval": 120}


@pytest.fixture(scope="module")
def first_steps(synthetic_shards, tmp_path_factory):
    """The default trainer (fused BatchNorm kernel) and its twin with Keras's BatchNorm layer,
    each after its first step (the same start, the same batch); the default one is evaluated
    before it and goes on learning in test_loss_falls_and_accuracy_rises (one traced trainer
    for both tests)."""
    root = tmp_path_factory.mktemp("first_steps")
    fused = _trainer(synthetic_shards, root / "fused", **LEARNING)
    layer = _trainer(synthetic_shards, root / "layer",
                     **dict(LEARNING, **{"trainer.batch_norm_kernel": "keras"}))
    start = {"fused": [w.numpy() for w in fused.model.weights],
             "layer": [w.numpy() for w in layer.model.weights]}
    before = fused.evaluate()
    after = {}
    for name, trainer in (("fused", fused), ("layer", layer)):
        trainer.config.trainer.train_steps = 1
        trainer.train()
        after[name] = (trainer.step, [w.numpy() for w in trainer.model.weights])
    return SimpleNamespace(fused=fused, layer=layer, start=start, before=before, after=after)


@pytest.mark.slow
def test_loss_falls_and_accuracy_rises(first_steps, tmp_path):
    trainer, before = first_steps.fused, first_steps.before  # evaluated at step 0, now at 1
    assert trainer.step == 1
    trainer.config.trainer.train_steps = 10
    first_loop = trainer.train()  # steps 2 to 10
    trainer.config.trainer.train_steps = 120
    last_loop = trainer.train()
    after = trainer.evaluate()
    assert trainer.step == 120
    assert after["num_images"] == 64
    assert last_loop["loss"] < 0.6 * first_loop["loss"]
    assert last_loop["top1"] > first_loop["top1"] + 0.2
    assert after["loss"] < before["loss"]
    assert after["top1"] >= 0.5  # 4 classes: chance is 0.25
    assert os.path.exists(os.path.join(trainer.checkpoint_dir, "ckpt-120.index"))


def _summary_steps(model_dir):
    steps = set()
    for path in (model_dir / "train").glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            if event.summary.value:
                steps.add(event.step)
    return sorted(steps)


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_run(synthetic_shards, tmp_path):
    # Accumulating 2 micro-batches of 16 (the stream skips updates x 2 of
    # them) and keeping an EMA of the weights (restored with them).
    settings = {"trainer.train_steps": 12, "trainer.steps_per_loop": 4,
                "trainer.checkpoint_interval": 8, "trainer.eval_interval": 100,
                "train_data.global_batch_size": 16, "trainer.accumulation_steps": 2,
                "trainer.ema_decay": 0.9, "trainer.summary_interval": 5}
    straight = _trainer(synthetic_shards, tmp_path / "straight", **settings)
    straight.train()  # one train(): one data stream, checkpoints at steps 8 and 12
    # Summaries every summary_interval steps and at the last one, not at the ends of
    # the loops of steps 4 and 8.
    assert _summary_steps(tmp_path / "straight") == [5, 10, 12]
    # A run stopped after step 8: the straight run's checkpoint of that step alone.
    stopped = tmp_path / "resumed" / "checkpoints"
    stopped.mkdir(parents=True)
    for path in (tmp_path / "straight" / "checkpoints").glob("ckpt-8.*"):
        shutil.copy(path, stopped)
    tf.compat.v1.train.update_checkpoint_state(str(stopped), str(stopped / "ckpt-8"))
    resumed = _trainer(synthetic_shards, tmp_path / "resumed", **settings)
    assert resumed.restored_from.endswith("ckpt-8")
    assert resumed.step == 8
    resumed.train()
    assert resumed.step == 12
    # Same data stream (skipped, not reshuffled) and same optimizer state.
    for a, b in zip(straight.model.weights, resumed.model.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)
    for a, b in zip(straight._ema.averages, resumed._ema.averages):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.name)


@pytest.fixture(scope="module")
def diverged(synthetic_shards, tmp_path_factory):
    """(trainer, its error) of a run whose learning rate makes it diverge: in
    mixed_bfloat16 with Keras's BatchNorm layer (its traced step serves the kernel test)."""
    trainer = _trainer(synthetic_shards, tmp_path_factory.mktemp("diverged"), **{
        "trainer.train_steps": 10, "trainer.steps_per_loop": 1,
        "trainer.checkpoint_interval": 1, "schedule.base_learning_rate": 1.0e12,
        "schedule.warmup_steps": 0, "trainer.mixed_precision": "mixed_bfloat16",
        "trainer.batch_norm_kernel": "keras"})
    with pytest.raises(TrainingDivergedError) as info:
        trainer.train()
    return trainer, info.value


def test_divergence_stops_with_the_last_good_checkpoint_intact(diverged):
    trainer, error = diverged
    latest = tf.train.latest_checkpoint(trainer.checkpoint_dir)
    assert latest is not None
    assert f"the last good checkpoint is {latest}" in str(error)
    last_good = int(latest.rsplit("-", 1)[1])
    assert last_good == trainer.step - 1
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name


IR_ARCHITECTURE = "A: ir | B: ir | C: ir"


@pytest.fixture(scope="module")
def small_run(synthetic_shards, tmp_path_factory):
    """(trainer, metrics) of two steps of a smaller network with every augmentation on: the
    augmentation test reads the metrics, the init_from test grows from its checkpoint."""
    trainer = _trainer(synthetic_shards, tmp_path_factory.mktemp("small"), **{
        "model.architecture": IR_ARCHITECTURE, "trainer.train_steps": 2,
        "trainer.steps_per_loop": 2, "trainer.checkpoint_interval": 2,
        "trainer.eval_interval": 100, "optimizer.label_smoothing": 0.1,
        "train_data.global_batch_size": 8, "train_data.randaugment_num_ops": 1,
        "train_data.random_erasing_probability": 0.5, "train_data.mixup_alpha": 0.8,
        "train_data.cutmix_alpha": 1.0})
    return trainer, trainer.train()


def test_init_from_grows_a_fresh_run_from_a_smaller_checkpoint(small_run, synthetic_shards,
                                                               tmp_path):
    small = small_run[0]
    config = load_experiment([TINY_CONFIG], overrides(synthetic_shards, **{
        "trainer.train_steps": 4, "trainer.checkpoint_interval": 4}))
    grown = Trainer(config, str(tmp_path / "grown"), tf.distribute.OneDeviceStrategy("/cpu:0"),
                    init_from=small.checkpoint_dir,
                    init_from_architecture=IR_ARCHITECTURE,
                    init_from_mode="function_preserving")
    assert grown.restored_from == small.checkpoint_dir
    assert grown.step == 0
    source = small.model.get_layer("stage_b_0").blocks[0].branches.ops[0].conv.kernel.numpy()
    target = grown.model.get_layer("stage_b_0").blocks[0].branches.ops[0].conv.kernel.numpy()
    np.testing.assert_array_equal(source, target)
    images, _ = next(iter(build_dataset(config.eval_data)))
    np.testing.assert_allclose(grown.model(images, training=False).numpy(),
                               small.model(images, training=False).numpy(), atol=1e-4)
    assert os.path.exists(tmp_path / "grown" / "init_from.mapping.txt")


class _LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.texts = []

    def emit(self, record):
        self.texts.append(record.getMessage())


@pytest.fixture(scope="module")
def overfitting_shards(tmp_path_factory):
    """Learnable training shards, validation labels shifted by one class."""
    return write_dataset(str(tmp_path_factory.mktemp("overfitting")), num_train=256, num_val=64,
                         validation_label_shift=1)


@pytest.mark.slow
def test_stochastic_paths_switch_on_when_training_outruns_validation(overfitting_shards,
                                                                     tmp_path):
    settings = {"trainer.train_steps": 80, "trainer.steps_per_loop": 10,
                "trainer.checkpoint_interval": 40, "trainer.eval_interval": 40,
                "trainer.adaptive_drop_path.enabled": True,
                "trainer.adaptive_drop_path.gap_threshold": 0.15,
                "trainer.adaptive_drop_path.max_rate": 0.25}
    trainer = _trainer(overfitting_shards, tmp_path, **settings)
    modules = polyinception_modules(trainer.model)
    assert [m.drop_path_rate for m in modules] == [0.0] * len(modules)
    messages = _LogRecords()
    # On absl's own logger, at INFO: what earlier tests in this process left
    # of absl's verbosity must not matter.
    absl_logger, verbosity = absl_logging.get_absl_logger(), absl_logging.get_verbosity()
    absl_logger.addHandler(messages)
    absl_logging.set_verbosity(absl_logging.INFO)
    try:
        trainer.train(evaluate_during_training=True)
    finally:
        absl_logger.removeHandler(messages)
        absl_logging.set_verbosity(verbosity)
    assert int(trainer.drop_path_switched_on.numpy()) == 1
    # The paper's linear schedule: 0 at the bottom module, max_rate at the top.
    np.testing.assert_allclose([m.drop_path_rate for m in modules],
                               np.linspace(0.0, 0.25, len(modules)), atol=1e-6)
    switched = [text for text in messages.texts if "stochastic paths on" in text]
    assert len(switched) == 1, messages.texts
    assert "exceeds validation top-1" in switched[0]
    # Remembered across a restart: the resumed run trains with the same rates.
    resumed = _trainer(overfitting_shards, tmp_path, **settings)
    np.testing.assert_allclose([m.drop_path_rate for m in polyinception_modules(resumed.model)],
                               np.linspace(0.0, 0.25, len(modules)), atol=1e-6)


def test_stochastic_paths_stay_off_below_the_threshold(synthetic_shards, tmp_path):
    trainer = _trainer(synthetic_shards, tmp_path, **{
        "trainer.adaptive_drop_path.enabled": True,
        "trainer.adaptive_drop_path.gap_threshold": 0.05})
    reporter = Reporter(str(tmp_path), False, 1, 0)
    trainer._maybe_switch_on_drop_path({"top1": 0.80}, {"top1": 0.76}, reporter)
    assert int(trainer.drop_path_switched_on.numpy()) == 0
    assert all(m.drop_path_rate == 0.0 for m in polyinception_modules(trainer.model))
    trainer._maybe_switch_on_drop_path({"top1": 0.80}, {"top1": 0.70}, reporter)
    assert int(trainer.drop_path_switched_on.numpy()) == 1
    assert polyinception_modules(trainer.model)[-1].drop_path_rate == pytest.approx(0.1)


def _has_fused_batch_norm(trainer):
    """Whether the training step train() traced computes its BatchNorms with the fused kernel."""
    run_step = inspect.getclosurevars(trainer._train_function).nonlocals["run_step"]
    # The same input signature: the trace train() ran, not a new one.
    graph = run_step.get_concrete_function(iter(trainer._train_dataset(0, PipelineStats()))).graph
    assert run_step.experimental_get_tracing_count() == 1
    op_types = {op.type for op in graph.get_operations()}
    assert ("FusedBatchNormV3" in op_types) == ("FusedBatchNormGradV3" in op_types)
    return "FusedBatchNormV3" in op_types


def test_batch_norm_kernel_choice_reaches_the_training_step(first_steps, diverged,
                                                          synthetic_shards, tmp_path):
    float32, float32_keras = first_steps.fused, first_steps.layer
    assert float32.config.trainer.mixed_precision is None
    assert float32.config.trainer.batch_norm_kernel == "fused"  # the default
    assert _has_fused_batch_norm(float32)
    assert float32_keras.config.trainer.mixed_precision is None
    assert not _has_fused_batch_norm(float32_keras)
    bfloat16 = _trainer(synthetic_shards, tmp_path, **{
        "trainer.mixed_precision": "mixed_bfloat16", "trainer.train_steps": 1})
    bfloat16.train()
    assert _has_fused_batch_norm(bfloat16)
    bfloat16_keras = diverged[0]
    assert bfloat16_keras.config.trainer.mixed_precision == "mixed_bfloat16"
    assert bfloat16_keras.config.trainer.batch_norm_kernel == "keras"
    assert not _has_fused_batch_norm(bfloat16_keras)


def test_fused_batch_norm_trains_as_keras_layer_does(first_steps):
    fused, layer = first_steps.fused, first_steps.layer
    start = first_steps.start["layer"]
    for a, b, path in zip(first_steps.start["fused"], start, (w.path for w in fused.model.weights)):
        np.testing.assert_array_equal(a, b, err_msg=path)  # same start
    (fused_step, fused_after), (layer_step, layer_after) = (first_steps.after["fused"],
                                                            first_steps.after["layer"])
    assert fused_step == layer_step == 1
    # Same data: the same update of every weight and moving statistic, up to
    # rounding, which the tiny net's 1x1 stage-C maps (4 values per channel)
    # amplify by up to 1 / sqrt(epsilon): a few percent of the update at most.
    ratios = []
    for a, b, before, path in zip(fused_after, layer_after, start,
                                  (w.path for w in layer.model.weights)):
        update = np.linalg.norm(b - before)
        assert update > 0, path
        ratios.append(np.linalg.norm(a - b) / update)
        assert ratios[-1] < 0.1, (path, ratios[-1])
    assert np.median(ratios) < 1e-3


@pytest.mark.slow
def test_a_training_step_with_every_augmentation_on(small_run):
    trainer, metrics = small_run
    assert trainer.step == 2
    assert metrics["num_images"] == 2 * trainer.global_batch_size
    # Soft, smoothed targets: the cross-entropy is at least their entropy (> 0), and finite.
    assert 0.1 < metrics["loss"] < 20.0
    assert 0.0 <= metrics["top1"] <= metrics["top5"] == 1.0  # 4 classes: top-5 is every class
