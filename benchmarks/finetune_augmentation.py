"""Held-out top-1 of a small fine-tune on the digits, with each augmentation.

Usage::

    python benchmarks/finetune_augmentation.py --work_dir /tmp/ft_aug [--seeds 1 2]
        [--source_steps 100] [--steps 60] [--per_class 20] [--batch_size 16]

The digits demo's data (`polynet_tf.demo.digits`, 75x75 crops of upscaled 8x8
digits) and network (`official_configs/digits_demo.yaml`, 1/8 of the
channels), on one CPU device:

1. a source run learns digits 0-5 from all their training images;
2. each setting fine-tunes it (`init.weights` = the source run, new 5-way
   classifier, label smoothing 0.1) to digits 6-9 from `--per_class` images
   of each (a small dataset), for `--steps` steps, once per seed (the seed of
   the data order, the augmentation and the classifier's initialization);
3. top-1 on the held-out images of digits 6-9 (30% of each class).

Prints one markdown row per setting: top-1 per seed and their mean.
docs/finetuning.md quotes the figures.
"""

import argparse
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from polynet_tf import runs  # noqa: E402
from polynet_tf.configs import load_experiment  # noqa: E402
from polynet_tf.configs.base import write_yaml  # noqa: E402
from polynet_tf.data.build_tfrecords import build_tfrecords  # noqa: E402
from polynet_tf.demo.digits import write_digits  # noqa: E402
from polynet_tf.training.trainer import Trainer  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "official_configs", "digits_demo.yaml")
SETTINGS = {
    "crop only": {},
    "RandAugment (2 ops, 0.5)": {"train_data.randaugment_num_ops": 2},
    "MixUp 0.2": {"train_data.mixup_alpha": 0.2},
    "CutMix 1.0": {"train_data.cutmix_alpha": 1.0},
    "MixUp 0.2 + CutMix 1.0": {"train_data.mixup_alpha": 0.2, "train_data.cutmix_alpha": 1.0},
    "random erasing 0.25": {"train_data.random_erasing_probability": 0.25},
}


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--source_steps", type=int, default=100)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--per_class", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=16, help="of the fine-tunes")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS),
                        default=list(SETTINGS))
    return parser.parse_args()


def _copy_classes(source_dir, output_dir, classes, limit=None):
    for name in classes:
        files = sorted(os.listdir(os.path.join(source_dir, name)))[:limit]
        os.makedirs(os.path.join(output_dir, name))
        for file in files:
            shutil.copy(os.path.join(source_dir, name, file), os.path.join(output_dir, name))


def make_data(work_dir, per_class):
    """Shards of the source task (digits 0-5) and the target task (6-9)."""
    digits = os.path.join(work_dir, "digits")
    write_digits(digits, image_size=40, held_out_fraction=0.3, seed=0)
    source, target = [str(d) for d in range(6)], [str(d) for d in range(6, 10)]
    _copy_classes(os.path.join(digits, "train"), os.path.join(work_dir, "source"), source)
    _copy_classes(os.path.join(digits, "train"), os.path.join(work_dir, "target"), target,
                  per_class)
    _copy_classes(os.path.join(digits, "held_out"), os.path.join(work_dir, "held_out"), target)
    for name in ("source", "target", "held_out"):
        build_tfrecords(os.path.join(work_dir, name), os.path.join(work_dir, f"{name}_shards"),
                        num_shards=2, progress=False)


def train(model_dir, override, steps, num_classes):
    settings = {"trainer.train_steps": steps, "trainer.steps_per_loop": 10,
                "trainer.checkpoint_interval": steps, "trainer.eval_interval": steps,
                "schedule.decay_steps": max(1, 2 * steps // 3),
                "model.num_classes": num_classes, **override}
    text = ",".join(f"{key}={value}" for key, value in settings.items())
    config = load_experiment([CONFIG], text, mode="train_and_eval")
    os.makedirs(model_dir, exist_ok=True)
    write_yaml(config.to_dict(), runs.params_path(model_dir))  # as python -m polynet_tf.train
    trainer = Trainer(config, model_dir, tf.distribute.OneDeviceStrategy("/cpu:0"))
    trainer.train()
    return trainer.evaluate()["top1"]


def main():
    args = _parse_args()
    work = args.work_dir
    if not os.path.isdir(os.path.join(work, "held_out_shards")):
        make_data(work, args.per_class)
    shards = lambda name: os.path.join(work, f"{name}_shards", "train-*")  # noqa: E731
    source_dir = os.path.join(work, "runs", "source")
    if not tf.io.gfile.exists(os.path.join(source_dir, "checkpoints")):
        top1 = train(source_dir, {"train_data.file_pattern": shards("source"),
                                  "eval_data.file_pattern": shards("source")},
                     args.source_steps, 6)
        print(f"source run (digits 0-5, {args.source_steps} steps): training-set top-1 {top1:.3f}")
    print(f"fine-tune: digits 6-9, {args.per_class} images per class, {args.steps} steps of "
          f"{args.batch_size}, label smoothing 0.1; held-out top-1")
    print("| setting | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("| --- | " + " | ".join("---" for _ in args.seeds) + " | --- |")
    for name in args.settings:
        scores = []
        for seed in args.seeds:
            model_dir = os.path.join(work, "runs", f"{name}_{seed}".replace(" ", "_"))
            shutil.rmtree(model_dir, ignore_errors=True)
            scores.append(train(model_dir, {
                "train_data.file_pattern": shards("target"),
                "eval_data.file_pattern": shards("held_out"),
                "init.weights": source_dir, "optimizer.label_smoothing": 0.1,
                "train_data.seed": seed, "runtime.seed": seed,
                "train_data.global_batch_size": args.batch_size, **SETTINGS[name]},
                args.steps, 4))
        print(f"| {name} | " + " | ".join(f"{s:.3f}" for s in scores)
              + f" | {sum(scores) / len(scores):.3f} |", flush=True)


if __name__ == "__main__":
    main()
