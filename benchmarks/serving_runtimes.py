"""CPU inference of the Very Deep PolyNet in every serving runtime, against PyTorch (not a test).

One process, the same random weights everywhere (the PyTorch reference's,
`pretrainedmodels`' PolyNet with random BatchNorm statistics, copied into the
Keras model by `polynet_tf.weights.assign_state_dict`), the same inputs, the
same thread count, timed side by side in alternating rounds (every variant
once per round, so that a change of load on a shared machine hits all alike):

  torch          the reference, float32, under torch.inference_mode()
  keras          the Keras `PolyNet()` in a tf.function (what `model.predict` runs)
  savedmodel     the exported SavedModel (`python -m polynet_tf.export`, BatchNorms
                 folded), its `serve_crops` signature (normalisation in the graph)
  litert_fp32    `--format litert`: the LiteRT interpreter (XNNPACK)
  litert_int8    `--format litert --quantize int8` (full integer, XNNPACK)
  onnx_fp32      `--format onnx`: ONNX Runtime, CPU execution provider
  onnx_int8      `--format onnx --quantize int8` (static QDQ int8)

The int8 files are calibrated on `--calibration_images` inputs drawn like the
timed ones. Before timing, every variant's outputs on `--check_images` other
inputs are compared with the reference's: top-1 agreement with PyTorch and
with the float Keras model (with random weights this says that the files
compute the same function; the accuracy cost of int8 on real images is the
demo's and the export's report). Prints images per second (median of the
timed calls) and each variant's speed-up over PyTorch per batch size.

Usage (a few minutes to convert, then the rounds):
    python benchmarks/serving_runtimes.py [--threads 2] [--batches 1 8] [--rounds 2]
Smoke run (another network for ours; the ratios then mean nothing):
    python benchmarks/serving_runtimes.py --architecture "A: 2way | B: 2way | C: 2way" \
        --width_multiplier 0.125 --size 75 --rounds 1 --calibration_images 4
"""

import argparse
import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# libgomp's busy waiting (torch) and TensorFlow's threads would compete for the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import forward_vs_reference as reference_bench  # noqa: E402

VARIANTS = ("torch", "keras", "savedmodel", "litert_fp32", "litert_int8", "onnx_fp32",
            "onnx_int8")
