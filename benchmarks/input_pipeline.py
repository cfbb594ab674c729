"""Throughput of the training input pipeline against two references.

Usage::

    python benchmarks/input_pipeline.py [--cores 1] [--num_images 256]
        [--image_size 299] [--batch_size 32] [--seconds 20]

Makes ImageNet-like JPEGs (500x375, quality 90, about 100 KB each: smooth
multi-scale noise, like photographs rather than white noise), writes them as
TFRecord shards, and measures images per second per core of:

- pipeline: `polynet_tf.data.build_dataset` in training mode (interleave,
  shuffle, parse, fused `sample_distorted_bounding_box` +
  `decode_and_crop_jpeg`, bilinear resize, flip, normalise, batch, prefetch);
- (a) bare: the same per-image ops (parse, crop sampling, decode-and-crop,
  resize, flip, normalise) in a `tf.while_loop` with one iteration at a time,
  no tf.data;
- (b) decode-whole: the same pipeline, except that each JPEG is decoded whole
  and then cropped.

The process is pinned to `--cores` CPUs before TensorFlow starts, so all three
share the same cores and "per core" is images/s divided by that number.
Goal: pipeline >= 0.9x of (a) and >= 1.5x of (b).
"""

import argparse
import io
import os
import platform
import tempfile
import time


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=1, help="CPUs to pin to")
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=299)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measuring time of each variant")
    return parser.parse_args()


ARGS = _parse_args()
_AVAILABLE = sorted(os.sched_getaffinity(0))
CORES = _AVAILABLE[:max(1, min(ARGS.cores, len(_AVAILABLE)))]
# Pin before TensorFlow sizes its thread pools from the CPUs it may use.
os.sched_setaffinity(0, CORES)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from polynet_tf.data import DataConfig, build_dataset, example_format  # noqa: E402
from polynet_tf.data import preprocessing  # noqa: E402

_WIDTH, _HEIGHT, _QUALITY = 500, 375, 90


def make_jpeg(rng: np.random.Generator) -> bytes:
    """A photo-like 500x375 JPEG: 1/f-ish noise summed over octaves."""
    image = np.zeros((_HEIGHT, _WIDTH, 3), np.float32)
    for octave in range(1, 8):
        cells = (max(2, _HEIGHT >> (8 - octave)), max(2, _WIDTH >> (8 - octave)), 3)
        layer = rng.normal(size=cells).astype(np.float32)
        layer = np.stack([np.asarray(Image.fromarray(layer[..., c], mode="F").resize(
            (_WIDTH, _HEIGHT), Image.BICUBIC)) for c in range(3)], axis=-1)
        image += layer * (60.0 / octave ** 0.4)
    image += rng.normal(scale=8.0, size=image.shape)
    pixels = np.clip(image + 128, 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=_QUALITY)
    return out.getvalue()


def write_shards(directory: str, num_images: int, num_shards: int = 8):
    rng = np.random.default_rng(0)
    records, sizes = [], []
    for number in range(num_images):
        jpeg = make_jpeg(rng)
        sizes.append(len(jpeg))
        records.append(example_format.make_example(
            jpeg, number % 1000, f"n{number % 1000:08d}", _HEIGHT, _WIDTH,
            f"{number}.JPEG").SerializeToString())
    for shard in range(num_shards):
        example_format.write_shard(
            os.path.join(directory, example_format.shard_name("train", shard, num_shards)),
            records[shard::num_shards])
    return records, float(np.mean(sizes))


def time_pipeline(dataset, batch_size: int, seconds: float) -> float:
    iterator = iter(dataset)
    for _ in range(5):  # Warm-up: tracing, buffers, autotuning.
        next(iterator)
    start, images = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        batch, _ = next(iterator)
        images += batch.shape[0]
    return images / (time.perf_counter() - start)


def time_bare_loop(records, image_size: int, seconds: float) -> float:
    serialized = tf.constant(records)
    count = len(records)

    @tf.function
    def run(num_images):
        def body(i, checksum):
            encoded, _, _ = example_format.parse_example(serialized[i % count])
            seed = tf.stack([tf.constant(0, tf.int64), tf.cast(i, tf.int64)])
            image = preprocessing.preprocess_for_train(encoded, image_size, seed)
            return i + 1, checksum + tf.reduce_sum(image)

        _, checksum = tf.while_loop(lambda i, _: i < num_images, body,
                                    (tf.constant(0), tf.constant(0.0)),
                                    parallel_iterations=1)
        return checksum

    run(tf.constant(8))  # Trace and warm up.
    total, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(tf.constant(64)).numpy()
        total += 64
    return total / (time.perf_counter() - start)


def _decode_whole_then_crop(image_bytes, window_fn):
    image = tf.io.decode_jpeg(image_bytes, channels=3)
    window = window_fn(tf.shape(image))
    return tf.slice(image, tf.stack([window[0], window[1], 0]),
                    tf.stack([window[2], window[3], 3]))


def main():
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{len(_AVAILABLE)} CPUs available, pinned to {len(CORES)}; "
          f"TensorFlow {tf.__version__}")
    with tempfile.TemporaryDirectory() as directory:
        records, mean_size = write_shards(directory, ARGS.num_images)
        print(f"{ARGS.num_images} JPEGs {_WIDTH}x{_HEIGHT} q{_QUALITY}, mean "
              f"{mean_size / 1024:.0f} KiB; output {ARGS.image_size}x{ARGS.image_size}, "
              f"batch {ARGS.batch_size}")
        config = DataConfig(file_pattern=os.path.join(directory, "train-*"),
                            image_size=ARGS.image_size, global_batch_size=ARGS.batch_size,
                            shuffle_buffer_size=1024, seed=0)
        cores = len(CORES)
        pipeline = time_pipeline(build_dataset(config), ARGS.batch_size, ARGS.seconds) / cores
        bare = time_bare_loop(records, ARGS.image_size, ARGS.seconds) / cores
        fused = preprocessing._decode_cropped  # pylint: disable=protected-access
        preprocessing._decode_cropped = _decode_whole_then_crop  # pylint: disable=protected-access
        try:
            whole = time_pipeline(build_dataset(config), ARGS.batch_size, ARGS.seconds) / cores
        finally:
            preprocessing._decode_cropped = fused  # pylint: disable=protected-access
    print(f"pipeline (fused decode-and-crop): {pipeline:7.1f} images/s/core")
    print(f"(a) same ops, bare loop:          {bare:7.1f} images/s/core")
    print(f"(b) decode whole JPEG, then crop: {whole:7.1f} images/s/core")
    print(f"ratio pipeline / (a) = {pipeline / bare:.2f}  (goal >= 0.9)")
    print(f"ratio pipeline / (b) = {pipeline / whole:.2f}  (goal >= 1.5)")


if __name__ == "__main__":
    main()
