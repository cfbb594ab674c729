"""Training throughput (not a test): our loop on 1 and 2 workers vs Keras `fit`.

A small PolyNet (1/8 width, "A: 2way | B: poly3[convs] | C: 2way") at 128x128 on
synthetic JPEG shards made here:
1. `polynet_tf.training.Trainer` on one worker (in process);
2. the same through `python -m polynet_tf.train` on 2 localhost workers (the
   global batch is split between them; on one 2-core machine they share cores);
3. the baseline: the same model and optimizer in plain Keras `fit` on one
   worker, fed by the same tf.data pipeline.
Every rate is that of a second loop of `--steps` steps, timed from the end of
the first loop to the end of the second inside one run (tracing, input
pipeline start-up and shuffle-buffer filling excluded, and measured the same
way for all three): (1) and (2) from the rate the loop reports (TensorBoard
`images_per_second`, the `img_s` of the progress bar), (3) between the ends
of two Keras epochs. Ratios against (3).

`--all_reduce`: instead, the cost of the gradient all-reduce per step next to
the compute, with `MirroredStrategy` over two logical CPU devices (one image
per replica, global batch 2), for the tiny network (official_configs/
tiny_cpu.yaml) and, with `--released`, the released Very Deep PolyNet at
331x331. Each case runs in its own process (logical devices must be set
before TensorFlow starts) and times, as medians over `--steps` steps after
two warm-up steps: the forward and backward pass on both replicas alone, the
all-reduce (sum) of gradient-sized tensors alone, and the two together.

`--ema DECAY`: instead, the step-time cost of `trainer.ema_decay` (the
weights' moving average, updated after every step), two ways: (a) in one
process, the EMA update alone and a whole training step with it, timed
alternately `--steps` times (medians; robust to a machine shared with other
jobs); (b) (1) without and with EMA, alternated `--repeats` times side by
side (medians of the loops' rates, sensitive to the machine's load).

Usage: python benchmarks/train_step.py [--steps 40] [--batch 32]
       python benchmarks/train_step.py --all_reduce [--released] [--steps 5]
       python benchmarks/train_step.py --ema 0.999 [--repeats 3]
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from polynet_tf.configs import load_experiment  # noqa: E402
from polynet_tf.data import PipelineStats, build_dataset  # noqa: E402
from polynet_tf.models.factory import build_model  # noqa: E402
from polynet_tf.training.optimization import build_optimizer  # noqa: E402
from polynet_tf.training.trainer import Trainer  # noqa: E402
from tests.training.synthetic_data import write_dataset  # noqa: E402

CONFIG = os.path.join(ROOT, "official_configs", "tiny_cpu.yaml")
ARCHITECTURE = "A: 2way | B: poly3[convs] | C: 2way"


def _overrides(train, steps, batch, steps_per_loop=None, extra=()):
    loop = steps_per_loop or steps
    return ",".join([*extra,
        "model.num_classes=4", f"model.architecture={ARCHITECTURE}",
        f"train_data.file_pattern={train}", "train_data.image_size=128",
        f"train_data.global_batch_size={batch}", f"trainer.train_steps={steps}",
        f"trainer.steps_per_loop={loop}", f"trainer.checkpoint_interval={steps}",
        f"trainer.eval_interval={steps}", f"trainer.summary_interval={loop}",
        "trainer.adaptive_drop_path.enabled=false"])


def _reported_rate(model_dir, step):
    """The images/s the training loop reported for the loop ending at `step`."""
    pattern = os.path.join(model_dir, "train", "events.out.tfevents.*")
    for record in tf.data.TFRecordDataset(tf.io.gfile.glob(pattern)):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
            if event.step == step and value.tag == "images_per_second":
                return float(tf.make_ndarray(value.tensor))
    raise RuntimeError(f"no images_per_second summary at step {step} in {model_dir}")


def one_worker(train, steps, batch, model_dir, extra=()):
    config = load_experiment([CONFIG], _overrides(train, 2 * steps, batch, steps, extra))
    trainer = Trainer(config, model_dir, tf.distribute.OneDeviceStrategy("/cpu:0"))
    trainer.train()  # two loops: the first traces and starts the pipeline
    return _reported_rate(model_dir, 2 * steps)


class _EpochEnds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter())


def keras_fit(train, steps, batch):
    config = load_experiment([CONFIG], _overrides(train, steps, batch))
    model = build_model(config.model, image_size=128)
    optimizer, _ = build_optimizer(config.optimizer, config.schedule, batch)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = build_dataset(config.train_data)
    epoch_ends = _EpochEnds()
    # Two epochs of one iterator: the first traces and starts the pipeline.
    model.fit(dataset, steps_per_epoch=steps, epochs=2, verbose=0, callbacks=[epoch_ends])
    return steps * batch / (epoch_ends.times[1] - epoch_ends.times[0])


def two_workers(train, steps, batch, model_dir):
    """Times two CLI workers: the second run's loop rate from their logs."""
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            ports.append(sock.getsockname()[1])
    hosts = ",".join(f"localhost:{p}" for p in ports)
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TF_CONFIG", None)
    command = [sys.executable, "-m", "polynet_tf.train", f"--config={CONFIG}",
               f"--model_dir={model_dir}", "--mode=train", f"--worker_hosts={hosts}",
               f"--params_override={_overrides(train, 2 * steps, batch, steps)}"]
    logs = [tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) for _ in range(2)]
    workers = [subprocess.Popen(command + [f"--task_index={i}"], stdout=logs[i],
                                stderr=subprocess.STDOUT, env=env) for i in range(2)]
    for worker in workers:
        worker.wait(timeout=1800)
    if any(worker.returncode for worker in workers):
        log = open(logs[0].name).read()
        raise RuntimeError("a worker failed; the chief's log:\n" + log[-2000:])
    return _reported_rate(model_dir, 2 * steps)  # the chief's summaries