GOAL = 2.0


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="very_deep")
    parser.add_argument("--width_multiplier", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=reference_bench.SIZE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2, help="timed calls per variant, batch "
                        "and round")
    parser.add_argument("--calibration_images", type=int, default=8)
    parser.add_argument("--check_images", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    return parser.parse_args(argv)


def _inputs(count, size, seed):
    return np.random.default_rng(seed).normal(size=(count, size, size, 3)).astype(np.float32)


def _torch_variant(threads, size):
    import torch  # noqa: PLC0415

    torch.set_num_threads(threads)
    net = reference_bench.reference_network()

    def run(images):
        nchw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        with torch.inference_mode():
            return net(nchw).numpy()

    state = {key: value.numpy() for key, value in net.state_dict().items()}
    return run, state


def _keras_models(args, state):
    import keras  # noqa: PLC0415

    from polynet_tf import PolyNet  # noqa: PLC0415
    from polynet_tf.weights import assign_state_dict  # noqa: PLC0415

    keras.utils.set_random_seed(0)
    model = PolyNet(args.architecture, input_shape=(args.size, args.size, 3),
                    width_multiplier=args.width_multiplier)
    if args.architecture == "very_deep" and args.width_multiplier == 1.0:
        assign_state_dict(model, state, "pretrainedmodels")
    return model


def _build_variants(args, model, scratch, log):
    """name -> callable(images) -> outputs, for `args.variants` other than torch."""
    import tensorflow as tf  # noqa: PLC0415

    from polynet_tf.data import InputContract  # noqa: PLC0415
    from polynet_tf.serving import SignatureOptions, export_saved_model  # noqa: PLC0415
    from polynet_tf.serving import portable, runtimes  # noqa: PLC0415
    from polynet_tf.serving.calibration import CalibrationImages  # noqa: PLC0415

    contract = InputContract("single", args.size)
    variants = {}
    if "keras" in args.variants:
        keras_call = tf.function(lambda x: model(x, training=False), input_signature=[
            tf.TensorSpec((None, args.size, args.size, 3), tf.float32)])
        variants["keras"] = lambda images: keras_call(images).numpy()
    if "savedmodel" in args.variants:
        options = SignatureOptions(contract, [str(i) for i in range(model.output_shape[-1])],
                                   top_k=5)
        result = export_saved_model(model, scratch, "bench", options, verify=False)
        serve = tf.saved_model.load(result.path).signatures["serve_crops"]
        mean = np.asarray(contract.mean, np.float32) * 255
        std = np.asarray(contract.std, np.float32) * 255
        variants["savedmodel"] = lambda images: serve(
            crops=tf.constant(images * std + mean))["probabilities"].numpy()
    served = portable.exporter.served_model(model, None)
    calibration = CalibrationImages("random", _inputs(args.calibration_images, args.size, 1),
                                    np.zeros((0, args.size, args.size, 3), np.float32))
    for fmt in ("litert", "onnx"):
        for quantize, suffix in (("none", "fp32"), ("int8", "int8")):
            name = f"{fmt}_{suffix}"
            if name not in args.variants:
                continue
            started = time.perf_counter()
            content = portable.convert_model(served, fmt, quantize, calibration, scratch)
            log(f"# converted {name}: {len(content) / 2**20:.1f} MiB in "
                f"{time.perf_counter() - started:.0f} s")
            runner = (runtimes.LiteRTModel if fmt == "litert" else runtimes.OnnxModel)(
                content, num_threads=args.threads)
            variants[name] = runner
    return variants


def _top1(outputs):
    return np.asarray(outputs).argmax(-1)


def main(argv=None):
    args = _parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown --variants {unknown}; choose from {list(VARIANTS)}")
    import tensorflow as tf  # noqa: PLC0415

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    def log(text):
        print(text, flush=True)

    started = time.time()
    torch_run, state = _torch_variant(args.threads, args.size)
    model = _keras_models(args, state)
    del state
    with tempfile.TemporaryDirectory(prefix="serving_runtimes-") as scratch:
        variants = {"torch": torch_run, **_build_variants(args, model, scratch, log)}
        variants = {name: variants[name] for name in VARIANTS if name in variants}
        # The reference takes 331 only (smoke runs give ours another size).
        sizes = {name: reference_bench.SIZE if name == "torch" else args.size
                 for name in variants}
        check = _inputs(args.check_images, args.size, 2)
        reference = _top1(torch_run(_inputs(args.check_images, reference_bench.SIZE, 2)))
        keras_top1 = _top1(model(check, training=False))
        log(f"\nTop-1 on {args.check_images} random inputs (same weights everywhere):")
        for name, run in variants.items():
            top1 = _top1(run(_inputs(args.check_images, sizes[name], 2)))
            log(f"  {name:12s} agrees with torch on {np.mean(top1 == reference):.0%}, "
                f"with Keras float32 on {np.mean(top1 == keras_top1):.0%}")
        times = {(name, b): [] for name in variants for b in args.batches}
        batches = {(size, b): _inputs(b, size, 3) for size in set(sizes.values())
                   for b in args.batches}
        for name, run in variants.items():  # warm-up: first calls allocate and trace
            for b in args.batches:
                run(batches[(sizes[name], b)])
        for round_index in range(args.rounds):
            for name, run in variants.items():
                for b in args.batches:
                    times[(name, b)] += reference_bench._timed(  # noqa: SLF001
                        lambda run=run, x=batches[(sizes[name], b)]: run(x), args.reps)
            log(f"# round {round_index + 1}/{args.rounds} done ({time.time() - started:.0f} s)")

    import keras  # noqa: PLC0415
    import torch  # noqa: PLC0415

    log(f"\n# {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; "
        f"{args.architecture} x{args.width_multiplier} at {args.size}x{args.size}; "
        f"TF {tf.__version__}, Keras {keras.__version__}, torch {torch.__version__}")
    log("\n| variant | " + " | ".join(f"batch {b}: img/s (x PyTorch)" for b in args.batches)
        + " |")
    log("| --- | " + " | ".join("---" for _ in args.batches) + " |")

    def speed(name, b):
        return b / float(np.median(times[(name, b)]))

    for name in variants:
        cells = [f"{speed(name, b):.2f} ({speed(name, b) / speed('torch', b):.2f}x)"
                 for b in args.batches]
        log(f"| {name} | " + " | ".join(cells) + " |")
    best = max((n for n in variants if n != "torch"), key=lambda n: speed(n, args.batches[0]))
    ratio = speed(best, args.batches[0]) / speed("torch", args.batches[0])
    log(f"\nFastest at batch {args.batches[0]}: {best}, {ratio:.2f}x PyTorch (goal >= {GOAL}x"
        f": {'reached' if ratio >= GOAL else 'not reached'}). Total {time.time() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
