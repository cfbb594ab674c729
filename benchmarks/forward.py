"""Inference speed of PolyNet on this machine (not a test).

1. `very_deep` at 331x331, batch 4: images/s, against the IR 5-10-5 baseline at
   299x299 measured in the same run (the paper's Fig. 11 cost axis).
2. One stage-B module, 2-way against mpoly-3: the cascaded mpoly-3 evaluates 3
   blocks where 2-way evaluates 2, so it should cost about 1.5x, not the 3x of
   the naive polynomial I + F + GF + HGF (F computed 3 times, G twice = 6
   blocks), which is timed side by side as the baseline.
3. With --paths (and nothing else): the inference paths of the released
   network at 331x331, `predict_on_batch`, side by side in rounds (so that a
   change of load hits every path alike), each as images/s and as a share of
   the float32 GEMM peak measured in the same rounds (`tf.matmul`, best of
   1024^2 and 2048^2, same threads; the network is 2 x its multiply-adds per
   image, 69.4 GFLOP):
   the model as `PolyNet()` builds it (BatchNorms applied through the conv
   kernels at inference, issue 19), the same layers traced as before issue 19
   (conv, then the BatchNorm layer on its output; benchmark only),
   `fold_batch_norms(model)`, and the same three under the global
   "mixed_bfloat16" policy (`fold_batch_norms(model, "mixed_bfloat16")` for
   the last), the float32 layers traced with every BatchNorm applied
   through the kernel (the alternative the default path chooses from per
   unit), and last the convolutions of the two folded networks alone (every
   Conv2D op of their traced graphs on inputs of its own, nothing else:
   `convolutions_alone.py`), the most any path could reach. All hold the
   same weights, BatchNorm statistics randomized.

Usage: python benchmarks/forward.py [--repeats 5] [--skip_full]
       python benchmarks/forward.py --paths [--batch 2] [--rounds 3] [--threads 2]
"""

import argparse
import contextlib
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from polynet_tf import PolyNet  # noqa: E402
from polynet_tf.layers import ConvBN, PolyInceptionModule  # noqa: E402
from polynet_tf.models import fold_batch_norms  # noqa: E402
from polynet_tf.models.complexity import network_cost  # noqa: E402
from convolutions_alone import convolutions_only  # noqa: E402


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


@contextlib.contextmanager
def _every_kernel_scaled():
    """ConvBN traced inside applies every BatchNorm through the kernel (never on the output)."""
    original = ConvBN._scales_kernel
    ConvBN._scales_kernel = lambda self, input_shape: True
    try:
        yield
    finally:
        ConvBN._scales_kernel = original


@contextlib.contextmanager
def _unfolded_inference():
    """ConvBN traced inside computes inference as before issue 19: conv, then BatchNorm layer."""
    original = ConvBN._inference
    ConvBN._inference = lambda self, inputs, norm: norm(self.conv(inputs), training=False)
    try:
        yield
    finally:
        ConvBN._inference = original


