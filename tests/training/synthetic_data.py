"""A small learnable image dataset written as ImageNet-format TFRecord shards."""

import io
import os

import numpy as np
from PIL import Image

from polynet_tf.data import make_example, write_class_index, write_shard

COLOURS = [(220, 40, 40), (40, 180, 60), (50, 80, 220), (230, 200, 40)]


def synthetic_image(label, rng, size=80):
    """Class = the colour tint of the whole image (any crop shows it), plus noise."""
    noise = rng.integers(0, 256, size=(size, size, 3))
    image = 0.55 * np.asarray(COLOURS[label]) + 0.45 * noise
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(directory, num_train=256, num_val=64, train_shards=4, seed=0, size=80):
    """Writes train-*/validation-* shards and the class index; returns the patterns."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    classes = [f"n0000000{i}" for i in range(len(COLOURS))]
    for split, count, shards in (("train", num_train, train_shards), ("validation", num_val, 1)):
        records = []
        for i in range(count):
            label = i % len(COLOURS)
            buffer = io.BytesIO()
            Image.fromarray(synthetic_image(label, rng, size)).save(buffer, "JPEG", quality=95)
            example = make_example(buffer.getvalue(), label, classes[label], size, size,
                                   f"{split}_{i}.jpg")
            records.append(example.SerializeToString())
        for shard in range(shards):
            write_shard(os.path.join(directory, f"{split}-{shard:05d}-of-{shards:05d}"),
                        records[shard::shards])
    write_class_index(directory, classes, 0)
    return os.path.join(directory, "train-*"), os.path.join(directory, "validation-*")
