"""Augmentation beyond the crop: RandAugment, random erasing, MixUp and CutMix.

Keras's own preprocessing layers do the work (`keras.layers.RandAugment`,
`RandomErasing`, `MixUp`, `CutMix`); this module feeds them their random
draws so that the pipeline stays a pure function of its seed:

- Keras's layers draw from a `SeedGenerator` whose state is a variable, so
  their draws depend on how often the layer ran before (a resumed run, or a
  parallel map, would see other draws). Here every draw comes from a seed
  tensor made of `(seed, worker, epoch, index)` (`KeyedSeeds`): same seed,
  same batches; other workers and other records, other draws.
- Per image, in the order of timm's recipe: RandAugment on the [0, 255]
  crop (only the drawn operations computed: `Augmenter._rand_augment`),
  then random erasing (the erased box is filled with the mean colour, 0
  after normalisation), then normalisation.
- Per batch (of one replica): with probability `mix_probability`, MixUp or
  CutMix (when both are on, CutMix with probability `cutmix_switch_probability`).
  Labels become soft targets `[batch, num_classes]`: `w * one_hot(y) +
  (1 - w) * one_hot(y[perm])`. MixUp draws `w ~ Beta(alpha, alpha)` per
  image; CutMix pastes a box of the partner image and sets `w` to the
  fraction of pixels *not* pasted, counted on the mask actually applied
  (Keras's own CutMix computes it from the unrounded box, up to a pixel off
  on each side).

Label smoothing is applied by the loss to these targets:
`(1 - eps) * t + eps / K`. Since the targets' weights sum to 1, this equals
mixing the smoothed one-hots, so the order does not matter.
"""

import contextlib
import functools
from typing import Optional, Tuple

import keras
import tensorflow as tf

# Tags separating the draws of one record seed (crop and flip use stateless_split).
_RANDAUGMENT_TAG = 1001
_ERASING_TAG = 1002
_MIX_TAG = 1003


class KeyedSeeds(keras.random.SeedGenerator):
    """A Keras seed generator whose draws are pure functions of a seed tensor.

    Keras's random ops (TensorFlow backend) are stateless given the seed that
    `next()` returns; here the n-th `next()` returns `fold_in(key, n)`, with no
    state variable, so a traced function draws the same numbers for the same
    key however often it runs and in whatever order.

    Args:
      key: int64 `[2]` tensor.
    """

    def __init__(self, key: tf.Tensor):  # pylint: disable=super-init-not-called
        # No SeedGenerator.__init__: it makes the state variable avoided here.
        self._key = tf.cast(key, tf.int64)
        self._draws = 0

    def next(self, ordered: bool = True) -> tf.Tensor:
        del ordered
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._key, self._draws)


@contextlib.contextmanager
def _drawing_from(layer: keras.layers.Layer, key: tf.Tensor):
    """Makes `layer` draw from `KeyedSeeds(key)` (also where it ignores `seed=`)."""
    seeds = KeyedSeeds(key)
    original = getattr(layer, "generator", None)  # deterministic layers have none
    if original is None:
        yield seeds
        return
    # object.__setattr__: Keras's attribute tracking would adopt the generator.
    object.__setattr__(layer, "generator", seeds)
    try:
        yield seeds
    finally:
        object.__setattr__(layer, "generator", original)


