"""Training step of the very_deep PolyNet against the PyTorch reference (not a test).

Same CPU, same network (the released Very Deep PolyNet at 331x331, 1000
classes), same batch, same optimizer (RMSProp, rho 0.9, momentum 0.9, epsilon
1.0; PyTorch's `RMSprop(alpha=0.9, eps=1.0, momentum=0.9)`), same thread count,
measured in one run. Each side runs in its own process, one after the other
(a training step of the full network holds several GB), and times the median
of `--reps` steps after two warm-up steps:

  tf          our step: `build_model` + `build_optimizer` of the experiment
              config, `tf.function` of forward, softmax cross-entropy,
              gradients and the update (what `polynet_tf.training.Trainer`
              runs per replica), float32
  tf_bf16     the same under the global "mixed_bfloat16" policy (float32
              variables, bfloat16 compute)
  tf_fused_bn the tf step with every training-mode BatchNorm computed by
              TensorFlow's fused kernel (`FusedBatchNormV3`, oneDNN on x86)
              instead of Keras's moments and affine ops: whether the
              BatchNorm ops are what separates us from the reference (not
              in the default set; the package itself keeps Keras's layer)
  torch       `pretrainedmodels`' PolyNet (its model file, loaded without the
              package `__init__`, which needs torchvision) in train mode,
              `zero_grad`, forward, cross-entropy, backward, `step`, float32
  torch_bf16  the same forward and loss under
              `torch.autocast("cpu", dtype=torch.bfloat16)`

Also printed: the float32 GEMM peak of TensorFlow on this machine in the same
run (`tf.matmul`, best of 1024^2 and 2048^2, `--threads` threads, as in
`benchmarks/forward.py --paths`), and the share of it a float32
step reaches, counting a training step as three forward passes (69.4 GFLOP
per image forward at 331x331: twice the multiply-adds of
`polynet_tf.models.complexity.network_cost`).

Usage: python benchmarks/train_vs_reference.py [--threads 2] [--batches 2 8] [--reps 3]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 331
CLASSES = 1000
VARIANTS = ("tf", "tf_bf16", "torch", "torch_bf16")
EXTRA_VARIANTS = ("tf_fused_bn",)
FLOAT32_GOAL, BFLOAT16_GOAL, PEAK_SHARE_GOAL = 1.3, 1.5, 0.6
WARMUP_STEPS = 2


def _batch(batch, channels_first=False):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(batch)
    images = rng.normal(size=(batch, SIZE, SIZE, 3)).astype("float32")
    labels = rng.integers(0, CLASSES, size=batch).astype("int64")
    if channels_first:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return images, labels


def _median_step_seconds(step, reps):
    times = []
    for index in range(WARMUP_STEPS + reps):
        start = time.perf_counter()
        step()
        if index >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def tf_case(variant, batch, threads, reps):
    """Median seconds of our training step; prints one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    from polynet_tf.configs.experiment import ModelConfig, OptimizerConfig, ScheduleConfig  # noqa: PLC0415
    from polynet_tf.models.factory import build_model  # noqa: PLC0415
    from polynet_tf.training.optimization import build_optimizer  # noqa: PLC0415

    if variant == "tf_bf16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    if variant == "tf_fused_bn":
        _use_fused_batch_norm(keras, tf)
    model = build_model(ModelConfig(architecture="very_deep", num_classes=CLASSES),
                        image_size=SIZE)
    optimizer, _ = build_optimizer(OptimizerConfig(), ScheduleConfig(), batch)
    images, labels = (tf.constant(t) for t in _batch(batch))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    seconds = _median_step_seconds(lambda: step(images, labels).numpy(), reps)
    print(json.dumps({"variant": variant, "batch": batch, "seconds": seconds}), flush=True)


