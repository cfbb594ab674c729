"""Evaluation throughput per protocol, and the time of a full ImageNet run (not a test).

Measures, on this machine:

1. the network's crops per second: a forward pass of `--network_batch`
   crops of the protocol's crop size (the same cost per crop for every
   protocol at the same crop size), after one warm-up call;
2. per protocol, the input pipeline alone: seconds per image to decode a
   375x500 JPEG and cut all the protocol's crops in `tf.data`
   (`polynet_tf.evaluation.data.crops_dataset`).

and prints, per protocol, crops per image, images per second of the network
and the projected hours of the 50,000 ImageNet validation images on one
worker (network and pipeline apart; the pipeline runs beside the network, on
other cores), with the ratio to `single` measured in the same run. A split
evaluation over N tasks (`python -m polynet_tf.evaluate --worker_hosts ...`)
takes about 1/N of it per task (files are dealt out to the tasks).

Only a few crops go through the full-size network: it is slow on a CPU.

Usage (the table of docs/evaluation.md):
    python benchmarks/evaluation_throughput.py
Smoke run (tiny network):
    python benchmarks/evaluation_throughput.py --architecture "A: 2way | B: ir | C: ir" \
        --width_multiplier 0.0625 --crop_size 75
"""

import argparse
import os
import platform
import time
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from polynet_tf import PolyNet  # noqa: E402
from polynet_tf.evaluation import PROTOCOL_NAMES, data, get_protocol  # noqa: E402

IMAGENET_VALIDATION_IMAGES = 50_000


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="very_deep")
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--crop_size", type=int, default=331,
                        help="every protocol's crop (googlenet144 too: its scales follow)")
    parser.add_argument("--network_batch", type=int, default=2, help="crops per forward pass")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--pipeline_images", type=int, default=2)
    return parser.parse_args()


def _jpeg_records(num_images, height=375, width=500):
    """`(encoded, label, name)` records of smooth random JPEGs."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, (num_images, height // 25, width // 25, 3)).astype(np.float32)
    images = tf.cast(tf.image.resize(coarse, (height, width)), tf.uint8)
    encoded = [tf.io.encode_jpeg(image, quality=90) for image in images]
    return tf.data.Dataset.from_tensor_slices(
        (tf.stack(encoded), tf.zeros([num_images], tf.int32), tf.fill([num_images], "x")))


def _processor():
    """The CPU's model name (Linux), else the platform's word for it."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _median_seconds(function, repeats):
    return float(np.median(timeit.repeat(function, number=1, repeat=repeats)))


def main():
    args = _parse_args()
    start = time.perf_counter()
    model = PolyNet(args.architecture, weights=None, input_shape=(None, None, 3),
                    width_multiplier=args.width_multiplier)
    build_seconds = time.perf_counter() - start
    crops = tf.random.uniform([args.network_batch, args.crop_size, args.crop_size, 3], -2, 2)
    forward = tf.function(lambda x: model(x, training=False))
    start = time.perf_counter()
    forward(crops).numpy()  # trace and warm up
    warmup_seconds = time.perf_counter() - start
    seconds = _median_seconds(lambda: forward(crops).numpy(), args.repeats)
    crops_per_second = args.network_batch / seconds

    records = _jpeg_records(args.pipeline_images)
    rows = []
    for name in PROTOCOL_NAMES:
        protocol = get_protocol(name, crop_size=args.crop_size)
        dataset = data.crops_dataset(records, protocol, 1)

        def cut_all(dataset=dataset):
            for batch, _ in dataset:
                batch.numpy()

        cut_all()  # trace
        pipeline = _median_seconds(cut_all, args.repeats) / args.pipeline_images
        network = protocol.num_crops / crops_per_second
        rows.append((name, protocol.num_crops, network, pipeline))

    print(f"machine: {_processor()}, {os.cpu_count()} cores, "
          f"TF {tf.__version__}")
    print(f"network: {args.architecture} (width x{args.width_multiplier}), crops of "
          f"{args.crop_size}: {crops_per_second:.3f} crops/s (batch {args.network_batch}, "
          f"median of {args.repeats}; build {build_seconds:.0f} s, first call "
          f"{warmup_seconds:.0f} s)")
    print(f"pipeline: {args.pipeline_images} JPEGs of 375x500")
    print(f"{'protocol':<18} {'crops':>5} {'img/s':>9} {'net h/50k':>10} {'pipe h/50k':>10} "
          f"{'x single':>8}")
    single = rows[0][2]
    for name, num_crops, network, pipeline in rows:
        hours = IMAGENET_VALIDATION_IMAGES / 3600.0
        print(f"{name:<18} {num_crops:>5} {1.0 / network:>9.4f} {network * hours:>10.1f} "
              f"{pipeline * hours:>10.2f} {network / single:>8.0f}")


if __name__ == "__main__":
    main()
