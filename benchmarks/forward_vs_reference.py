"""Inference speed of our very_deep PolyNet against the PyTorch reference (not a test).

Same CPU, same batches (2 and 8), same thread count, measured in one run. The
reference is `pretrainedmodels`' PolyNet (its model file, loaded without the
package `__init__`, which needs torchvision), in a worker process that stays up
and is timed at the start and at the end of every round; each of our variants
runs in its own short-lived worker process in turn (one TF model in memory at
a time: some variants peak at several GB). Rounds repeat this so that a change
of load on the machine hits every variant alike; the table shows medians.
Both sides hold the same random weights and BatchNorm statistics (the
reference's state dict, converted by `polynet_tf.weights`), and the logits are
compared before timing.

Our variants (TensorFlow 2 / Keras 3, channels-last):
  keras        tf.function around the Keras model (what `model.predict` runs)
  keras_xla    the same with jit_compile=True (XLA)
  frozen       variables frozen to constants (convert_variables_to_constants_v2),
               so Grappler folds the BatchNorms into the convs and fuses
               conv + bias + ReLU into oneDNN convolutions; as fast as folded
               but about 9 GB at its peak, so not run by default
  folded       a graph built from the model with every BatchNorm folded into its
               conv by hand (and beta into the last projection of each path)
  folded_merged  folded, plus sibling 1x1 convs and 2-way projections merged
  keras_bf16   the Keras model built under the "mixed_bfloat16" policy
  keras_folded  the package's inference model: polynet_tf.models.fold_batch_norms
               (a Keras model, every BatchNorm folded into its conv)
  keras_folded_bf16  the same with dtype_policy="mixed_bfloat16"
  frozen_folded  keras_folded with its variables frozen to constants
  folded_bf16  the folded graph computed in bfloat16
Prefixes select a worker with other oneDNN settings:
  nodnn_       TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels instead of oneDNN)
  fw_          TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 (oneDNN caches reordered weights)
  fpbf16_      ONEDNN_DEFAULT_FPMATH_MODE=BF16 (float32 ops may compute in bf16)
The reference runs under torch.inference_mode(), in float32 ("torch") and
under torch.autocast("cpu", dtype=torch.bfloat16) ("torch_bf16"); bf16
variants are compared with torch_bf16. TensorFlow uses --threads intra-op
threads (and as many inter-op threads, TensorFlow's default); torch uses
torch.set_num_threads(--threads) with OMP_WAIT_POLICY=PASSIVE by default
(--omp_wait_policy; on a machine shared with other work, libgomp's busy
waiting makes the reference about 2x slower).

Usage: python benchmarks/forward_vs_reference.py [--threads 2] [--batches 2 8]
           [--rounds 2] [--reps 2] [--variants keras folded frozen ...]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

SIZE = 331
PREFIXES = ("nodnn_", "fw_", "fpbf16_")
TORCH_VARIANTS = ("torch", "torch_bf16")
DEFAULT_VARIANTS = TORCH_VARIANTS + (
    "keras", "keras_xla", "folded", "keras_bf16", "folded_bf16",
    "nodnn_keras", "nodnn_folded", "fw_keras", "fpbf16_folded",
)
# Stop before the machine runs out of memory (other work shares it).
MIN_AVAILABLE_GB = 1.5
# Worker environment of each variant prefix (the first that matches).
WORKER_ENVS = {
    "nodnn_": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "fw_": {"TF_ENABLE_ONEDNN_OPTS": "1", "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "1"},
    "fpbf16_": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_DEFAULT_FPMATH_MODE": "BF16"},
    "": {"TF_ENABLE_ONEDNN_OPTS": "1"},
}
FLOAT32_GOAL, BFLOAT16_GOAL = 1.6, 1.3


def inputs(batch, seed=0):
    """The same normalised-image-like batch in every worker (NHWC float32)."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    return np.random.default_rng(seed).normal(size=(batch, SIZE, SIZE, 3)).astype("float32")


# ----------------------------------------------------------------------------- workers


def _serve(handlers):
    """Answers JSON commands on stdin, one per line, until EOF."""
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = handlers[request.pop("cmd")](**request)
        except Exception as error:  # pylint: disable=broad-except  # reported to the parent
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(reply), flush=True)