def _use_fused_batch_norm(keras, tf):
    """Makes every float32 training-mode BatchNormalization call TF's fused op.

    Same outputs and moving-statistics updates as Keras's layer (the fused
    op returns the unbiased batch variance; Keras averages the biased one).
    """
    keras_call = keras.layers.BatchNormalization.call

    def fused_call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or self.synchronized or inputs.dtype != tf.float32:
            return keras_call(self, inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1 - self.momentum))
        return outputs

    keras.layers.BatchNormalization.call = fused_call


def torch_case(variant, batch, threads, reps):
    """Median seconds of the reference's training step; prints one JSON line."""
    import torch  # noqa: PLC0415

    from forward_vs_reference import reference_polynet_module  # noqa: PLC0415

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = reference_polynet_module().PolyNet(num_classes=CLASSES).train()
    optimizer = torch.optim.RMSprop(net.parameters(), lr=0.45 * batch / 512, alpha=0.9,
                                    eps=1.0, momentum=0.9)
    images, labels = (torch.from_numpy(a) for a in _batch(batch, channels_first=True))

    def step():
        optimizer.zero_grad(set_to_none=True)
        if variant == "torch_bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(net(images).float(), labels)
        else:
            loss = torch.nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    seconds = _median_step_seconds(step, reps)
    print(json.dumps({"variant": variant, "batch": batch, "seconds": seconds}), flush=True)


def gemm_peak(threads):
    """TensorFlow's float32 matmul rate (GFLOP/s) on this machine; prints one JSON line.

    The same measure as `benchmarks/forward.py --paths` (best of 1024^2 and
    2048^2), so that both benchmarks state shares of one peak.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    from forward import gemm_gflops  # noqa: PLC0415

    print(json.dumps({"variant": "gemm", "gflops": gemm_gflops("float32")}), flush=True)


def _run_case(args, variant, batch):
    command = [sys.executable, os.path.abspath(__file__), "--case", variant,
               "--batch", str(batch), "--threads", str(args.threads), "--reps", str(args.reps)]
    env = dict(os.environ, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
               OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        print(f"{variant} batch {batch} failed:\n{result.stderr[-2000:]}")
        return None
    return json.loads(lines[-1])


def _forward_gflop_per_image():
    sys.path.insert(0, ROOT)
    from polynet_tf.models.complexity import network_cost  # noqa: PLC0415

    return 2 * network_cost("very_deep", SIZE).multiply_adds / 1e9


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS + EXTRA_VARIANTS,
                        default=list(VARIANTS))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case == "gemm":
        return gemm_peak(args.threads)
    if args.case:
        case = torch_case if args.case.startswith("torch") else tf_case
        return case(args.case, args.batch, args.threads, args.reps)

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{args.threads} threads, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    peak = _run_case(args, "gemm", 0)["gflops"]
    gflop = _forward_gflop_per_image()
    print(f"float32 GEMM peak of TensorFlow: {peak:.0f} GFLOP/s; forward {gflop:.1f} "
          "GFLOP per image")
    print("| batch | variant | s / step | images/s | x reference | share of GEMM peak "
          "(3 forwards) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch in args.batches:
        seconds = {}
        for variant in args.variants:
            result = _run_case(args, variant, batch)
            if result:
                seconds[variant] = result["seconds"]
        for variant, value in seconds.items():
            reference = "torch_bf16" if variant.endswith("bf16") else "torch"
            ratio = (f"{seconds[reference] / value:.2f}x"
                     if reference in seconds and variant.startswith("tf") else "-")
            share = (f"{3 * gflop * batch / value / peak:.0%}"
                     if not variant.endswith("bf16") else "-")
            print(f"| {batch} | {variant} | {value:.2f} | {batch / value:.2f} | {ratio} | "
                  f"{share} |", flush=True)
    print(f"Goals: tf >= {FLOAT32_GOAL}x torch and >= {PEAK_SHARE_GOAL:.0%} of the GEMM "
          f"peak; tf_bf16 >= {BFLOAT16_GOAL}x torch_bf16.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
