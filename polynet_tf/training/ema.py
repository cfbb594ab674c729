"""Exponential moving average (EMA) of the trainable weights.

After every update, each average moves towards its weight:

    average <- d_t * average + (1 - d_t) * weight,  d_t = min(decay, (1 + t) / (10 + t))

where `t` is the number of updates taken before this one. The averages start
at the initial weights (after fine-tuning's `init`, the loaded ones); the
warm-up of `d_t` (TensorFlow's `tf.train.ExponentialMovingAverage` with
`num_updates`) keeps a short run's average from being dominated by them.

Why not Keras's `use_ema`: it updates the averages inside `apply` in the
replica context, per optimizer (fine-tuning's head has its own optimizer),
and not when `LossScaleOptimizer` skips a step. Here the update runs in the
cross-replica context after each step, through `strategy.extended.update`:
every replica updates its own copy from its own (identical) weights, so no
collective is added, and the same on every worker.

The averages are checkpointed under `ema/averages/<weight path>` (see
`polynet_tf.runs.restore_averages`): evaluation, export and fine-tuning
from a checkpoint read them by the weight's path.
"""

import contextlib

import tensorflow as tf

from polynet_tf.runs import AveragesNode

class WeightAverage:
    """The EMA of `variables`, made in `strategy`'s scope.

    Args:
        variables: the model's trainable variables.
        decay: the EMA decay in (0, 1).
        strategy: the distribution strategy the variables live in.
    """

    def __init__(self, variables, decay, strategy):
        self.decay = float(decay)
        self.strategy = strategy
        self.variables = list(variables)
        with strategy.scope():
            self.averages = [
                tf.Variable(v.value, trainable=False, name=f"ema/{v.path}",
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                for v in self.variables]
        self.trackable = AveragesNode({v.path: a for v, a in zip(self.variables, self.averages)})

    def reset(self):
        """Averages := the weights (after the initial weights were loaded)."""
        self._swap_or_copy(swap=False)

    def update(self, num_updates):
        """One EMA step; call in the cross-replica context after the update.

        Args:
            num_updates: updates taken before this one (a scalar tensor).
        """
        t = tf.cast(num_updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))

        def move(average, weight):
            return average.assign(decay * average + (1.0 - decay) * weight)

        for average, weight in zip(self.averages, self.variables):
            self.strategy.extended.update(average, move, args=(weight.value,), group=False)

    @contextlib.contextmanager
    def swapped(self):
        """Within: the model's weights are the averages (bit-exact swap back after)."""
        self._swap_or_copy(swap=True)
        try:
            yield
        finally:
            self._swap_or_copy(swap=True)

    @tf.function
    def _swap_or_copy(self, swap):
        def exchange(weight, average):
            old = weight.read_value()
            weight.assign(average.read_value())
            return average.assign(old)

        def copy(average, weight):
            return average.assign(weight.read_value())

        for average, weight in zip(self.averages, self.variables):
            if swap:
                self.strategy.extended.update(weight.value, exchange, args=(average,),
                                              group=False)
            else:
                self.strategy.extended.update(average, copy, args=(weight.value,), group=False)
