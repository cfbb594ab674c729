"""EMA against raw weights on the digits demo (not a test): validation top-1 over seeds.

Builds the demo's data (scikit-learn's digits as JPEG folders, then TFRecord
shards, as `scripts/demo.sh` does), then for each seed trains
`official_configs/digits_demo.yaml` with `trainer.ema_decay` on one worker in
process (the demo's global batch of 32 and its 600 steps; `runtime.seed` and
`train_data.seed` set to the seed) and evaluates the final checkpoint's raw
weights and their EMA on the validation shards (single crop, whole image).

Usage: python benchmarks/ema_digits.py [--seeds 1,2,3] [--ema_decay 0.99] [--work_dir DIR]
"""

import argparse
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tensorflow as tf  # noqa: E402

from polynet_tf.configs import load_experiment  # noqa: E402
from polynet_tf.training.trainer import Trainer  # noqa: E402

CONFIG = os.path.join(ROOT, "official_configs", "digits_demo.yaml")


def build_data(work_dir):
    """The demo's shards under `work_dir`; returns (train pattern, validation pattern)."""
    digits, records = os.path.join(work_dir, "digits"), os.path.join(work_dir, "records")
    if not tf.io.gfile.glob(os.path.join(records, "validation-*")):
        env = dict(os.environ, PYTHONPATH=ROOT)
        subprocess.run([sys.executable, "-m", "polynet_tf.demo.digits", "--output_dir", digits,
                        "--image_size", "40"], check=True, env=env)
        subprocess.run([sys.executable, "-m", "polynet_tf.data.build_tfrecords",
                        "--image_dir", f"{digits}/train", "--output_dir", records,
                        "--num_shards", "4", "--validation_fraction", "0.2",
                        "--num_validation_shards", "2", "--noprogress"], check=True, env=env)
    return os.path.join(records, "train-*"), os.path.join(records, "validation-*")


def one_seed(patterns, seed, ema_decay, model_dir, steps):
    override = ",".join([f"train_data.file_pattern={patterns[0]}",
                         f"eval_data.file_pattern={patterns[1]}",
                         f"runtime.seed={seed}", f"train_data.seed={seed}",
                         f"trainer.ema_decay={ema_decay}", f"trainer.train_steps={steps}"])
    config = load_experiment([CONFIG], override, mode="train_and_eval")
    trainer = Trainer(config, model_dir, tf.distribute.OneDeviceStrategy("/cpu:0"))
    trainer.train()
    return {kind: trainer.evaluate(weights_kind=kind)["top1"] for kind in ("raw", "ema")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--ema_decay", type=float, default=0.99)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--work_dir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="ema_digits_")
    patterns = build_data(work_dir)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        top1 = one_seed(patterns, seed, args.ema_decay,
                        os.path.join(work_dir, f"run_{seed}_{args.ema_decay}"), args.steps)
        rows.append((seed, top1["raw"], top1["ema"]))
        print(f"seed {seed}: raw top-1 {top1['raw']:.4f}, EMA top-1 {top1['ema']:.4f}",
              flush=True)
    print(f"machine: {os.cpu_count()} cores, TF {tf.__version__}; digits demo, "
          f"{args.steps} steps, ema_decay {args.ema_decay}")
    print("| seed | raw top-1 | EMA top-1 |\n| --- | --- | --- |")
    for seed, raw, ema in rows:
        print(f"| {seed} | {raw:.4f} | {ema:.4f} |")
    mean = [sum(r[i] for r in rows) / len(rows) for i in (1, 2)]
    print(f"| mean | {mean[0]:.4f} | {mean[1]:.4f} |")


if __name__ == "__main__":
    main()
