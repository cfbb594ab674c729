"""SIGTERM on any worker stops every worker at the same step.

Kubernetes, Kubeflow and preemptible machines send SIGTERM before they stop a
process. Each worker notes its own SIGTERM; after every training loop the
workers sum their flags (a small all-reduce), so all of them see a SIGTERM
sent to any one, save the checkpoint of the same step and exit with
`cluster.EXIT_PREEMPTED`. A Python signal handler runs between loops, never
inside one, so one loop of `trainer.steps_per_loop` steps bounds how long a
preempted job takes to save.
"""

import signal

import numpy as np
import tensorflow as tf


def sum_over_workers(strategy, num_workers, values):
    """Sums a small float array over the worker processes (a collective).

    Args:
        strategy: the job's strategy.
        num_workers: worker processes in the job.
        values: numpy array, this worker's values.

    Returns:
        numpy array, the sum over workers (`values` itself on one worker).
    """
    if num_workers <= 1:
        return values
    local = tf.constant(values, tf.float32)
    replicas_per_worker = strategy.num_replicas_in_sync // num_workers

    def value(context):
        # One replica per worker contributes; the others add zeros.
        first = context.replica_id_in_sync_group % replicas_per_worker == 0
        return local if first else tf.zeros_like(local)

    distributed = strategy.experimental_distribute_values_from_function(value)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, distributed, axis=None).numpy()


class PreemptionWatcher:
    """Notes SIGTERM; `any_worker_preempted` agrees on it across workers.

    Args:
        strategy: the job's strategy.
        num_workers: worker processes in the job.
    """

    def __init__(self, strategy, num_workers):
        self._strategy = strategy
        self._num_workers = num_workers
        self.received = False

    def install(self):
        """Catches SIGTERM in this process (main thread only; elsewhere a no-op)."""
        def on_sigterm(signum, frame):
            self.received = True

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:
            pass  # not the main thread (e.g. in tests): no handler

    def any_worker_preempted(self):
        """True on every worker when any worker received SIGTERM (a collective)."""
        flags = sum_over_workers(self._strategy, self._num_workers,
                                 np.array([float(self.received)]))
        return bool(flags[0] > 0)
