"""Checks that need two logical CPU devices: run as a script, before TF starts.

`python -m tests.training.replica_checks CASE OUT_JSON SHARDS_JSON MODEL_DIR`
writes what it measured to OUT_JSON; tests/training/test_replicas.py asserts.
The logical devices must be configured before TensorFlow initialises, which
a pytest process that already ran TensorFlow cannot do.
"""

import json
import sys

import tensorflow as tf

_CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(_CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from polynet_tf.configs import load_experiment  # noqa: E402
from polynet_tf.data import build_dataset  # noqa: E402
from polynet_tf.models.factory import build_model  # noqa: E402
from polynet_tf.training import cluster  # noqa: E402
from polynet_tf.training.batch_norm_sync import moving_statistics  # noqa: E402
from polynet_tf.training.trainer import Trainer  # noqa: E402
from tests.training.conftest import TINY_CONFIG, overrides  # noqa: E402
from tests.training.equivalence import (  # noqa: E402
    EQUIVALENCE_STEPS,
    relative_update_difference,
    short_run,
)
from tests.training.overflow_checks import (  # noqa: E402
    CLIP,
    PER_REPLICA_BATCH,
    collective_ops,
    overflow_overrides,
    overflow_steps,
)

DEVICES = ["/cpu:0", "/cpu:1"]


def _config(shards, **values):
    return load_experiment([TINY_CONFIG], overrides(shards, **values), mode="train_and_eval")


def _one_step(trainer, halves, labels):
    """One training step of the two-replica `trainer`, replica i fed `halves[i]`, `labels[i]`.

    Returns:
        The all-reduce ops of the traced step (`collective_ops`).
    """
    strategy = trainer.strategy
    images = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(halves[context.replica_id_in_sync_group]))
    targets = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(labels[context.replica_id_in_sync_group]))
    step = tf.function(lambda x, y: strategy.run(trainer._train_step, args=(x, y)))
    step(images, targets)
    return collective_ops(step, images, targets)


def batch_norm_and_evaluation(shards, model_dir):
    """One step on two replicas fed different images; then save and evaluate.

    The step computes its BatchNorms with the fused kernel (the default; each
    replica updates its own copy of the statistics), the reference with
    Keras's layer. The step's all-reduce ops are those of the plain config
    (float32, unclipped).
    """
    config = _config(shards, **{"train_data.global_batch_size": 8,
                                "eval_data.global_batch_size": 8})
    trainer = Trainer(config, model_dir, tf.distribute.MirroredStrategy(DEVICES))
    initial = [v.numpy() for v in trainer.model.weights]
    rng = np.random.default_rng(0)
    halves = [rng.normal(0.0, 1.0, (4, 75, 75, 3)).astype("float32"),
              rng.normal(1.0, 2.0, (4, 75, 75, 3)).astype("float32")]
    labels = [np.array([0, 1, 2, 3], "int32")] * 2
    collectives = _one_step(trainer, halves, labels)
    stats = moving_statistics(trainer.model)
    before = [[c.numpy() for c in v.value.values] for v in stats]
    trainer.save()
    exported = [v.numpy() for v in stats]  # what model.export / save_weights read
    # Independent reference: what each replica computes alone from the same start.
    reference = build_model(config.model, image_size=75)
    per_half = []
    for half in halves:
        reference.set_weights(initial)
        reference(half, training=True)
        per_half.append([v.numpy() for v in moving_statistics(reference)])
    # A one-device trainer restoring the checkpoint sees what was saved.
    restored = Trainer(config, model_dir, tf.distribute.OneDeviceStrategy("/cpu:0"))
    saved = [v.numpy() for v in moving_statistics(restored.model)]
    mirrored_eval = trainer.evaluate()
    single_eval = restored.evaluate()
    return {
        "names": [v.path for v in stats],
        "replica_copies_differed": [float(np.max(np.abs(b[0] - b[1]))) for b in before],
        "saved_minus_mean": [float(np.max(np.abs(s - (a + b) / 2)))
                             for s, a, b in zip(saved, *per_half)],
        "exported_minus_mean": [float(np.max(np.abs(e - (a + b) / 2)))
                                for e, a, b in zip(exported, *per_half)],
        "halves_differ": [float(np.max(np.abs(a - b))) for a, b in zip(*per_half)],
        "mirrored_eval": mirrored_eval, "single_eval": single_eval,
        "collectives": collectives,
    }