class Augmenter:
    """The augmentation of one training pipeline (build one per pipeline).

    Args:
      config: the training `DataConfig` (validated).
      num_classes: width of the soft targets; needed when MixUp or CutMix is on.

    Raises:
      ValueError: MixUp or CutMix is on and `num_classes` is unknown.
    """

    def __init__(self, config, num_classes: Optional[int]):
        self.mixes = bool(config.mixup_alpha or config.cutmix_alpha)
        if self.mixes and not num_classes:
            raise ValueError(
                "DataConfig.mixup_alpha / cutmix_alpha need the number of classes for the "
                "soft targets: set DataConfig.num_classes (or write class_index.json next "
                "to the shards).")
        self._num_classes = num_classes
        self._mix_probability = float(config.mix_probability)
        self._switch_probability = float(config.cutmix_switch_probability)
        self._randaugment = None
        # float32 whatever the global policy: a trainer in mixed precision sets it before
        # the input pipeline is built, and the images stay float32 (RandAugment's contrast
        # would multiply a bfloat16 factor into them).
        if config.randaugment_num_ops:
            self._randaugment = keras.layers.RandAugment(
                value_range=(0, 255), num_ops=config.randaugment_num_ops,
                factor=config.randaugment_magnitude, dtype="float32")
        self._eraser = None
        if config.random_erasing_probability:
            probability = float(config.random_erasing_probability)
            self._eraser = keras.layers.RandomErasing(
                factor=(probability, probability), scale=tuple(config.random_erasing_scale),
                fill_value=[255.0 * m for m in config.mean], value_range=(0, 255),
                dtype="float32")
        self._mixup = (keras.layers.MixUp(alpha=config.mixup_alpha, dtype="float32")
                       if config.mixup_alpha else None)
        self._cutmix = (keras.layers.CutMix(factor=(config.cutmix_alpha, config.cutmix_alpha),
                                            dtype="float32")
                        if config.cutmix_alpha else None)

    def augment_image(self, image: tf.Tensor, record_seed: tf.Tensor) -> tf.Tensor:
        """RandAugment, then random erasing, of one float32 `[h, w, 3]` RGB image in [0, 255].

        Args:
          image: the crop, before normalisation.
          record_seed: the record's int64 `[2]` seed (that of its crop).

        Returns:
          The augmented image, float32 in [0, 255].
        """
        batch = tf.cast(image, tf.float32)[None]
        if self._randaugment is not None:
            batch = self._rand_augment(
                batch, tf.random.experimental.stateless_fold_in(record_seed, _RANDAUGMENT_TAG))
        if self._eraser is not None:
            batch = _transform(self._eraser, batch,
                               tf.random.experimental.stateless_fold_in(record_seed, _ERASING_TAG))
        return batch[0]

    def _rand_augment(self, batch, key):
        """Keras's RandAugment, running only the operations drawn.

        `keras.layers.RandAugment` computes each of its 11 operations
        `num_ops` times and keeps the drawn one (`where`), 100 times the cost
        of the rest of the pipeline per image. The same sub-layers (same
        magnitudes) run here under `tf.switch_case`, which runs one branch.
        """
        randaugment = self._randaugment
        layers = [getattr(randaugment, name) for name in type(randaugment)._AUGMENT_LAYERS]
        keys = tf.random.experimental.stateless_split(key, randaugment.num_ops + 1)
        choices = tf.random.stateless_uniform([randaugment.num_ops], keys[0],
                                              maxval=len(layers), dtype=tf.int32)
        for index in range(randaugment.num_ops):
            branches = [functools.partial(_transform, layer, batch, keys[index + 1])
                        for layer in layers]
            batch = tf.switch_case(choices[index], branches)
        return batch

    def mix_batch(self, images: tf.Tensor, labels: tf.Tensor,
                  batch_seed: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
        """MixUp or CutMix of one batch; labels become soft targets.

        Args:
          images: float32 `[batch, h, w, 3]` (normalised).
          labels: int `[batch]` class indices.
          batch_seed: int64 `[2]` seed of this batch.

        Returns:
          `(images, targets)`: targets float32 `[batch, num_classes]` (one-hot
          where the batch was not mixed).
        """
        targets = tf.one_hot(labels, self._num_classes, dtype=tf.float32)
        if not self.mixes:
            return images, targets
        seeds = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(batch_seed, _MIX_TAG), 3)
        draws = tf.random.stateless_uniform([2], seeds[0])
        mix = draws[0] < self._mix_probability
        if self._mixup is not None and self._cutmix is not None:
            use_cutmix = draws[1] < self._switch_probability
        else:
            use_cutmix = tf.constant(self._cutmix is not None)
        unchanged = lambda: (images, targets)  # noqa: E731
        return tf.cond(
            mix,
            lambda: tf.cond(use_cutmix,
                            lambda: self._apply(self._cutmix, images, targets, seeds[1]),
                            lambda: self._apply(self._mixup, images, targets, seeds[2])),
            unchanged)

    def _apply(self, layer, images, targets, key):
        if layer is None:  # the branch tf.cond never takes
            return images, targets
        with _drawing_from(layer, key) as seeds:
            transformation = layer.get_random_transformation(images, seed=seeds)
            if isinstance(layer, keras.layers.CutMix):
                transformation = dict(transformation)
                transformation["mix_weight"] = cutmix_kept_fraction(
                    transformation["batch_masks"])
            mixed = layer.transform_images(images, transformation)
            mixed_targets = layer.transform_labels(targets, transformation)
        return tf.cast(mixed, tf.float32), tf.cast(mixed_targets, tf.float32)


def _transform(layer, batch, key):
    """`layer`'s transformation of a float32 batch, drawn from `key`."""
    with _drawing_from(layer, key) as seeds:
        transformation = layer.get_random_transformation(batch, seed=seeds)
        output = layer.transform_images(batch, transformation)
    return tf.ensure_shape(tf.cast(output, tf.float32), batch.shape)


def cutmix_kept_fraction(batch_masks: tf.Tensor) -> tf.Tensor:
    """Per image, the fraction of pixels CutMix did not paste over: `[batch]`.

    Args:
      batch_masks: bool `[batch, h, w, channels]`, True where the partner's
        pixels are pasted.
    """
    pasted = tf.reduce_mean(tf.cast(batch_masks[..., 0], tf.float32), axis=[1, 2])
    return 1.0 - pasted

