"""Inference speed of PolyNet on this machine (not a test).

1. `very_deep` at 331x331, batch 4: images/s, against the IR 5-10-5 baseline at
   299x299 measured in the same run (the paper's Fig. 11 cost axis).
2. One stage-B module, 2-way against mpoly-3: the cascaded mpoly-3 evaluates 3
   blocks where 2-way evaluates 2, so it should cost about 1.5x, not the 3x of
   the naive polynomial I + F + GF + HGF (F computed 3 times, G twice = 6
   blocks), which is timed side by side as the baseline.

Usage: python benchmarks/forward.py [--repeats 5] [--skip_full]
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from polynet_tf import PolyNet  # noqa: E402
from polynet_tf.layers import PolyInceptionModule  # noqa: E402


def _time(fn, repeats):
    fn()  # trace and warm up
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _network(architecture, size, batch, repeats):
    model = PolyNet(architecture, weights=None, input_shape=(size, size, 3))
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)), tf.float32)
    forward = tf.function(lambda t: model(t, training=False))
    seconds = _time(lambda: forward(x).numpy(), repeats)
    keras.backend.clear_session()
    return batch / seconds


def _modules(batch, repeats):
    x = tf.constant(np.random.default_rng(1).normal(size=(batch, 17, 17, 1152)), tf.float32)
    two_way = PolyInceptionModule("B", "2way", residual_scale=0.3)
    mpoly3 = PolyInceptionModule("B", "mpoly3", residual_scale=0.3)
    two_way.build(x.shape)
    mpoly3.build(x.shape)
    f, g, h = mpoly3.blocks
    relu = tf.nn.relu

    def naive(t):
        # Each term computed from scratch: F, G(F), H(G(F)).
        term1 = f(t, training=False)
        term2 = g(relu(f(t, training=False)), training=False)
        term3 = h(relu(g(relu(f(t, training=False)), training=False)), training=False)
        return relu(t + 0.3 * (term1 + term2 + term3))

    runs = {
        "2-way (2 blocks)": tf.function(lambda t: two_way(t, training=False)),
        "mpoly-3 cascaded (3 blocks)": tf.function(lambda t: mpoly3(t, training=False)),
        "mpoly-3 naive (6 blocks)": tf.function(naive),
    }
    np.testing.assert_allclose(runs["mpoly-3 naive (6 blocks)"](x).numpy(),
                               runs["mpoly-3 cascaded (3 blocks)"](x).numpy(), rtol=1e-4,
                               atol=1e-4)
    return {name: _time(lambda fn=fn: fn(x).numpy(), repeats) for name, fn in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--skip_full", action="store_true", help="only the module benchmark")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"TF {tf.__version__}, Keras {keras.__version__}")
    if not args.skip_full:
        deep = _network("very_deep", 331, args.batch, args.repeats)
        base = _network("ir_5_10_5", 299, args.batch, args.repeats)
        print(f"very_deep 331x331 batch {args.batch}: {deep:.2f} images/s")
        print(f"ir_5_10_5 299x299 batch {args.batch}: {base:.2f} images/s")
        print(f"ratio very_deep / ir_5_10_5 throughput: {deep / base:.3f}")
    seconds = _modules(args.batch, args.repeats)
    baseline = seconds["2-way (2 blocks)"]
    for name, value in seconds.items():
        print(f"stage-B module {name}: {value * 1e3:.1f} ms, {value / baseline:.2f}x 2-way")


if __name__ == "__main__":
    main()