def equivalence(shards, model_dir, steps=EQUIVALENCE_STEPS):
    """Two replicas for `steps` steps; the initial weights go next to the checkpoints."""
    tf.config.experimental.enable_op_determinism()
    mirrored = Trainer(_config(shards, **short_run(steps)), model_dir,
                       tf.distribute.MirroredStrategy(DEVICES))
    np.savez(model_dir + "_initial.npz", *[v.numpy() for v in mirrored.model.weights])
    mirrored.train()
    return {"steps": mirrored.step}


def synchronized(shards, model_dir, steps=EQUIVALENCE_STEPS):
    """Synchronized BatchNorm: two replicas of 8 against one replica of 16 made of
    the same two halves. In a process of its own: after another multi-replica
    Trainer in the same process, TF 2.21 aborted this run with a collective
    shape mismatch (one Trainer per process is what the command line does)."""
    tf.config.experimental.enable_op_determinism()
    synced = dict(short_run(steps), **{"model.synchronized_batch_norm": True})
    two = Trainer(_config(shards, **synced), model_dir + "_sync2",
                  tf.distribute.MirroredStrategy(DEVICES))
    initial = [v.numpy() for v in two.model.weights]
    two.train()
    config = _config(shards, **synced)
    one = Trainer(config, model_dir + "_sync1", tf.distribute.OneDeviceStrategy("/cpu:0"))
    pipelines = [build_dataset(config.train_data, tf.distribute.InputContext(2, i, 2))
                 for i in range(2)]
    whole = tf.data.Dataset.zip(*pipelines).map(
        lambda a, b: (tf.concat([a[0], b[0]], 0), tf.concat([a[1], b[1]], 0)))
    one._make_train_function()(iter(whole), tf.constant(steps))
    return {"sync_two_minus_one": relative_update_difference(
                initial, [v.numpy() for v in two.model.weights],
                [v.numpy() for v in one.model.weights]),
            "sync_steps": [two.step, one.step]}


def overflow(shards, model_dir):
    """`overflow_steps` on two replicas, clipped; then a one-device trainer restores the
    checkpoint."""
    config = _config(shards, **overflow_overrides(CLIP),
                     **{"train_data.global_batch_size": 2 * PER_REPLICA_BATCH})
    trainer = Trainer(config, model_dir, tf.distribute.MirroredStrategy(DEVICES))
    result = overflow_steps(trainer)
    trainer.save()
    restored = Trainer(config, model_dir, tf.distribute.OneDeviceStrategy("/cpu:0"))
    result["restored"] = {"step": restored.step,
                          "scale": float(restored.optimizer.dynamic_scale.numpy())}
    return result


def _accumulated_update_ops(trainer):
    """The all-reduce ops of one traced update of micro-batches (traced, not run).

    A micro-batch, then the update of the accumulated gradients; with an
    EMA, its update too.
    """
    strategy = trainer.strategy

    def update(images, labels):
        strategy.run(trainer._train_step, args=(images, labels))
        strategy.run(trainer._apply_accumulated)
        trainer._ema.update(trainer.global_step)

    return collective_ops(tf.function(update),
                          tf.TensorSpec([PER_REPLICA_BATCH, 75, 75, 3]),
                          tf.TensorSpec([PER_REPLICA_BATCH], tf.int32))


