"""The main job, for now: a tiny PolyNet learns two real photos.

Takes the two photos scikit-learn ships (`load_sample_images`: a Chinese
temple and a flower), trains a tiny PolyNet (IR 3-6-3 with poly-3 in stage B,
1/16 of the channels) to tell random crops of one from the other, then
classifies held-out crops and prints the accuracy. It also prints the
released Very Deep PolyNet's size without building it.

Usage: python scripts/demo.py [--steps 80] [--seed 0]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402

from polynet_tf import PolyNet, preprocess_input  # noqa: E402
from polynet_tf.models.complexity import network_cost  # noqa: E402

CROP = 96
NAMES = ("temple", "flower")


def random_crops(images, count, rng):
    """`count` random crops (16-60% of the shorter side, resized) with labels."""
    crops, labels = [], []
    for _ in range(count):
        label = int(rng.integers(len(images)))
        image = images[label]
        side = int(rng.uniform(0.16, 0.6) * min(image.shape[:2]))
        top = int(rng.integers(image.shape[0] - side))
        left = int(rng.integers(image.shape[1] - side))
        patch = image[top:top + side, left:left + side]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        crops.append(tf.image.resize(patch, (CROP, CROP)).numpy())
        labels.append(label)
    return preprocess_input(np.stack(crops)), np.array(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    cost = network_cost("very_deep", 331)
    print(f"Very Deep PolyNet: {cost.trainable_params:,} trainable + "
          f"{cost.non_trainable_params:,} non-trainable parameters, "
          f"{cost.multiply_adds / 1e9:.1f} G multiply-adds at 331x331")

    images = load_sample_images().images
    model = PolyNet("ir_3_6_3_b_poly3", width_multiplier=0.0625, classes=2,
                    input_shape=(CROP, CROP, 3), bn_momentum=0.9, seed=args.seed)
    print(f"Tiny PolyNet {model.name}: {model.count_params():,} parameters")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for step in range(1, args.steps + 1):
        x, y = random_crops(images, 16, rng)
        loss, accuracy = model.train_on_batch(x, y)
        if step % 10 == 0 or step == 1:
            print(f"step {step:3d}: loss {loss:.3f}, batch accuracy {accuracy:.2f}")

    x, y = random_crops(images, 64, np.random.default_rng(args.seed + 1000))
    predicted = model.predict(x, verbose=0).argmax(axis=1)
    accuracy = float((predicted == y).mean())
    print(f"held-out crops: accuracy {accuracy:.3f} on {len(y)} crops (chance 0.5)")
    for i in range(6):
        print(f"  crop {i}: true {NAMES[y[i]]:6s} predicted {NAMES[predicted[i]]}")


if __name__ == "__main__":
    main()
