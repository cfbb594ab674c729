"""A network grown from a trained smaller one learns faster than from scratch.

The paper (section 4) found initialization by insertion to stabilize and
accelerate training, "especially in early iterations". Here: 4 classes of
coloured squares on noise; the small network trains SMALL_STEPS steps; the
big one then trains STEPS steps on the same batches, from scratch and grown
(paper and function_preserving modes) from the same fresh initialization.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.grow import grow_model
from tests.grow.conftest import tiny

SMALL = "A: ir | B: ir | C: ir"
# Depth doubled everywhere (interleaved); stage B: the old unit becomes a 2-way,
# the inserted one is an mpoly-2.
LARGE = "A: ir*2 | B: 2way, mpoly2 | C: ir*2"
CLASSES, BATCH, SMALL_STEPS, STEPS, LAST = 4, 8, 40, 20, 5
LEARNING_RATE = 2e-3
COLOURS = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], "float32")


def coloured_squares(seed, steps):
    """Batches of noise images with one square whose colour is the class."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        x = rng.uniform(0.0, 0.4, (BATCH, 75, 75, 3)).astype("float32")
        y = rng.integers(0, CLASSES, BATCH)
        for image, label in zip(x, y):
            size = rng.integers(10, 25)
            row, col = rng.integers(0, 75 - size, 2)
            image[row:row + size, col:col + size] = COLOURS[label] * rng.uniform(0.6, 1.0)
        batches.append((x, y.astype("int32")))
    return batches


class Trainer:
    """Adam steps on one model; one traced step, reusable after weight resets."""

    def __init__(self, model):
        self.model = model
        self.optimizer = keras.optimizers.Adam(LEARNING_RATE)
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = self.loss(y, model(x, training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            self.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        self.step = step

    def run(self, batches):
        for variable in self.optimizer.variables:
            if "learning_rate" not in variable.path:  # fresh moments, step 0
                variable.assign(np.zeros(variable.shape, variable.dtype))
        return [float(self.step(x, y)) for x, y in batches]


@pytest.fixture
def fast_tracing():
    # Grappler's graph rewrites cost more than these few steps save.
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    yield
    tf.config.optimizer.set_experimental_options(previous)


@pytest.mark.usefixtures("fast_tracing")
@pytest.mark.slow
def test_grown_network_reaches_a_lower_loss_than_from_scratch():
    options = dict(classes=CLASSES, classifier_activation=None)
    small = tiny(SMALL, **options)
    small_losses = Trainer(small).run(coloured_squares(seed=1, steps=SMALL_STEPS))
    assert np.mean(small_losses[-LAST:]) < np.mean(small_losses[:LAST])

    large = tiny(LARGE, **options)
    fresh = [keras.ops.convert_to_numpy(w) for w in large.weights]
    trainer = Trainer(large)
    batches = coloured_squares(seed=2, steps=STEPS)
    first_x, first_y = batches[0]
    small_first_loss = float(trainer.loss(first_y, small(first_x, training=True)))

    losses = {}
    for start in ("scratch", "paper", "function_preserving"):
        for weight, value in zip(large.weights, fresh):
            weight.assign(value)
        if start != "scratch":
            grow_model(small, large, mode=start)
        losses[start] = trainer.run(batches)
    final = {start: float(np.mean(values[-LAST:])) for start, values in losses.items()}
    print(f"small net: {np.mean(small_losses[:LAST]):.3f} -> "
          f"{np.mean(small_losses[-LAST:]):.3f}; large net, mean loss of the last "
          f"{LAST} of {STEPS} steps: {final}; first step: "
          f"{ {k: round(v[0], 3) for k, v in losses.items()} }")
    # function_preserving continues from exactly the small network's loss.
    assert losses["function_preserving"][0] == pytest.approx(small_first_loss, abs=1e-4)
    assert final["paper"] < final["scratch"]
    assert final["function_preserving"] < final["scratch"]