def all_reduce_counts(shards, model_dir):
    """The update's all-reduce ops when accumulating micro-batches (clipped, loss
    scaling, EMA), and the clipped float32 step's, which runs on two replicas
    against one device. (The plain step's are counted in
    `batch_norm_and_evaluation`, the clipped mixed_float16 one's in `overflow`.)"""
    batch = {"train_data.global_batch_size": 2 * PER_REPLICA_BATCH}
    # Micro-batches sum locally; the EMA adds no collective.
    accumulating = Trainer(_config(shards, **batch, **{
        "trainer.mixed_precision": "mixed_float16", "optimizer.clip_global_norm": CLIP,
        "trainer.accumulation_steps": 2, "trainer.ema_decay": 0.9}),
        f"{model_dir}_accumulated", tf.distribute.MirroredStrategy(DEVICES))
    counts = {"accumulated": _accumulated_update_ops(accumulating)}
    # Weight updates far above the weights' float32 rounding: a learning rate
    # of 0.4 from the first step.
    trainer = Trainer(_config(shards, **batch, **{
        "optimizer.clip_global_norm": CLIP, "schedule.base_learning_rate": 0.4,
        "schedule.base_batch_size": 2 * PER_REPLICA_BATCH, "schedule.warmup_steps": 0}),
        f"{model_dir}_clipped", tf.distribute.MirroredStrategy(DEVICES))
    # One step on two different halves.
    model = trainer.model
    initial = [v.numpy() for v in model.trainable_variables]
    rng = np.random.default_rng(1)
    halves = [rng.normal(0.0, 1.0, (PER_REPLICA_BATCH, 75, 75, 3)).astype("float32")
              for _ in range(2)]
    labels = [np.arange(PER_REPLICA_BATCH, dtype="int32") % 4,
              np.arange(PER_REPLICA_BATCH, dtype="int32")[::-1] % 4]
    counts["clipped"] = _one_step(trainer, halves, labels)
    two_replicas = [v.numpy() for v in model.trainable_variables]
    # Reference on one device: each half through the network alone (its own
    # BatchNorm statistics, as on its replica), one gradient of the whole
    # batch's loss, tf.clip_by_global_norm, Keras's RMSprop.
    config = trainer.config
    reference = build_model(config.model, image_size=75)
    for variable, value in zip(reference.trainable_variables, initial):
        variable.assign(value)
    with tf.GradientTape() as tape:
        loss = 0.0
        for half, label in zip(halves, labels):
            logits = reference(half, training=True)
            loss += tf.reduce_sum(keras.losses.categorical_crossentropy(
                tf.one_hot(label, 4), logits, from_logits=True,
                label_smoothing=config.optimizer.label_smoothing)) / (2 * PER_REPLICA_BATCH)
        kernels = [v for v in reference.trainable_variables if v.path.endswith("kernel")]
        loss += config.optimizer.weight_decay * tf.add_n([tf.nn.l2_loss(k) for k in kernels])
    gradients = tape.gradient(loss, reference.trainable_variables)
    clipped, norm = tf.clip_by_global_norm(gradients, CLIP)
    after = {}
    for name, applied in (("clipped", clipped), ("unclipped", gradients)):
        for variable, value in zip(reference.trainable_variables, initial):
            variable.assign(value)
        opt = config.optimizer
        rmsprop = keras.optimizers.RMSprop(trainer.schedule, rho=opt.rho, momentum=opt.momentum,
                                           epsilon=opt.epsilon)
        rmsprop.apply_gradients(zip(applied, reference.trainable_variables))
        after[name] = [v.numpy() for v in reference.trainable_variables]
    return {"counts": counts, "norm": float(norm), "clip": CLIP,
            "two_minus_clipped_reference": relative_update_difference(
                initial, two_replicas, after["clipped"]),
            "two_minus_unclipped_reference": relative_update_difference(
                initial, two_replicas, after["unclipped"])}


if __name__ == "__main__":
    case, out, shards_json, directory = sys.argv[1:5]
    shards = tuple(json.loads(shards_json))
    if case in ("equivalence", "synchronized"):  # the threads of the runs they compare with
        cluster.set_threads(_config(shards, **short_run()).runtime)
    result = {"batch_norm_and_evaluation": batch_norm_and_evaluation,
              "equivalence": equivalence, "synchronized": synchronized,
              "overflow": overflow,
              "all_reduce_counts": all_reduce_counts}[case](
        shards, directory)
    with open(out, "w") as handle:
        json.dump(result, handle)
