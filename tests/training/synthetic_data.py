"""A small learnable image dataset written as ImageNet-format TFRecord shards."""

import io
import os

import numpy as np
from PIL import Image

from polynet_tf.data import make_example, write_class_index, write_shard

PATTERNS = ("horizontal", "vertical", "diagonal", "checker")


def synthetic_image(label, rng, size=80):
    """Class = stripe orientation; colours, period and phase are random.

    The class does not shift the image statistics (any colour goes with any
    class), so a network cannot lean on batch statistics, and every crop of
    a third of the image or more still shows the pattern.
    """
    rows, cols = np.mgrid[0:size, 0:size]
    period = rng.uniform(8, 16)
    phase = rng.uniform(0, period)
    coordinate = {"horizontal": rows, "vertical": cols, "diagonal": rows + cols,
                  "checker": None}[PATTERNS[label]]
    if coordinate is None:
        mask = ((rows + phase) // (period / 2) + (cols + phase) // (period / 2)) % 2
    else:
        mask = ((coordinate + phase) // (period / 2)) % 2
    colours = rng.integers(0, 256, size=(2, 3))
    image = np.where(mask[..., None] > 0, colours[0], colours[1]).astype(np.float64)
    image += rng.normal(0, 20, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_dataset(directory, num_train=256, num_val=64, train_shards=4, seed=0, size=80,
                  validation_label_shift=0, bad_train_records=None):
    """Writes train-*/validation-* shards and the class index; returns the patterns.

    `validation_label_shift` k labels each validation image with the class k
    after its own (mod 4): a validation set that training cannot fit, so that
    the gap between training and validation accuracy grows as a network learns.
    `bad_train_records` maps a training record's number to "garbage" (its
    image bytes are not an image) or to the (wrong) label it carries; record
    `i` is record `i // train_shards` of shard `i % train_shards`.
    """
    bad_train_records = bad_train_records or {}
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    classes = [f"n0000000{i}" for i in range(len(PATTERNS))]
    for split, count, shards in (("train", num_train, train_shards), ("validation", num_val, 1)):
        records = []
        for i in range(count):
            label = i % len(PATTERNS)
            buffer = io.BytesIO()
            Image.fromarray(synthetic_image(label, rng, size)).save(buffer, "JPEG", quality=95)
            if split == "validation":
                label = (label + validation_label_shift) % len(PATTERNS)
            encoded, text = buffer.getvalue(), classes[label]
            bad = bad_train_records.get(i) if split == "train" else None
            if bad == "garbage":
                encoded = b"not an image"
            elif bad is not None:
                label = bad
            example = make_example(encoded, label, text, size, size, f"{split}_{i}.jpg")
            records.append(example.SerializeToString())
        for shard in range(shards):
            write_shard(os.path.join(directory, f"{split}-{shard:05d}-of-{shards:05d}"),
                        records[shard::shards])
    write_class_index(directory, classes, 0)
    return os.path.join(directory, "train-*"), os.path.join(directory, "validation-*")
