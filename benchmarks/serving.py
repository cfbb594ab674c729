"""Serving latency: the exported SavedModel against the in-process Keras model (not a test).

Batch-1 requests of one JPEG, timed side by side in one run, in alternating rounds:

1. `serving_default` of the exported SavedModel (loaded with
   `tf.saved_model.load`): decoding, the single-crop protocol, normalisation,
   the network and top-k, all in the graph;
2. the Keras model in this process plus the same decoding: decoding, crop and
   normalisation in a `tf.function`, then the model's call traced once in a
   `tf.function` (the fastest in-process path: the reference of the goal);
3. (for information) the same with `model.predict_on_batch`, and with an
   eager `model(x, training=False)` (Python overhead per layer);
4. (for information) the SavedModel of `export --nofold_batch_norms` (the
   network's BatchNorms kept; the default export folds them).

Prints median and p99 latency of each and the ratio SavedModel / Keras
(goal <= 1.1x against 2).

Usage (real measurement, quiet machine):
    python benchmarks/serving.py --architecture very_deep --requests 50 --repeats 3
Smoke run:
    python benchmarks/serving.py --architecture "A: 2way | B: poly3[convs] | C: 2way" \
        --width_multiplier 0.0625 --crop_size 75 --classes 10 --requests 10 --repeats 1
"""

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from polynet_tf import PolyNet  # noqa: E402
from polynet_tf.data import InputContract  # noqa: E402
from polynet_tf.serving import SignatureOptions, export_saved_model  # noqa: E402
from polynet_tf.serving import preprocessing as serving_preprocessing  # noqa: E402
from polynet_tf.serving.warmup import synthetic_image  # noqa: E402


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="very_deep")
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--crop_size", type=int, default=None,
                        help="default: 331 for very_deep, else 299")
    parser.add_argument("--image_size", default="375,500", help="height,width of the JPEG")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per round")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per variant")
    return parser.parse_args()


def _time_requests(call, count):
    latencies = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    return latencies


def main():
    args = _parse_args()
    crop = args.crop_size or (331 if args.architecture == "very_deep" else 299)
    height, width = (int(v) for v in args.image_size.split(","))
    keras.utils.set_random_seed(0)
    model = PolyNet(args.architecture, input_shape=(crop, crop, 3), classes=args.classes,
                    width_multiplier=args.width_multiplier)
    contract = InputContract("single", crop)
    options = SignatureOptions(contract, [str(i) for i in range(args.classes)],
                               top_k=min(5, args.classes))
    jpeg = tf.io.encode_jpeg(synthetic_image(height, width), quality=90).numpy()
    batch = tf.constant([jpeg])
    protocol = contract.crop_protocol()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(images):
        return contract.normalize(tf.map_fn(
            lambda data: serving_preprocessing.single_crop(
                tf.io.decode_image(data, channels=3, expand_animations=False), protocol),
            images, fn_output_signature=tf.TensorSpec([crop, crop, 3], tf.float32)))

    with tempfile.TemporaryDirectory() as folder:
        result = export_saved_model(model, folder, "bench", options, verify=False)
        serve = tf.saved_model.load(result.path).signatures["serving_default"]
        unfolded = export_saved_model(model, folder, "bench_unfolded", options, verify=False,
                                      fold_batch_norms=False)
        serve_unfolded = tf.saved_model.load(unfolded.path).signatures["serving_default"]
        compiled = tf.function(lambda x: model(x, training=False))
        variants = {
            "savedmodel": lambda: serve(images=batch)["probabilities"].numpy(),
            "savedmodel_unfolded": lambda: serve_unfolded(images=batch)["probabilities"].numpy(),
            "keras_tf_function": lambda: compiled(decode(batch)).numpy(),
            "keras_eager_call": lambda: model(decode(batch), training=False).numpy(),
            "keras_predict_on_batch": lambda: model.predict_on_batch(decode(batch)),
        }
        latencies = {name: [] for name in variants}
        for name, call in variants.items():
            _time_requests(call, args.warmup)
        for _ in range(args.repeats):
            for name, call in variants.items():
                latencies[name].extend(_time_requests(call, args.requests))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"TF {tf.__version__}, Keras {keras.__version__}")
    print(f"network: {args.architecture} x{args.width_multiplier}, crop {crop}, "
          f"{args.classes} classes; JPEG {height}x{width}, batch 1; "
          f"{args.repeats} rounds x {args.requests} requests")
    summary = {}
    for name, values in latencies.items():
        values_ms = np.asarray(values) * 1000.0
        summary[name] = (np.median(values_ms), np.percentile(values_ms, 99))
        print(f"{name:24s} median {summary[name][0]:9.2f} ms   p99 {summary[name][1]:9.2f} ms")
    for reference in ("keras_tf_function", "keras_predict_on_batch", "keras_eager_call"):
        ratio = summary["savedmodel"][0] / summary[reference][0]
        ratio99 = summary["savedmodel"][1] / summary[reference][1]
        print(f"savedmodel / {reference}: median {ratio:.2f}x, p99 {ratio99:.2f}x"
              + ("   (goal <= 1.1x)" if reference == "keras_tf_function" else ""))
    ratio = summary["savedmodel_unfolded"][0] / summary["savedmodel"][0]
    print(f"savedmodel_unfolded (export --nofold_batch_norms) / savedmodel (default, "
          f"BatchNorms folded): median {ratio:.2f}x")


if __name__ == "__main__":
    main()
