"""Checkpoint save time of the released Very Deep PolyNet (not a test).

What a preempted job must fit into its notice after its last step:
`Trainer.save` on the released network (official_configs/
very_deep_imagenet.yaml: weights, RMSProp slots, step) -- the finiteness
check, the BatchNorm statistics sync and `tf.train.CheckpointManager.save`
-- timed `--repeats` times (the first one also traces the check), then
each part alone. Baseline,
side by side: writing the same number of bytes as one file with
`tf.io.gfile` (what the storage itself allows). Prints seconds, sizes and
the ratio save / raw write.

Usage: python benchmarks/checkpoint_save.py [--model_dir DIR_OR_URI] [--repeats 3]
(default: a temporary local directory; a gs:// URI measures a bucket).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from polynet_tf import fileio  # noqa: E402
from polynet_tf.configs import load_experiment  # noqa: E402
from polynet_tf.training.trainer import Trainer  # noqa: E402

CONFIG = os.path.join(ROOT, "official_configs", "very_deep_imagenet.yaml")


def _checkpoint_bytes(path):
    return sum(tf.io.gfile.stat(name).length for name in tf.io.gfile.glob(path + ".*"))


def _raw_write_seconds(directory, size):
    payload = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8).tobytes()
    path = fileio.join(directory, "raw_write.bin")
    start = time.perf_counter()
    with tf.io.gfile.GFile(path, "wb") as handle:
        handle.write(payload)
    seconds = time.perf_counter() - start
    tf.io.gfile.remove(path)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = args.model_dir or tempfile.mkdtemp(prefix="checkpoint_save_")
    # The data is never read: the trainer is only saved.
    config = load_experiment([CONFIG], "train_data.file_pattern=/unused/train-*,"
                             "eval_data.file_pattern=/unused/validation-*", mode="train")
    start = time.perf_counter()
    trainer = Trainer(config, model_dir, tf.distribute.OneDeviceStrategy(
        (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0].name))
    build = time.perf_counter() - start
    parameters = sum(int(np.prod(v.shape)) for v in trainer.model.weights)
    print(f"released network ({config.model.architecture}, {parameters / 1e6:.1f} M weights), "
          f"built in {build:.1f} s; saving to {model_dir}")
    seconds = []
    for repeat in range(args.repeats):
        trainer.global_step.assign(repeat + 1)
        start = time.perf_counter()
        path = trainer.save()
        seconds.append(time.perf_counter() - start)
        # Its parts, timed again one by one.
        parts = {}
        for name, part in (("finiteness check", lambda: bool(trainer._state_is_finite())),
                           ("BatchNorm sync", trainer._sync_batch_norm),
                           ("CheckpointManager.save", lambda: trainer.manager.save(
                               checkpoint_number=trainer.step))):
            begin = time.perf_counter()
            part()
            parts[name] = time.perf_counter() - begin
        print(f"save {repeat + 1}: {seconds[-1]:.2f} s (then, alone: " +
              ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()) + ")")
    size = _checkpoint_bytes(path)
    raw = _raw_write_seconds(model_dir, size)
    later = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    print(f"checkpoint: {size / 2**20:.0f} MiB; Trainer.save: first {seconds[0]:.2f} s, "
          f"then median {later:.2f} s; raw write of the same bytes: {raw:.2f} s; "
          f"ratio save / raw write: {later / raw:.1f}")


if __name__ == "__main__":
    main()
