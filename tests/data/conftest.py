"""Helpers of the input-pipeline tests: small images and shards made on the fly."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from polynet_tf.data import example_format


def image_array(height, width, seed=0):
    """A smooth random RGB image (compresses like a photo, unlike noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3))
    image = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    return np.asarray(image)


def encode(array_or_image, fmt="JPEG", **save_args):
    """Encodes a numpy array or PIL image as `fmt` bytes."""
    image = array_or_image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    out = io.BytesIO()
    image.save(out, format=fmt, **save_args)
    return out.getvalue()


def write_shards(directory, records_per_shard, num_shards, split="train",
                 image_size=(24, 32), corrupt=None, label_of=None):
    """Writes shards whose label (0-based) is the global record number.

    Args:
      directory: output folder.
      records_per_shard: records in each shard.
      num_shards: number of shards.
      split: shard name prefix.
      image_size: (height, width) of the JPEGs.
      corrupt: set of global record numbers whose image bytes are garbage.
      label_of: function global record number -> stored label (default: itself).

    Returns:
      The shard paths.
    """
    os.makedirs(directory, exist_ok=True)
    corrupt = corrupt or set()
    label_of = label_of or (lambda n: n)
    paths = []
    number = 0
    height, width = image_size
    for shard in range(num_shards):
        records = []
        for _ in range(records_per_shard):
            data = (b"not an image" if number in corrupt
                    else encode(image_array(height, width, seed=number)))
            records.append(example_format.make_example(
                data, label_of(number), f"class{number}", height, width,
                f"img{number:04d}.jpg").SerializeToString())
            number += 1
        path = os.path.join(directory, example_format.shard_name(split, shard, num_shards))
        example_format.write_shard(path, records)
        paths.append(path)
    return paths


def collect(dataset, max_batches=None):
    """Returns (images, labels) numpy arrays of a finite dataset, concatenated."""
    images, labels = [], []
    for index, (batch_images, batch_labels) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
    return np.concatenate(images), np.concatenate(labels)


class FakeInputContext(tf.distribute.InputContext):
    """An InputContext for `num_pipelines` workers with one replica each."""

    def __init__(self, num_pipelines, pipeline_id, replicas_per_pipeline=1):
        super().__init__(num_input_pipelines=num_pipelines, input_pipeline_id=pipeline_id,
                         num_replicas_in_sync=num_pipelines * replicas_per_pipeline)


@pytest.fixture
def make_context():
    return FakeInputContext