def gemm_gflops(dtype, sizes=(1024, 2048), seconds=0.5):
    """GFLOP/s of `tf.matmul` on square matrices, the best of `sizes`."""
    best = 0.0
    for n in sizes:
        a = tf.cast(tf.random.stateless_normal((n, n), seed=(1, 2)), dtype)
        matmul = tf.function(lambda a=a: tf.matmul(a, a))
        matmul().numpy()
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < seconds:
            matmul().numpy()
            calls += 1
        best = max(best, calls * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def _randomized_batch_norms(model, seed=0):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name = weight.path.rsplit("/", 1)[-1]
        if name == "gamma":
            weight.assign(rng.uniform(0.5, 1.5, weight.shape))
        elif name in ("beta", "moving_mean"):
            weight.assign(rng.normal(0.0, 0.2, weight.shape))
        elif name == "moving_variance":
            weight.assign(rng.uniform(0.5, 2.0, weight.shape))
    return model


class _ConvolutionsAlone:
    """The convolutions of `model`'s traced inference graph, alone, for a batch like `x`."""

    def __init__(self, model, x):
        trace = tf.function(lambda t: model(t, training=False))
        self._run, self.info = convolutions_only(trace.get_concrete_function(x).graph)

    def predict_on_batch(self, x):
        return self._run(x).numpy()


def _paths(size, batch, rounds, repeats):
    """images/s of each inference path (median over rounds) and the GEMM peaks."""
    gflop = 2 * network_cost("very_deep", size).multiply_adds / 1e9
    x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    model = _randomized_batch_norms(
        PolyNet(weights=None, input_shape=(size, size, 3), classifier_activation=None))
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = PolyNet(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(model.get_weights())
    # (name, model, context it is traced in); a new keras.Model over the
    # same layers has its own predict function, traced under the patch.
    unfolded, kernels, default = _unfolded_inference, _every_kernel_scaled, contextlib.nullcontext
    folded, folded_bf16 = fold_batch_norms(model), fold_batch_norms(model, "mixed_bfloat16")
    runs = [
        ("float32: PolyNet() (default path)", model, default),
        ("float32: same layers, unfolded BatchNorms (before)",
         keras.Model(model.input, model.output), unfolded),
        ("float32: fold_batch_norms(model)", folded, default),
        ("mixed_bfloat16: PolyNet() under the global policy", mixed, default),
        ("mixed_bfloat16: same layers, unfolded BatchNorms (before)",
         keras.Model(mixed.input, mixed.output), unfolded),
        ("mixed_bfloat16: fold_batch_norms(model, 'mixed_bfloat16')", folded_bf16, default),
        ("float32: same layers, every BatchNorm through the kernel",
         keras.Model(model.input, model.output), kernels),
        ("float32: fold_batch_norms(model), its convolutions alone",
         _ConvolutionsAlone(folded, x), default),
        ("mixed_bfloat16: fold_batch_norms(model, 'mixed_bfloat16'), its convolutions alone",
         _ConvolutionsAlone(folded_bf16, x), default),
    ]
    reference = None
    for name, net, context in runs:
        start = time.perf_counter()
        with context():
            logits = np.asarray(net.predict_on_batch(x), np.float32)  # traces
        first = time.perf_counter() - start
        if isinstance(net, _ConvolutionsAlone):
            print(f"  traced {name}: first call {first:.0f} s, {net.info['conv_ops']} conv "
                  f"ops, inputs {net.info['input_gib']:.2f} GiB", flush=True)
            continue
        if reference is None:
            reference = logits
        error = np.max(np.abs(logits - reference)) / np.std(reference)
        print(f"  traced {name}: first call {first:.0f} s, "
              f"max|logits - default float32| / std = {error:.1e}", flush=True)
    speeds = {name: [] for name, _, _ in runs}
    peaks = {"float32": [], "bfloat16": []}
    for index in range(rounds):
        for dtype in peaks:
            peaks[dtype].append(gemm_gflops(dtype))
        for name, net, _ in runs:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                net.predict_on_batch(x)
                times.append(time.perf_counter() - start)
            speeds[name].append(batch / min(times))
        print(f"  round {index + 1}/{rounds}: GEMM float32 {peaks['float32'][-1]:.0f} GFLOP/s, "
              + ", ".join(f"{v[-1]:.2f}" for v in speeds.values()) + " images/s", flush=True)
    return ({name: float(np.median(v)) for name, v in speeds.items()},
            {dtype: float(np.max(v)) for dtype, v in peaks.items()}, gflop)


def _print_paths(args):
    def batch_seconds(images_per_second):
        return args.batch / images_per_second

    print(f"Inference paths, very_deep {args.size}x{args.size}, batch {args.batch}, "
          f"predict_on_batch, {args.rounds} rounds of {args.repeats} (best of each round, median "
          "over rounds); load average before: "
          + " ".join(f"{v:.2f}" for v in os.getloadavg()), flush=True)
    speeds, peaks, gflop = _paths(args.size, args.batch, args.rounds, args.repeats)
    print(f"GEMM peak (tf.matmul 1024^2 / 2048^2, best round): "
          f"float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s; "
          f"network {gflop:.1f} GFLOP per image")
    print("| path | images/s | share of the float32 GEMM peak |")
    print("| --- | --- | --- |")
    for name, value in speeds.items():
        print(f"| {name} | {value:.2f} | {value * gflop / peaks['float32']:.0%} |")
    names = list(speeds)
    for new, old in ((0, 1), (0, 2), (0, 6), (3, 4), (3, 5), (3, 0), (2, 7), (5, 8)):
        print(f"ratio {names[new]} / {names[old]}: {speeds[names[new]] / speeds[names[old]]:.2f}x")
    for whole, convs in ((2, 7), (5, 8)):
        outside = batch_seconds(speeds[names[whole]]) - batch_seconds(speeds[names[convs]])
        print(f"{names[whole]}: {outside * 1e3:.0f} ms per batch outside its convolutions "
              f"({outside / batch_seconds(speeds[names[whole]]):.0%})")
    print("load average after: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--skip_full", action="store_true", help="only the module benchmark")
    parser.add_argument("--paths", action="store_true",
                        help="only the inference paths of the released network (section 3)")
    parser.add_argument("--size", type=int, default=331, help="input size of --paths")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --paths")
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow intra- and inter-op threads (default: TensorFlow's)")
    args = parser.parse_args()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"TF {tf.__version__}, Keras {keras.__version__}, threads {args.threads or 'default'}")
    if args.paths:
        _print_paths(args)
        return
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