def all_reduce_case(network, steps):
    """Prints compute, all-reduce and step times (ms) of two replicas, batch 2."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if network == "tiny":
        config = load_experiment([CONFIG], "train_data.file_pattern=unused")
        size = config.train_data.image_size
    else:
        config = load_experiment([], "train_data.file_pattern=unused,model.dropout_rate=0")
        size = 331
    with strategy.scope():
        model = build_model(config.model, image_size=size)
    variables = model.trainable_variables
    images = tf.random.uniform([1, size, size, 3])
    labels = tf.constant([1])

    def gradients():
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
        return tape.gradient(loss, variables)

    def reduce(grads):
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)

    def total(tensors):
        return tf.add_n([tf.reduce_sum(g) for g in tensors])

    cases = {
        "compute": lambda: total(gradients()),
        "all-reduce": lambda: total(reduce([tf.ones_like(v) for v in variables])),
        "step": lambda: total(reduce(gradients())),
    }
    parameters = sum(int(tf.size(v)) for v in variables)
    print(f"{network}: {parameters / 1e6:.2f} M trainable parameters "
          f"({4 * parameters / 2**20:.1f} MiB of float32 gradients), {size}x{size}, "
          "2 replicas x 1 image (MirroredStrategy, default cross-device ops)",
          flush=True)
    for name, fn in cases.items():
        function = tf.function(lambda fn=fn: strategy.experimental_local_results(
            strategy.run(fn)))
        times = []
        for index in range(steps + 2):
            start = time.perf_counter()
            [value.numpy() for value in function()]
            if index >= 2:
                times.append(time.perf_counter() - start)
        times.sort()
        print(f"{network}: {name:10s} {1000 * times[len(times) // 2]:9.1f} ms per step "
              f"(median of {steps})", flush=True)


def _median(values):
    return sorted(values)[len(values) // 2]


def ema_update_share(train, decay, steps, batch, model_dir):
    """(median step with EMA, median EMA update alone), seconds, timed alternately."""
    config = load_experiment([CONFIG], _overrides(train, 10 * steps, batch, 1,
                                                  [f"trainer.ema_decay={decay}"]))
    trainer = Trainer(config, model_dir, tf.distribute.OneDeviceStrategy("/cpu:0"))
    iterator = iter(trainer._train_dataset(0, PipelineStats()))
    train_step = trainer._make_train_function()
    update = tf.function(lambda: trainer._ema.update(trainer.global_step))
    times = {"step": [], "update": []}
    for index in range(steps + 2):  # two warm-up rounds (tracing)
        for name, run in (("step", lambda: train_step(iterator, 1).numpy()),
                          ("update", lambda: update())):
            start = time.perf_counter()
            run()
            if index >= 2:
                times[name].append(time.perf_counter() - start)
    return _median(times["step"]), _median(times["update"])


def ema_overhead(decay, steps, batch, repeats):
    """The EMA's share of a step, then one worker without and with it, alternated."""
    rates = {0.0: [], decay: []}
    with tempfile.TemporaryDirectory() as workdir:
        train, _ = write_dataset(os.path.join(workdir, "data"), num_train=512, num_val=16,
                                 size=160)
        step, update = ema_update_share(train, decay, steps, batch,
                                        os.path.join(workdir, "share"))
        print(f"(a) median step with EMA {1000 * step:.1f} ms, EMA update alone "
              f"{1000 * update:.2f} ms: step time x{step / (step - update):.3f} with EMA",
              flush=True)
        for repeat in range(repeats):
            for value in rates:
                rates[value].append(one_worker(
                    train, steps, batch, os.path.join(workdir, f"{value}_{repeat}"),
                    extra=[f"trainer.ema_decay={value}"]))
                print(f"ema_decay {value}: {rates[value][-1]:.1f} images/s", flush=True)
    off, on = (_median(r) for r in rates.values())
    print(f"machine: {os.cpu_count()} cores, TF {tf.__version__}; 128x128, global batch "
          f"{batch}, {steps} timed steps, median of {repeats}")
    print(f"without EMA: {off:8.1f} images/s")
    print(f"with EMA {decay}: {on:8.1f} images/s  (step time x{off / on:.3f}; (b))")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--all_reduce", action="store_true",
                        help="time the gradient all-reduce of two replicas instead")
    parser.add_argument("--released", action="store_true",
                        help="with --all_reduce: also the released network")
    parser.add_argument("--ema", type=float, default=None,
                        help="time trainer.ema_decay=EMA against no EMA instead")
    parser.add_argument("--repeats", type=int, default=3, help="with --ema: alternations")
    parser.add_argument("--all_reduce_case", choices=["tiny", "released"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.all_reduce_case:
        all_reduce_case(args.all_reduce_case, args.steps)
        return
    if args.ema:
        ema_overhead(args.ema, args.steps, args.batch, args.repeats)
        return
    if args.all_reduce:
        for network in ["tiny"] + (["released"] if args.released else []):
            subprocess.run([sys.executable, os.path.abspath(__file__), "--all_reduce_case",
                            network, "--steps", str(args.steps)], check=True)
        return
    with tempfile.TemporaryDirectory() as workdir:
        train, _ = write_dataset(os.path.join(workdir, "data"), num_train=512, num_val=16,
                                 size=160)
        baseline = keras_fit(train, args.steps, args.batch)
        ours = one_worker(train, args.steps, args.batch, os.path.join(workdir, "one"))
        pair = two_workers(train, args.steps, args.batch, os.path.join(workdir, "two"))
    print(f"machine: {os.cpu_count()} cores, TF {tf.__version__}, Keras {keras.__version__}; "
          f"128x128, global batch {args.batch}, {args.steps} timed steps")
    print(f"Keras fit, 1 worker (baseline): {baseline:8.1f} images/s")
    print(f"polynet_tf loop, 1 worker:      {ours:8.1f} images/s  ({ours / baseline:.2f}x)")
    print(f"polynet_tf loop, 2 workers:     {pair:8.1f} images/s  ({pair / baseline:.2f}x)")


if __name__ == "__main__":
    main()
