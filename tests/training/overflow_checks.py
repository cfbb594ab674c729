"""A float16 gradient overflow on one replica only, under mixed_float16.

`overflow_steps` runs three training steps through the trainer's own step:
normal images on every replica, then near-constant images on the last
replica only (their BatchNorm variances are tiny: the float16 gradients of
the scaled loss overflow while the forward pass stays finite), then normal
images again. The loss scale starts at `START_SCALE`, where the normal
images' gradients are finite. It also counts the all-reduce ops of the step
it traced (`collective_ops`: no second trace).

As a script it is one worker of two (MultiWorkerMirroredStrategy):
`python -m tests.training.overflow_checks TASK HOSTS SHARDS_JSON MODEL_DIR CLIP OUT_JSON`
(CLIP 0: no clipping) runs the steps, saves a checkpoint and writes what it saw to OUT_JSON;
tests/training/test_replicas.py asserts.
"""

import json
import sys

import numpy as np
import tensorflow as tf

START_SCALE = 64.0
PER_REPLICA_BATCH = 4
# The step at which the last replica gets the near-constant images.
OVERFLOW_STEP = 2
# optimizer.clip_global_norm of the clipped runs: below the first steps'
# gradient norms (about 2000 on the tiny network), so that clipping acts.
CLIP = 10.0

COLLECTIVES = ("CollectiveReduceV2", "NcclAllReduce", "CollectiveReduce")


def collective_ops(function, *args):
    """Counts of the all-reduce ops in the graph of the `tf.function` `function` for `args`.

    Args:
        function: a `tf.function`; called with `args` already, its traced
            graph is read (no new trace).
        *args: its arguments, or their `tf.TensorSpec`s (then traced here).

    Returns:
        dict: op name (of `COLLECTIVES`) -> count, nested functions included.
    """
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {op: sum(n.op == op for n in nodes) for op in COLLECTIVES}


def overflow_overrides(clip):
    """Config overrides of the scenario (with `clip`: optimizer.clip_global_norm)."""
    values = {"trainer.mixed_precision": "mixed_float16", "optimizer.weight_decay": 0.0}
    if clip:
        values["optimizer.clip_global_norm"] = clip
    return values


def _batch(step, replica, replicas):
    rng = np.random.default_rng(100 * step + replica)
    images = rng.normal(0.0, 1.0, (PER_REPLICA_BATCH, 75, 75, 3)).astype("float32")
    if step == OVERFLOW_STEP and replica == replicas - 1:
        images = 1.0 + 1e-3 * images
    return tf.constant(images), tf.constant(np.arange(PER_REPLICA_BATCH) % 4, tf.int32)


def _local(variable):
    """The copies of a mirrored variable on this process's replicas."""
    values = getattr(variable, "values", None)
    if values is None and hasattr(variable, "value"):
        values = getattr(variable.value, "values", None)
    return list(values) if values is not None else [variable]


def overflow_steps(trainer):
    """Runs the three steps; returns, per step, what every local replica holds.

    Returns:
        dict: `own_gradients_finite` [step][local replica] (each replica's
        unsummed gradients, computed apart from the step), `scale`
        [step][local replica] after the step, `largest_change` [step][local
        replica] (max |weight change| over the trainable weights), `finite`
        [step] (every weight finite), `step`, and `collectives` (the
        all-reduce ops of the traced step, `collective_ops`).
    """
    strategy = trainer.strategy
    replicas = strategy.num_replicas_in_sync
    trainer.optimizer.dynamic_scale.assign(START_SCALE)
    variables = trainer.model.trainable_variables

    def own_gradients_finite(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(trainer.model(images, training=True), tf.float32)
            loss, _ = trainer._loss(labels, logits)
            scaled = trainer.optimizer.scale_loss(loss)
        return trainer.optimizer.check_finite(tape.gradient(scaled, variables))

    step = tf.function(lambda x, y: strategy.run(trainer._train_step, args=(x, y)))
    check = tf.function(lambda x, y: strategy.run(own_gradients_finite, args=(x, y)))
    result = {"own_gradients_finite": [], "scale": [], "largest_change": [], "finite": []}
    for index in (1, 2, 3):
        images = strategy.experimental_distribute_values_from_function(
            lambda context, i=index: _batch(i, context.replica_id_in_sync_group, replicas)[0])
        labels = strategy.experimental_distribute_values_from_function(
            lambda context, i=index: _batch(i, context.replica_id_in_sync_group, replicas)[1])
        result["own_gradients_finite"].append(
            [bool(f) for f in strategy.experimental_local_results(check(images, labels))])
        before = [[c.numpy() for c in _local(v)] for v in variables]
        step(images, labels)
        after = [[c.numpy() for c in _local(v)] for v in variables]
        result["largest_change"].append([
            max(float(np.max(np.abs(a[r] - b[r]))) for a, b in zip(after, before))
            for r in range(len(after[0]))])
        result["finite"].append(all(np.isfinite(c).all() for a in after for c in a))
        result["scale"].append([float(c.numpy())
                                for c in _local(trainer.optimizer.dynamic_scale)])
    result["step"] = trainer.step
    result["collectives"] = collective_ops(step, images, labels)
    return result


def _worker(task, hosts, shards, model_dir, clip, out):
    from polynet_tf.training import cluster  # noqa: PLC0415

    num_workers, _ = cluster.configure_cluster(hosts, int(task))
    from polynet_tf.configs import load_experiment  # noqa: PLC0415
    from polynet_tf.training.trainer import Trainer  # noqa: PLC0415
    from tests.training.conftest import TINY_CONFIG, overrides  # noqa: PLC0415

    values = dict(overflow_overrides(float(clip)), **{
        "train_data.global_batch_size": PER_REPLICA_BATCH * num_workers,
        "runtime.collective_timeout_seconds": 60, "runtime.startup_timeout_seconds": 120})
    config = load_experiment([TINY_CONFIG], overrides(shards, **values), mode="train")
    strategy = cluster.make_strategy(config.runtime, num_workers)
    trainer = Trainer(config, model_dir, strategy, num_workers)
    result = overflow_steps(trainer)
    trainer.save()
    # Every worker waits for the others: the chief hosts the coordination service.
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
    with open(out, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3])), *sys.argv[4:7])
