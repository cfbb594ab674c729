"""One value of the BatchNorm moving statistics under several replicas.

With per-replica BatchNorm (the paper's setting, section 4: statistics per
GPU), every replica updates its own copy of each moving mean and variance.
Keras 3 creates these variables with aggregation "none": each replica writes
only its own copy, and a checkpoint, an export or a cross-replica read sees
the first replica's copy alone (Keras 2 made them on-read variables whose
value was the mean over replicas). `MovingStatisticsSync` restores the Keras 2
meaning: before every checkpoint and evaluation the trainer replaces every
replica's copy, on every worker, by the mean over all replicas. Training is
unaffected (a training step normalises with batch statistics); the moving
averages simply continue from the mean, as they would after a restart.

With `model.synchronized_batch_norm` the copies never differ and the
averaging changes nothing.
"""

import tensorflow as tf


def moving_statistics(model):
    """The non-trainable float variables of BatchNorm layers (moving mean/var)."""
    return [v for v in model.non_trainable_variables
            if "float" in str(v.dtype) and v.path.rsplit("/", 1)[-1] in (
                "moving_mean", "moving_variance")]


class MovingStatisticsSync:
    """Averages the moving statistics over all replicas of all workers.

    Calling it is a collective operation: every worker must call it at the
    same point (the trainer does so before each save and evaluation).

    Args:
        strategy: the `tf.distribute.Strategy` the model was built under.
        model: the Keras model.
    """

    def __init__(self, strategy, model):
        self._strategy = strategy
        self._variables = moving_statistics(model)
        self._function = None

    @property
    def variables(self):
        return list(self._variables)

    def __call__(self):
        if not self._variables or self._strategy.num_replicas_in_sync <= 1:
            return
        if self._function is None:
            self._function = tf.function(self._sync)
        self._function()

    def _sync(self):
        variables = self._variables

        def replica_fn():
            context = tf.distribute.get_replica_context()
            # Read in the replica context: this replica's own copy.
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                       [tf.identity(v.value) for v in variables])
            for variable, mean in zip(variables, means):
                variable.assign(mean)  # aggregation "none": this replica's copy

        self._strategy.run(replica_fn)
