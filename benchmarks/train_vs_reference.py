"""Training step of the very_deep PolyNet against the PyTorch reference (not a test).

Same CPU, same network (the released Very Deep PolyNet at 331x331, 1000
classes), same batch, same optimizer (RMSProp, rho 0.9, momentum 0.9, epsilon
1.0; PyTorch's `RMSprop(alpha=0.9, eps=1.0, momentum=0.9)`), same thread count,
measured in one run. Each side runs in its own process, one after the other
(a training step of the full network holds several GB), and times the median
of `--reps` steps after two warm-up steps:

  tf          our step: `build_model` + `build_optimizer` of the experiment
              config, `tf.function` of forward, softmax cross-entropy,
              gradients and the update, every training-mode BatchNorm through
              TensorFlow's fused kernel (`polynet_tf.training.fused_batch_norm`,
              the default `trainer.batch_norm_kernel: fused`): what
              `polynet_tf.training.Trainer` runs per replica, float32
  tf_bf16     the same under the global "mixed_bfloat16" policy (float32
              variables, bfloat16 compute)
  tf_keras_bn the tf step with `batch_norm_kernel: keras`: Keras's
              BatchNormalization layer (not in the default set)
  tf_bf16_keras_bn  the tf_bf16 step with Keras's layer, which casts its
              bfloat16 input to float32, normalizes there and casts back (not
              in the default set)
  tf_bf16_bn16  the tf_bf16_keras_bn step with every training-mode BatchNorm
              normalizing in bfloat16: only the moments are computed in
              float32 (as `keras.ops.moments` does for bfloat16): what the
              layer's round trip costs (not in the default set)
  torch       `pretrainedmodels`' PolyNet (its model file, loaded without the
              package `__init__`, which needs torchvision) in train mode,
              `zero_grad`, forward, cross-entropy, backward, `step`, float32
  torch_bf16  the same forward and loss under
              `torch.autocast("cpu", dtype=torch.bfloat16)`
  tf_convs    the convolutions of the tf step alone: every Conv2D,
              Conv2DBackpropInput and Conv2DBackpropFilter op of the traced
              step, rerun with its shapes and attributes on random tensors
              and nothing else (not in the default set)
  tf_bf16_convs  the same for the tf_bf16 step (its convolutions in bfloat16)
  torch_convs the same for the torch step: every conv2d call of the
              reference's forward (recorded with hooks), its forward and the
              backward its training step runs (not in the default set)

With a `*_convs` variant beside its step, the run also prints what is left of
the step outside its convolutions; with tf_convs and torch, the most the tf
step could reach against the reference if everything but its convolutions took
no time at all: the reference's step over tf_convs.

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
EXTRA_VARIANTS = ("tf_keras_bn", "tf_bf16_keras_bn", "tf_bf16_bn16", "tf_convs",
                  "tf_bf16_convs", "torch_convs")
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
    from polynet_tf.layers.batch_norm import training_batch_norm_kernel  # noqa: PLC0415
    from polynet_tf.models.factory import build_model  # noqa: PLC0415
    from polynet_tf.training.fused_batch_norm import training_kernel  # noqa: PLC0415
    from polynet_tf.training.optimization import build_optimizer  # noqa: PLC0415

    mixed_precision = "mixed_bfloat16" if "bf16" in variant else None
    if mixed_precision:
        keras.config.set_dtype_policy(mixed_precision)
    if variant == "tf_bf16_bn16":
        _normalize_in_bfloat16(keras)
    batch_norm_kernel = training_kernel(
        "keras" if variant in ("tf_keras_bn", "tf_bf16_keras_bn", "tf_bf16_bn16") else "fused")
    model = build_model(ModelConfig(architecture="very_deep", num_classes=CLASSES),
                        image_size=SIZE)
    optimizer, _ = build_optimizer(OptimizerConfig(), ScheduleConfig(), batch)
    images, labels = (tf.constant(t) for t in _batch(batch))

    @tf.function
    def step(x, y):
        with training_batch_norm_kernel(batch_norm_kernel), tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    if variant in ("tf_convs", "tf_bf16_convs"):
        from convolutions_alone import convolutions_only  # noqa: PLC0415

        step, info = convolutions_only(step.get_concrete_function(images, labels).graph)
        print(json.dumps(info), file=sys.stderr)
    seconds = _median_step_seconds(lambda: step(images, labels).numpy(), reps)
    print(json.dumps({"variant": variant, "batch": batch, "seconds": seconds}), flush=True)


def _normalize_in_bfloat16(keras):
    """Makes every bfloat16 training-mode BatchNormalization normalize in bfloat16.

    The moments still accumulate in float32 (`keras.ops.moments` casts a
    bfloat16 input up and rounds the results to bfloat16); the moving
    statistics are updated in float32 as by Keras's layer.
    """
    keras_call = keras.layers.BatchNormalization.call

    def bfloat16_call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or inputs.dtype != "bfloat16":
            return keras_call(self, inputs, training=training, mask=mask)
        mean, variance = keras.ops.moments(inputs, axes=[0, 1, 2])
        for statistic, batch_value in ((self.moving_mean, mean),
                                       (self.moving_variance, variance)):
            statistic.assign(statistic * self.momentum
                             + keras.ops.cast(batch_value, "float32") * (1 - self.momentum))
        return keras.ops.batch_normalization(
            inputs, mean, variance, axis=-1, epsilon=self.epsilon,
            offset=keras.ops.cast(self.beta, "bfloat16"),
            scale=keras.ops.cast(self.gamma, "bfloat16"))

    keras.layers.BatchNormalization.call = bfloat16_call


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
    if variant == "torch_convs":
        seconds = _median_step_seconds(_torch_convolutions_only(torch, net, images), reps)
        print(json.dumps({"variant": variant, "batch": batch, "seconds": seconds}), flush=True)
        return

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


def _torch_convolutions_only(torch, net, images):
    """A function running the conv2d calls of a training step of `net`, and nothing else.

    A forward pass records each conv2d call's input shape and module; the
    function reruns each on random tensors of its own (made once; as in
    `_convolutions_only`), forward and backward, with the gradient of its
    input wherever the step needs one (all but the convolutions reading the
    images).
    """
    calls = []

    def record(module, inputs, output):
        calls.append((module, tuple(inputs[0].shape), tuple(output.shape),
                      inputs[0] is images))

    hooks = [module.register_forward_hook(record) for module in net.modules()
             if isinstance(module, torch.nn.Conv2d)]
    with torch.no_grad():
        net(images)
    for hook in hooks:
        hook.remove()
    generator = torch.Generator().manual_seed(0)
    tensors = [(module, torch.randn(input_shape, generator=generator),
                torch.randn(output_shape, generator=generator), reads_images)
               for module, input_shape, output_shape, reads_images in calls]

    def convolutions():
        for module, inputs, output_gradient, reads_images in tensors:
            outputs = module(inputs.detach().requires_grad_(not reads_images))
            outputs.backward(output_gradient)

    return convolutions


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


def _print_outside_convolutions(batch, seconds):
    for step, convs in (("tf", "tf_convs"), ("tf_bf16", "tf_bf16_convs"),
                        ("torch", "torch_convs")):
        if step in seconds and convs in seconds:
            print(f"batch {batch}: {step} step outside its convolutions: "
                  f"{seconds[step] - seconds[convs]:.2f} s "
                  f"({1 - seconds[convs] / seconds[step]:.0%} of the step)")
    if "torch" in seconds and "tf_convs" in seconds:
        print(f"batch {batch}: the most the tf step can reach with its convolutions as "
              f"they are: {seconds['torch'] / seconds['tf_convs']:.2f}x the reference "
              "(reference step / tf_convs)")


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
            reference = "torch_bf16" if "bf16" in variant else "torch"
            ratio = (f"{seconds[reference] / value:.2f}x"
                     if reference in seconds and variant.startswith("tf") else "-")
            share = (f"{3 * gflop * batch / value / peak:.0%}"
                     if "bf16" not in variant else "-")
            print(f"| {batch} | {variant} | {value:.2f} | {batch / value:.2f} | {ratio} | "
                  f"{share} |", flush=True)
        _print_outside_convolutions(batch, seconds)
    print(f"Goals: tf >= {FLOAT32_GOAL}x torch and >= {PEAK_SHARE_GOAL:.0%} of the GEMM "
          f"peak; tf_bf16 >= {BFLOAT16_GOAL}x torch_bf16.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
