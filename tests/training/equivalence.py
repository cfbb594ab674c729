"""What test_replicas compares between layouts (no TensorFlow device set-up here)."""

import numpy as np

# Training steps compared between layouts. Over more steps, rounding
# differences between process layouts grow through the network until they
# are as large as those of another BatchNorm algorithm (after 10 steps, one
# thread per process: 0.13 relative, against 0.16): docs/cluster.md,
# "Several replicas: the gradient all-reduce, mixed_float16 and threads".
EQUIVALENCE_STEPS = 2


# Every compared process runs its ops on one thread each: the same thread
# configuration on any machine, whatever its cores.
SINGLE_THREADED = {"runtime.intra_op_threads": 1, "runtime.inter_op_threads": 1}


def short_run(steps=EQUIVALENCE_STEPS):
    """The config overrides of every compared run: global batch 16, one checkpoint at the end."""
    return {"train_data.global_batch_size": 16, "trainer.train_steps": steps,
            "trainer.steps_per_loop": 1, "trainer.checkpoint_interval": steps,
            "runtime.deterministic_ops": True, **SINGLE_THREADED}


def relative_update_difference(initial, ours, reference):
    """||our change - the reference's change|| / ||the reference's change||, over all weights.

    Changes, not values: a few steps move a weight by far less than its size,
    so values compared to 1e-5 of their size could agree even if the steps
    did not.

    Args:
        initial, ours, reference: lists of arrays, the same weights in the
            same order (before, and after the steps in each run).

    Returns:
        The relative difference as a float.
    """
    difference = sum(float(np.sum(np.square(a.astype(np.float64) - b)))
                     for a, b in zip(ours, reference))
    change = sum(float(np.sum(np.square(b.astype(np.float64) - start)))
                 for b, start in zip(reference, initial))
    return float(np.sqrt(difference / change))
