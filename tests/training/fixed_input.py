"""In-process trainers fed fixed in-memory batches (no input pipeline, no files)."""

import numpy as np
import tensorflow as tf

from polynet_tf.configs import load_experiment
from polynet_tf.training.trainer import Trainer
from tests.training.conftest import SMALL_ARCHITECTURE, TINY_CONFIG

# A small network with nothing random in its step: no dropout, no stochastic paths.
BASE = {"model.num_classes": 4, "model.architecture": SMALL_ARCHITECTURE,
        "model.dropout_rate": 0.0, "trainer.adaptive_drop_path.enabled": False,
        "train_data.file_pattern": "/unused/train-*", "trainer.steps_per_loop": 1}


def make_trainer(model_dir, strategy=None, **values):
    """A `Trainer` of the tiny config (small architecture) with `values` overridden."""
    items = {**BASE, **values}
    config = load_experiment([TINY_CONFIG], ",".join(f"{k}={v}" for k, v in items.items()))
    return Trainer(config, str(model_dir), strategy or tf.distribute.OneDeviceStrategy("/cpu:0"))


def images_and_labels(count, size=75, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 1, (count, size, size, 3)).astype(np.float32)
    return images, (np.arange(count) % 4).astype(np.int32)


def fixed_iterator(trainer, images, labels, batch_size):
    """The batches of `images`, in order, then again, distributed as the trainer's data."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size).repeat()
    return iter(trainer.strategy.experimental_distribute_dataset(dataset))


def trainable_values(trainer):
    return [v.numpy() for v in trainer.model.trainable_variables]


def run_updates(trainer, iterator, updates):
    """`updates` training updates from `iterator`; the loop's summed totals."""
    trainer._train_function = trainer._train_function or trainer._make_train_function()
    return trainer._train_function(iterator, updates).numpy()
