"""Memory and step time of rematerialization (not a test): PolyNet(rematerialize=True) vs not.

One training step (forward, backward, RMSProp update of the paper's recipe) of
a PolyNet on random images, each variant in its own fresh process so that one
cannot inherit the other's heap. The variants alternate over `--rounds`, so
both see the same machine load; ratios are remat / plain of the medians.

Per process:
- peak RSS: the highest resident memory while the steps ran, the first
  one included (`/proc/self/status` VmHWM after resetting it through
  `/proc/self/clear_refs`; where that reset is not allowed, the lifetime peak
  `getrusage` ru_maxrss);
- step memory: that peak minus the resident memory once the model, the
  optimizer slots and the traced step function exist, before any step ran
  (the heap returned with `malloc_trim`): what training needs on top of the
  model, mostly the activations kept for the backward pass. It is measured
  from the first step on because the allocator keeps memory a step freed
  (RSS after a step stays near its peak), so a later step would show nothing;
  the first step also includes TensorFlow's one-time graph optimisation;
- later steps: the peak RSS of the timed steps after the first, above the
  resident memory between steps (freed heap returned with `malloc_trim`);
  the allocator keeps much of what a step freed, so this understates;
- TF peak / TF step: TensorFlow's own allocator statistics
  (`tf.config.experimental.get_memory_info("CPU:0")`) over the timed steps:
  the peak of live tensors, and that peak above the tensors held between
  steps (weights, optimizer slots): activations kept for the backward pass,
  gradients and temporaries. This is the figure rematerialization acts on,
  free of allocator caching and of TensorFlow's graph optimisation;
- step time: mean over the timed steps after the first.

The goal (issues 5 and 19): with rematerialization, the allocator's peak
(TF peak) at most 0.5x and the step time at most 1.35x of the plain network's,
for the very deep net at per-replica batch 8, 331x331; and the largest batch
each fits in a memory budget (a line through the TF peaks of two batches or
more). The TF statistics need TensorFlow's BFC allocator for CPU memory, which
each measuring process turns on (`TF_CPU_ALLOCATOR_USE_BFC=true`):

    python benchmarks/remat_memory.py --batch 2 8 --memory_budget_gib 16
    python benchmarks/remat_memory.py                         # very_deep, 331, batch 2
    python benchmarks/remat_memory.py --architecture "A: 2way*2 | B: ir | C: ir" \\
        --width 0.25 --image_size 331 --batch 4 --steps 1    # a smoke run
"""

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak():
    """Resets VmHWM to the current RSS; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def measure(args):
    """Runs in the child process: prints one JSON line of measurements."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow counts the bytes of its CPU allocator (get_memory_info,
    # reset_memory_stats) only with the BFC allocator; the default one
    # refuses ("Cannot reset memory stats for device 'CPU:0'").
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    sys.path.insert(0, ROOT)
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from polynet_tf.configs import ModelConfig, OptimizerConfig, ScheduleConfig  # noqa: PLC0415
    from polynet_tf.models.factory import build_model  # noqa: PLC0415
    from polynet_tf.training.optimization import build_optimizer  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    batch = args.batch[0]
    model = build_model(
        ModelConfig(architecture=args.architecture, num_classes=args.classes,
                    width_multiplier=args.width, rematerialize=args.rematerialize),
        image_size=args.image_size)
    optimizer, _ = build_optimizer(OptimizerConfig(), ScheduleConfig(), batch)
    optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(batch, args.image_size, args.image_size, 3)),
                         tf.float32)
    labels = tf.constant(rng.integers(0, args.classes, size=batch))

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    train_step.get_concrete_function()  # tracing, before the baseline
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before_kib = _status_kib("VmRSS")
    peak_was_reset = _reset_peak()
    train_step().numpy()  # first step: graph optimisation, first allocations
    first_peak_kib = (_status_kib("VmHWM") if peak_was_reset
                      else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    # Steady state: what the first step freed goes back to the system, then
    # the peak of the later steps above what stays resident between steps.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    between_kib = _status_kib("VmRSS")
    _reset_peak()
    tf.config.experimental.reset_memory_stats("CPU:0")
    held_bytes = tf.config.experimental.get_memory_info("CPU:0")["current"]
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = float(train_step().numpy())
    step_seconds = (time.perf_counter() - start) / args.steps
    tensor_peak_bytes = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    peak_kib = (_status_kib("VmHWM") if peak_was_reset
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print(json.dumps({
        "peak_mib": max(peak_kib, first_peak_kib) / 1024,
        "step_mib": (first_peak_kib - before_kib) / 1024,
        "steady_peak_mib": peak_kib / 1024, "steady_step_mib": (peak_kib - between_kib) / 1024,
        "tensor_peak_mib": tensor_peak_bytes / 2**20,
        "tensor_step_mib": (tensor_peak_bytes - held_bytes) / 2**20,
        "before_mib": before_kib / 1024, "step_seconds": step_seconds, "loss": loss,
        "peak_is_lifetime": not peak_was_reset,
        "parameters": int(sum(np.prod(v.shape) for v in model.trainable_variables)),
    }), flush=True)


def run_variant(args, batch, rematerialize):
    """One measurement in a fresh process; returns its JSON result."""
    command = [sys.executable, os.path.abspath(__file__), "--child",
               f"--architecture={args.architecture}", f"--image_size={args.image_size}",
               f"--batch={batch}", f"--width={args.width}", f"--classes={args.classes}",
               f"--steps={args.steps}"] + (["--rematerialize"] if rematerialize else [])
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        raise RuntimeError(f"the {'remat' if rematerialize else 'plain'} run failed "
                           f"(exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


_KEYS = ("peak_mib", "step_mib", "before_mib", "steady_peak_mib", "steady_step_mib",
         "tensor_peak_mib", "tensor_step_mib", "step_seconds")


def _measure_batch(args, batch):
    """Median measurements of the plain and rematerialized network at one batch."""
    runs = {False: [], True: []}
    for _ in range(args.rounds):
        for rematerialize in (False, True):
            runs[rematerialize].append(run_variant(args, batch, rematerialize))
    if runs[False][0]["peak_is_lifetime"]:
        print("note: /proc/self/clear_refs refused; peaks are lifetime peaks (tracing included)")
    return runs[False][0]["parameters"], {
        variant: {key: statistics.median(run[key] for run in results) for key in _KEYS}
        for variant, results in runs.items()}


def _print_batch(batch, plain, remat):
    print(f"batch {batch}:")
    print(f"{'':14}{'peak RSS':>12}{'first step':>13}{'before step':>14}{'later steps':>14}"
          f"{'TF peak':>12}{'TF step':>12}{'step time':>12}")
    for name, values in (("plain", plain), ("rematerialize", remat)):
        print(f"{name:14}{values['peak_mib']:9.0f} MiB{values['step_mib']:10.0f} MiB"
              f"{values['before_mib']:11.0f} MiB{values['steady_step_mib']:11.0f} MiB"
              f"{values['tensor_peak_mib']:9.0f} MiB{values['tensor_step_mib']:9.0f} MiB"
              f"{values['step_seconds']:10.3f} s")
    print("ratios remat/plain: TF tensor peak "
          f"{remat['tensor_peak_mib'] / plain['tensor_peak_mib']:.2f}x (goal <= 0.50x), "
          "TF tensor step memory "
          f"{remat['tensor_step_mib'] / max(plain['tensor_step_mib'], 1e-9):.2f}x, peak RSS "
          f"{remat['peak_mib'] / plain['peak_mib']:.2f}x, first-step memory "
          f"{remat['step_mib'] / max(plain['step_mib'], 1e-9):.2f}x, later-step memory "
          f"{remat['steady_step_mib'] / max(plain['steady_step_mib'], 1e-9):.2f}x, step time "
          f"{remat['step_seconds'] / plain['step_seconds']:.2f}x (goal <= 1.35x)")


def _print_budget(results, budget_gib):
    """The largest batch under the budget, from a line through the measured TF peaks."""
    import numpy as np  # noqa: PLC0415

    budget_mib = budget_gib * 1024
    batches = sorted(results)
    for index, name in ((False, "plain"), (True, "rematerialize")):
        peaks = [results[batch][index]["tensor_peak_mib"] for batch in batches]
        slope, intercept = np.polyfit(batches, peaks, 1)
        largest = int((budget_mib - intercept) // slope)
        print(f"{name}: TF tensor peak = {intercept:.0f} MiB + {slope:.1f} MiB x batch "
              f"(fit through batches {batches}); largest batch within {budget_gib:g} GiB: "
              f"{largest}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="very_deep",
                        help="preset name or stage spec (default: very_deep)")
    parser.add_argument("--image_size", type=int, default=331)
    parser.add_argument("--batch", type=int, nargs="+", default=[2],
                        help="per-replica batch size(s), each measured in turn")
    parser.add_argument("--memory_budget_gib", type=float, nargs="*", default=[],
                        help="with two batches or more: the largest batch whose TF tensor "
                             "peak fits in each budget (GiB), from a line through the "
                             "measured peaks")
    parser.add_argument("--width", type=float, default=1.0, help="width_multiplier")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=1,
                        help="plain/remat process pairs, alternating")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rematerialize", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args)
        return
    results = {}
    for batch in args.batch:
        parameters, median = _measure_batch(args, batch)
        results[batch] = (median[False], median[True])
        if len(results) == 1:
            print(f"{args.architecture!r}, width {args.width}, {args.image_size}x"
                  f"{args.image_size}, {parameters:,} parameters; {args.rounds} round(s) x "
                  f"{args.steps} timed step(s); {os.cpu_count()} cores")
        _print_batch(batch, *results[batch])
    if len(results) >= 2:
        for budget in args.memory_budget_gib:
            _print_budget(results, budget)


if __name__ == "__main__":
    main()
