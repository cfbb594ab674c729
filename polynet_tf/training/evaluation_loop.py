"""Evaluation on every replica of every worker, with the counts summed.

The validation set is split between input pipelines (one per worker, or one
per replica on a single machine, see `input_options`) and each pipeline's
batches between its replicas; per-replica sums of loss, top-1 hits, top-5
hits and images are added over all replicas. Every validation record is read
exactly once, so the reported image count is the size of the validation set.
Uneven ends (a worker or replica with fewer batches) are handled by
tf.distribute's partial-batch support: replicas that run out get empty
batches, which add nothing.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from polynet_tf.data import build_dataset, sharding


def input_options(strategy, num_workers):
    """How `distribute_datasets_from_function` feeds the replicas.

    On one machine with several replicas, one input pipeline per replica
    (pipeline `i` of `n` = replica `i`): the data stream of a replica is then
    the same as that of a one-replica worker `i` of an `n`-worker job, so the
    layouts train on the same batches. Several workers: one pipeline per
    worker (the only mode MultiWorkerMirroredStrategy supports).

    Returns:
        `tf.distribute.InputOptions` or None.
    """
    if num_workers <= 1 and isinstance(strategy, tf.distribute.MirroredStrategy) and (
            strategy.num_replicas_in_sync > 1):
        return tf.distribute.InputOptions(
            experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
            experimental_fetch_to_device=True)
    return None


def with_model_classes(data_config, num_classes):
    """`data_config` whose label check uses the model's number of classes.

    Labels outside `[0, num_classes)` then stop the pipeline naming the file
    and record, instead of becoming all-zero one-hot targets.
    """
    if data_config.num_classes is not None:
        return data_config
    return dataclasses.replace(data_config, num_classes=num_classes)


def batch_totals(labels, logits, loss_sum):
    """[summed loss, top-1 hits, top-5 hits, images] of one batch (float32).

    `labels`: int class indices `[batch]`, or soft targets `[batch, classes]`
    (MixUp/CutMix), whose class is their largest weight.
    """
    if labels.shape.rank == 2:
        labels = tf.argmax(labels, axis=-1)
    labels = tf.cast(labels, tf.int32)
    k = min(5, logits.shape[-1])
    top1 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32))
    top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32))
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    return tf.stack([loss_sum, top1, top5, count])


def metrics_from_totals(totals):
    """loss, top1, top5 (means) and num_images from summed totals."""
    count = max(float(totals[3]), 1.0)
    return {"loss": float(totals[0]) / count, "top1": float(totals[1]) / count,
            "top5": float(totals[2]) / count, "num_images": int(round(float(totals[3])))}


class DistributedEvaluator:
    """Runs the validation set over all replicas and returns summed totals.

    Args:
        strategy: the training strategy.
        model: the Keras model (evaluated with `training=False`).
        data_config: the evaluation `DataConfig` (num_classes filled in).
        num_workers: worker processes in the job.
        eval_steps: at most this many global batches (None: all).
    """

    def __init__(self, strategy, model, data_config, num_workers, eval_steps=None):
        self._strategy = strategy
        self._model = model
        self._data = data_config
        self._num_workers = num_workers
        self._eval_steps = eval_steps
        self._function = None
        with strategy.scope():
            # Per-replica sums, added over replicas and workers when read.
            self._totals = tf.Variable(
                tf.zeros([4]), trainable=False, name="eval_totals",
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM)

    def _dataset_fn(self, context):
        dataset = build_dataset(self._data, context)
        if self._eval_steps:
            dataset = dataset.take(self._eval_steps * sharding.replicas_per_pipeline(context))
        return dataset

    def _replica_step(self, images, labels):
        logits = tf.cast(self._model(images, training=False), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits,
                                                                   from_logits=True)
        return batch_totals(labels, logits, tf.reduce_sum(per_example))

    def _make_function(self):
        strategy, totals = self._strategy, self._totals

        def step(images, labels):
            totals.assign_add(self._replica_step(images, labels))

        @tf.function
        def run(iterator):
            strategy.run(lambda: totals.assign(tf.zeros([4])))
            # No reduction inside the loop, and one batch after the other: a
            # collective of the next batch (synchronized BatchNorm, the
            # all-reduce behind `has_value`) must not overtake this one's on
            # one replica only.
            has_next = tf.constant(True)
            while has_next:
                tf.autograph.experimental.set_loop_options(parallel_iterations=1)
                optional = iterator.get_next_as_optional()
                has_next = optional.has_value()
                if has_next:
                    strategy.run(step, args=optional.get_value())

        return run

    def __call__(self):
        """Returns float64 totals [loss sum, top-1 hits, top-5 hits, images]."""
        dataset = self._strategy.distribute_datasets_from_function(
            self._dataset_fn, input_options(self._strategy, self._num_workers))
        if self._function is None:
            self._function = self._make_function()
        self._function(iter(dataset))
        return self._totals.read_value().numpy().astype(np.float64)
