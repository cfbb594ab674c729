"""Evaluator overhead: multi-crop evaluation against the bare network (not a test).

Times, side by side in one run and alternating rounds:

1. the evaluator (`polynet_tf.evaluation`) over JPEG TFRecords: decode, cut
   every crop of the protocol in tf.data, the network on each scale's crops,
   top-k pooling, top-5 bookkeeping;
2. the same network on the same number of pre-made crops in the same network
   batches (batch_size x crops per scale), already in memory and normalised.

and prints images/s of both and the evaluator's overhead (goal <= 10%).

The overhead is nearly constant per image (decoding, resizing to each scale,
copying crops: about 60 ms per 375x500 JPEG for 72 crops of 150 on one core)
plus a fixed start-up per run (dataset tracing, a few tenths of a second), so
it is large against a tiny network and vanishes against the real one: measure
with the real network and crop size, and enough images to amortise start-up.

Usage (real measurement, quiet machine):
    python benchmarks/multicrop.py --architecture very_deep --protocol polynet_multicrop \
        --num_images 8 --repeats 3
Smoke run (tiny network, small crops):
    python benchmarks/multicrop.py --architecture "A: 2way | B: ir | C: ir" \
        --width_multiplier 0.0625 --crop_size 75 --scales 80,96 --num_images 4 --repeats 1
"""

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from polynet_tf import PolyNet  # noqa: E402
from polynet_tf.data import example_format  # noqa: E402
from polynet_tf.evaluation import data, get_protocol  # noqa: E402
from polynet_tf.evaluation.evaluator import Evaluator  # noqa: E402
from polynet_tf.evaluation.model_sources import keras_scorer  # noqa: E402


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="very_deep")
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--protocol", default="polynet_multicrop")
    parser.add_argument("--crop_size", type=int, default=None)
    parser.add_argument("--scales", default=None, help="comma-separated, e.g. 352,384")
    parser.add_argument("--num_images", type=int, default=8)
    parser.add_argument("--image_size", default="375,500", help="height,width of the JPEGs")
    parser.add_argument("--batch_size", type=int, default=1, help="images per network step")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


def _write_shard(directory, num_images, height, width, classes):
    rng = np.random.default_rng(0)
    examples = []
    for number in range(num_images):
        coarse = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3))
        image = Image.fromarray(coarse.astype(np.uint8)).resize((width, height),
                                                                 Image.BILINEAR)
        path = os.path.join(directory, "image.jpg")
        image.save(path, format="JPEG", quality=90)
        with open(path, "rb") as f:
            encoded = f.read()
        examples.append(example_format.make_example(
            encoded, int(rng.integers(classes)), "c", height, width, f"{number}.jpg"
        ).SerializeToString())
    pattern = os.path.join(directory, "validation-00000-of-00001")
    example_format.write_shard(pattern, examples)
    return pattern


def main():
    args = _parse_args()
    overrides = {"crop_size": args.crop_size}
    if args.scales:
        overrides["scales"] = tuple(int(s) for s in args.scales.split(","))
    protocol = get_protocol(args.protocol, **overrides)
    height, width = (int(v) for v in args.image_size.split(","))
    model = PolyNet(args.architecture, weights=None, input_shape=(None, None, 3),
                    classes=args.classes, width_multiplier=args.width_multiplier)
    evaluator = Evaluator([keras_scorer(model)], protocol)

    network_batch = args.batch_size * protocol.crops_per_scale
    steps = -(-args.num_images // args.batch_size) * protocol.num_scales
    crops = tf.constant(np.random.default_rng(1).uniform(
        -2, 2, (network_batch, protocol.crop_size, protocol.crop_size, 3)), tf.float32)
    forward = tf.function(lambda x: model(x, training=False))

    def raw():
        for _ in range(steps):
            result = forward(crops)
        result.numpy()

    with tempfile.TemporaryDirectory() as directory:
        pattern = _write_shard(directory, args.num_images, height, width, args.classes)
        records = data.tfrecord_records(pattern)

        def evaluate():
            evaluator.evaluate(data.crops_dataset(records.dataset, protocol, args.batch_size),
                               progress=False)

        evaluate()  # trace and warm up both
        raw()
        eval_times, raw_times = [], []
        for _ in range(args.repeats):
            for fn, times in ((evaluate, eval_times), (raw, raw_times)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
    eval_seconds, raw_seconds = float(np.median(eval_times)), float(np.median(raw_times))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}")
    print(f"network: {args.architecture} (width x{args.width_multiplier}), protocol "
          f"{protocol.name}: {protocol.num_crops} crops of {protocol.crop_size} per image, "
          f"{protocol.num_scales} scale(s), network batch {network_batch}")
    print(f"images: {args.num_images} JPEGs of {height}x{width}, {args.repeats} round(s)")
    print(f"evaluator:        {args.num_images / eval_seconds:8.3f} images/s")
    print(f"network on crops: {args.num_images / raw_seconds:8.3f} images/s (baseline)")
    print(f"evaluator overhead: {100 * (eval_seconds / raw_seconds - 1):+.1f}% "
          f"(ratio {eval_seconds / raw_seconds:.3f}; goal <= +10%)")


if __name__ == "__main__":
    main()