def _timed(fn, reps):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def reference_polynet_module():
    """`pretrainedmodels/models/polynet.py`, loaded without the package `__init__`
    (which needs torchvision)."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.find_spec("pretrainedmodels")
    path = os.path.join(spec.submodule_search_locations[0], "models", "polynet.py")
    module_spec = importlib.util.spec_from_file_location("_reference_polynet", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def reference_network(seed=0):
    """The reference PolyNet in eval mode with random weights and BatchNorm statistics."""
    import torch  # pylint: disable=import-outside-toplevel

    torch.manual_seed(seed)
    net = reference_polynet_module().PolyNet().eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random BatchNorm statistics as well as weights
        for layer in net.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.weight.uniform_(0.5, 1.5, generator=generator)
                layer.bias.normal_(0.0, 0.2, generator=generator)
                layer.running_mean.normal_(0.0, 0.2, generator=generator)
                layer.running_var.uniform_(0.5, 2.0, generator=generator)
    return net


def torch_worker(threads, checkpoint):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(threads)
    net = reference_network()
    torch.save(net.state_dict(), checkpoint)
    cache = {}

    def run(variant, batch):
        if batch not in cache:
            nchw = np.ascontiguousarray(inputs(batch).transpose(0, 3, 1, 2))
            cache[batch] = torch.from_numpy(nchw)
        with torch.inference_mode():
            if variant == "torch_bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return net(cache[batch]).float().numpy()
            return net(cache[batch]).numpy()

    def time_cmd(variant, batch, reps):
        run(variant, batch)  # warm-up
        return {"times": _timed(lambda: run(variant, batch), reps)}

    def logits_cmd(variant, batch):
        return {"logits": run(variant, batch).tolist(), "first": None}

    print(json.dumps({"ready": f"torch {torch.__version__}",
                      "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}), flush=True)
    _serve({"time": time_cmd, "logits": logits_cmd})


def tf_worker(threads, inter_op, checkpoint, variants):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    from polynet_tf.models import PolyNet, fold_batch_norms  # pylint: disable=import-outside-toplevel
    from polynet_tf.weights import assign_state_dict, read_checkpoint  # pylint: disable=import-outside-toplevel

    state = read_checkpoint(checkpoint)
    model = PolyNet("very_deep", classifier_activation=None)
    assign_state_dict(model, state, "pretrainedmodels")
    bf16_model = None
    if any(v.endswith("keras_bf16") for v in variants):
        keras.config.set_dtype_policy("mixed_bfloat16")
        bf16_model = PolyNet("very_deep", classifier_activation=None)
        keras.config.set_dtype_policy("float32")
        assign_state_dict(bf16_model, state, "pretrainedmodels")
    del state

    # One trace for every batch size (the batch dimension is None): each trace
    # of a graph with constants holds its own copy of the weights.
    spec = [tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32)]

    def keras_fn(net, jit):
        return tf.function(lambda x: net(x, training=False), jit_compile=jit,
                           input_signature=spec)

    def frozen_fn(net):
        from tensorflow.python.framework.convert_to_constants import (  # pylint: disable=import-outside-toplevel
            convert_variables_to_constants_v2,
        )

        frozen = convert_variables_to_constants_v2(keras_fn(net, False).get_concrete_function())
        return lambda x: frozen(x)[0]

    builders = {
        "keras": lambda: keras_fn(model, False),
        "keras_xla": lambda: keras_fn(model, True),
        "frozen": lambda: frozen_fn(model),
        "frozen_folded": lambda: frozen_fn(fold_batch_norms(model)),
        "folded": lambda: folded_forward(model, "float32", input_signature=spec),
        "folded_merged": lambda: folded_forward(model, "float32", input_signature=spec,
                                                merge=("heads", "projections")),
        "keras_bf16": lambda: keras_fn(bf16_model, False),
        "keras_folded": lambda: keras_fn(fold_batch_norms(model), False),
        "keras_folded_bf16": lambda: keras_fn(fold_batch_norms(model, "mixed_bfloat16"), False),
        "folded_bf16": lambda: folded_forward(model, "bfloat16", input_signature=spec),
    }
    functions, data, done = {}, {}, set()

    def run(variant, batch):
        if variant not in functions:
            base = variant.split("_", 1)[1] if variant.startswith(PREFIXES) else variant
            functions[variant] = builders[base]()
        if batch not in data:
            data[batch] = tf.constant(inputs(batch))
        return tf.cast(functions[variant](data[batch]), tf.float32).numpy()

    def first_call(variant, batch):
        """Seconds of the first call at this batch (trace / compile, one pass), else None."""
        if (variant, batch) in done:
            return None
        start = time.perf_counter()
        run(variant, batch)
        done.add((variant, batch))
        return time.perf_counter() - start

    def time_cmd(variant, batch, reps):
        first = first_call(variant, batch)
        run(variant, batch)  # warm-up
        return {"times": _timed(lambda: run(variant, batch), reps), "first": first}

    def logits_cmd(variant, batch):
        first = first_call(variant, batch)
        return {"logits": run(variant, batch).tolist(), "first": first}

    settings = {k: v for k, v in os.environ.items() if k.startswith(("TF_ENABLE_ONEDNN",
                                                                     "TF_ONEDNN", "ONEDNN_"))}
    print(json.dumps({"ready": f"tensorflow {tf.__version__}", **settings}), flush=True)
    _serve({"time": time_cmd, "logits": logits_cmd})


def folded_forward(model, dtype, jit=False, merge=(), input_signature=None):
    """A tf.function computing the logits of `model` with BatchNorms folded into convs.

    Inference-only graph rewrites, all exact in real arithmetic:
    - every ConvBN (conv without bias -> BatchNorm -> ReLU?) becomes one conv
      with bias: kernel * s and beta - mean * s, with s = gamma / sqrt(var + eps);
    - the residual scale of each PolyInception path is folded into the
      projection of the path's last block (its output is not reused);
    - optionally (`merge` holds "heads" and / or "projections"; measured
      slower here, see the README): sibling 1x1 convs that read the same
      tensor run as one conv (the six 384->32 convs that open a 2-way A module
      become one 384->192 conv), and the two projections of a 2-way module
      become one conv over both blocks' concatenated branches;
    - dropout is the identity.
    Constants are cast to `dtype` ("float32" or "bfloat16") and built while
    tracing (Const nodes, so oneDNN caches its reordered kernels); the logits
    come back as float32.
    """
    import collections  # pylint: disable=import-outside-toplevel

    import keras  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from polynet_tf.layers import BranchConcat, ConvBN, PolyInceptionModule, Stem  # pylint: disable=import-outside-toplevel

    Conv = collections.namedtuple("Conv", "kernel bias strides padding relu")
    pool = "maxpool"

    def fold(unit, norm_index=0, extra_scale=1.0):
        norm = unit.norms[norm_index]
        gamma, beta, mean, var = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in (
            norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
        scale = gamma / np.sqrt(var + norm.epsilon)
        kernel = keras.ops.convert_to_numpy(unit.conv.kernel).astype(np.float64)
        return Conv((kernel * scale * extra_scale).astype(np.float32),
                    ((beta - mean * scale) * extra_scale).astype(np.float32),
                    tuple(unit.strides), unit.padding.upper(), unit.activation)

    def run(step, x):
        if step is pool:
            return tf.nn.max_pool2d(x, 3, 2, "VALID")
        y = tf.nn.conv2d(x, tf.constant(step.kernel, dtype), step.strides, step.padding)
        y = tf.nn.bias_add(y, tf.constant(step.bias, dtype))
        return tf.nn.relu(y) if step.relu else y

    def branches_of(layer, norm_index=0):
        ops = iter(layer.ops)
        return [[fold(op, norm_index) if isinstance(op, ConvBN) else pool
                 for op in (next(ops) for _ in branch)] for branch in layer.branches]

    def is_pointwise(step):
        return step is not pool and step.kernel.shape[:2] == (1, 1) and step.strides == (1, 1)

    def run_branches(x, branches):
        """Branch outputs, in order; leading 1x1 convs on x merged when `merge`."""
        heads = ([i for i, b in enumerate(branches) if is_pointwise(b[0])]
                 if "heads" in merge else [])
        starts = {}
        if len(heads) > 1:
            merged = Conv(np.concatenate([branches[i][0].kernel for i in heads], axis=-1),
                          np.concatenate([branches[i][0].bias for i in heads]),
                          (1, 1), "SAME", True)
            sizes = [branches[i][0].kernel.shape[-1] for i in heads]
            starts = dict(zip(heads, tf.split(run(merged, x), sizes, axis=-1)))
        outputs = []
        for i, branch in enumerate(branches):
            y, steps = (starts[i], branch[1:]) if i in starts else (x, branch)
            for step in steps:
                y = run(step, y)
            outputs.append(y)
        return outputs

    def concat(outputs):
        return outputs[0] if len(outputs) == 1 else tf.concat(outputs, axis=-1)

    def two_way(layer):
        beta = layer.residual_scale
        branches, projections = [], []
        for block in layer.blocks:
            branches += branches_of(block.branches)
            projections.append(fold(block.projections[0], 0, beta))
        if "projections" in merge:  # x + P1(c1) + P2(c2) = x + [P1; P2](c1 ++ c2)
            stacked = Conv(np.concatenate([p.kernel for p in projections], axis=2),
                           np.sum([p.bias for p in projections], axis=0),
                           (1, 1), "SAME", False)
            return lambda x: tf.nn.relu(x + run(stacked, concat(run_branches(x, branches))))
        per_block = len(branches) // len(projections)

        def apply(x):
            outputs = run_branches(x, branches)
            out = x
            for k, projection in enumerate(projections):
                out = out + run(projection, concat(outputs[k * per_block:(k + 1) * per_block]))
            return tf.nn.relu(out)

        return apply

    def poly(layer):
        beta = layer.residual_scale
        (block,) = layer.blocks
        orders = block.num_applications
        applications = [(branches_of(block.branches, a),
                         fold(block.projections[a], 0, beta if a == orders - 1 else 1.0))
                        for a in range(orders)]

        def apply(x):
            out, h = x, x
            for a, (branches, projection) in enumerate(applications):
                h = run(projection, concat(run_branches(tf.nn.relu(h) if a else h, branches)))
                out = out + (h if a == orders - 1 else tf.cast(beta, dtype) * h)
            return tf.nn.relu(out)

        return apply

    def module(layer):
        kind = str(layer.spec)
        if kind == "2way":
            return two_way(layer)
        if kind == "poly3[convs]":
            return poly(layer)
        raise ValueError(f"folded_forward handles the released modules only, not {kind}")

    def mixed(layer):
        branches = branches_of(layer)
        return lambda x: concat(run_branches(x, branches))

    steps = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
            continue
        if isinstance(layer, Stem):
            steps += [(lambda x, c=fold(p): run(c, x)) if isinstance(p, ConvBN) else mixed(p)
                      for p in layer.parts]
        elif isinstance(layer, PolyInceptionModule):
            steps.append(module(layer))
        elif isinstance(layer, BranchConcat):
            steps.append(mixed(layer))
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            steps.append(lambda x: tf.reduce_mean(x, axis=(1, 2)))
        elif isinstance(layer, keras.layers.Dense):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            bias = keras.ops.convert_to_numpy(layer.bias)
            steps.append(lambda x, k=kernel, b=bias: tf.nn.bias_add(
                tf.matmul(x, tf.constant(k, dtype)), tf.constant(b, dtype)))
        else:
            raise ValueError(f"folded_forward does not know layer {layer.name!r}")

    @tf.function(jit_compile=jit, input_signature=input_signature)
    def forward(x):
        y = tf.cast(x, dtype)
        for step in steps:
            y = step(y)
        return tf.cast(y, tf.float32)

    return forward


# ----------------------------------------------------------------------------- parent


class Worker:
    """A child process serving timing commands (started by `start`, ready after `wait`)."""

    def __init__(self, role, args, checkpoint, variants, env):
        command = [sys.executable, os.path.abspath(__file__), "--worker", role,
                   "--threads", str(args.threads), "--inter_op", str(args.inter_op),
                   "--checkpoint", checkpoint, "--variants", *variants]
        self.variants = variants
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, **env})
        self.info = None

    def wait(self):
        self.info = self._read()
        return self

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.process.args} died (see its stderr above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def ask(self, **request):
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=120)


def _available_gb():
    with open("/proc/meminfo") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def _guard_memory(workers):
    """Stops every worker and raises MemoryError when the machine is nearly out of memory."""
    if os.path.exists("/proc/meminfo") and _available_gb() < MIN_AVAILABLE_GB:
        for worker in workers.values():
            worker.process.kill()
        raise MemoryError(f"less than {MIN_AVAILABLE_GB} GB of memory left; run fewer --variants")


def _prefix(variant):
    return next(p for p in WORKER_ENVS if variant.startswith(p))


def _top5(logits):
    import numpy as np  # pylint: disable=import-outside-toplevel

    return [set(row) for row in np.argsort(-np.asarray(logits), axis=1)[:, :5]]


def _print_outputs(logits, batch):
    import numpy as np  # pylint: disable=import-outside-toplevel

    print(f"\nOutputs on {batch} random images, against the float32 reference (torch); "
          "top-5 of bf16 variants against their float32 counterpart:")
    base = logits["torch"]
    for variant, values in logits.items():
        error = np.max(np.abs(values - base)) / np.std(base)
        counterpart = {"torch_bf16": "torch", "keras_bf16": "keras", "folded_bf16": "folded",
                       "keras_folded_bf16": "keras_folded"}.get(variant, "torch")
        own = logits.get(counterpart, base)
        agree = np.mean([a == b for a, b in zip(_top5(values), _top5(own))])
        print(f"  {variant:>14}: max|logits - torch| / std = {error:.1e}; top-5 sets equal "
              f"to {counterpart}'s on {agree:.0%} of images", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--inter_op", type=int, default=None,
                        help="TensorFlow inter-op threads (default: --threads)")
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2, help="timed forward passes per turn")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--omp_wait_policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY of the torch worker ('' to leave it unset)")
    parser.add_argument("--worker", choices=("tf", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.inter_op = args.inter_op or args.threads
    if args.worker == "torch":
        return torch_worker(args.threads, args.checkpoint)
    if args.worker == "tf":
        return tf_worker(args.threads, args.inter_op, args.checkpoint, args.variants)

    import numpy as np  # pylint: disable=import-outside-toplevel

    ours = [v for v in dict.fromkeys(args.variants) if v not in TORCH_VARIANTS]
    variants = list(TORCH_VARIANTS) + ours
    times = {(v, b): [] for v in variants for b in args.batches}
    firsts, logits, info = {}, {}, {}
    started = time.time()
    check_batch = max(args.batches)

    def record(worker, variant, batch, reps):
        reply = worker.ask(cmd="time", variant=variant, batch=batch, reps=reps)
        if "error" in reply:
            raise RuntimeError(f"{variant}: {reply['error']}")
        times[(variant, batch)] += reply["times"]
        if reply.get("first") is not None:
            firsts[(variant, batch)] = reply["first"]

    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "reference.pth")
        omp = {"OMP_WAIT_POLICY": args.omp_wait_policy} if args.omp_wait_policy else {}
        # The reference stays up (and writes the checkpoint first); each of our
        # variants runs in its own short-lived worker, so that only one TF
        # model is in memory at a time.
        reference = Worker("torch", args, checkpoint, list(TORCH_VARIANTS), omp).wait()
        info["torch"] = reference.info
        for variant in TORCH_VARIANTS:
            logits[variant] = np.asarray(
                reference.ask(cmd="logits", variant=variant, batch=check_batch)["logits"])
        for round_index in range(args.rounds):
            for variant in TORCH_VARIANTS:
                for b in args.batches:
                    record(reference, variant, b, args.reps)
            for variant in ours:
                _guard_memory({"torch": reference})
                worker = Worker("tf", args, checkpoint, [variant],
                                WORKER_ENVS[_prefix(variant)]).wait()
                info[_prefix(variant) or "tf"] = worker.info
                if variant not in logits:
                    reply = worker.ask(cmd="logits", variant=variant, batch=check_batch)
                    if "error" in reply:
                        raise RuntimeError(f"{variant}: {reply['error']}")
                    logits[variant] = np.asarray(reply["logits"])
                    firsts[(variant, check_batch)] = reply.get("first")
                for b in args.batches:
                    record(worker, variant, b, args.reps)
                worker.close()
            for variant in TORCH_VARIANTS:
                for b in args.batches:
                    record(reference, variant, b, args.reps)
            print(f"# round {round_index + 1}/{args.rounds} done "
                  f"({time.time() - started:.0f} s)", flush=True)
        reference.close()

    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, threads={args.threads}, "
          f"TF inter-op threads={args.inter_op}; workers: {json.dumps(info)}")
    _print_outputs(logits, check_batch)

    def speed(variant, b):
        return b / float(np.median(times[(variant, b)]))

    print("\n| variant | " + " | ".join(f"batch {b}: img/s (x reference)" for b in args.batches)
          + " |")
    print("| --- | " + " | ".join("---" for _ in args.batches) + " |")
    for variant in variants:
        reference_variant = "torch_bf16" if variant.endswith("bf16") else "torch"
        cells = [f"{speed(variant, b):.2f} ({speed(variant, b) / speed(reference_variant, b):.2f}x)"
                 for b in args.batches]
        print(f"| {variant} | " + " | ".join(cells) + " |")
    print("\nFirst call (trace / compile + one pass), s: " + ", ".join(
        f"{v} b{b} {t:.0f}" for (v, b), t in firsts.items() if t is not None))
    print(f"Goals: float32 >= {FLOAT32_GOAL}x torch; bfloat16 >= {BFLOAT16_GOAL}x torch_bf16 "
          f"(reference of each row in the ratio). Total {time.time() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
