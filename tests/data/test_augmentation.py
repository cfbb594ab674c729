"""RandAugment, random erasing, MixUp and CutMix: label arithmetic, determinism, config errors."""

import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import DataConfig, build_dataset
from polynet_tf.data.augmentation import Augmenter, cutmix_kept_fraction
from polynet_tf.training.optimization import classification_loss
from tests.data.conftest import collect, write_shards

NUM_CLASSES = 6
# Image i is filled with VALUES[i]: a mixed pixel tells which images it came from.
VALUES = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 50.0], np.float32)


def _flat_batch(size=9):
    images = np.broadcast_to(VALUES[:, None, None, None], (6, size, size, 3)).copy()
    return tf.constant(images), tf.constant(np.arange(6, dtype=np.int32))


def _augmenter(**values):
    return Augmenter(DataConfig(file_pattern="unused", num_classes=NUM_CLASSES, **values),
                     NUM_CLASSES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_targets_weigh_the_images_as_the_pixels_do(seed):
    images, labels = _flat_batch()
    mixed, targets = _augmenter(mixup_alpha=0.8).mix_batch(
        images, labels, tf.constant([seed, 7], tf.int64))
    targets = targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    assert ((targets > 0).sum(axis=1) <= 2).all()  # one partner per image
    # Pixel of image j = sum_k w_jk * VALUES[k], with w the target weights (labels are k).
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], targets @ VALUES, atol=1e-4)
    assert np.ptp(mixed.numpy(), axis=(1, 2, 3)).max() < 1e-4  # a blend, no box
    assert (targets.max(axis=1) < 1.0).any()  # something was mixed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_label_weight_is_the_area_of_the_pixels_kept(seed):
    # 9x9: Keras's unrounded box would be up to a pixel off on each side.
    images, labels = _flat_batch(size=9)
    mixed, targets = _augmenter(cutmix_alpha=1.0).mix_batch(
        images, labels, tf.constant([seed, 3], tf.int64))
    mixed, targets = mixed.numpy(), targets.numpy()
    for j in range(6):
        kept = np.mean(mixed[j, :, :, 0] == VALUES[j])
        assert targets[j, j] == pytest.approx(kept, abs=1e-6)
        partners = [k for k in range(6) if k != j and targets[j, k] > 0]
        if partners:
            (k,) = partners
            assert targets[j, k] == pytest.approx(np.mean(mixed[j, :, :, 0] == VALUES[k]),
                                                  abs=1e-6)
    assert (targets.max(axis=1) < 1.0).any()


def test_cutmix_kept_fraction_by_hand():
    masks = np.zeros([2, 10, 10, 3], bool)
    masks[0, 2:5, 1:5] = True  # 3 x 4 = 12 of 100 pixels pasted
    np.testing.assert_allclose(cutmix_kept_fraction(tf.constant(masks)).numpy(), [0.88, 1.0])


def test_label_smoothing_of_mixed_targets_by_hand():
    """w = 0.3 of class 0 and 0.7 of class 2, 4 classes, smoothing 0.1."""
    logits = np.array([[1.0, 0.0, 2.0, -1.0]], np.float32)
    mixed = tf.constant([[0.3, 0.0, 0.7, 0.0]])
    # (1 - 0.1) * target + 0.1 / 4, equal to 0.3 * smooth(e0) + 0.7 * smooth(e2).
    smoothed = np.array([0.295, 0.025, 0.655, 0.025])
    log_probs = logits - np.log(np.exp(logits).sum())
    expected = -(smoothed * log_probs).sum()
    _, per_example = classification_loss(mixed, tf.constant(logits), 4, 0.1, 1)
    assert float(per_example[0]) == pytest.approx(expected, rel=1e-6)
    # One-hot targets give what integer labels give.
    _, from_labels = classification_loss(tf.constant([2]), tf.constant(logits), 4, 0.1, 1)
    _, from_one_hot = classification_loss(tf.constant([[0.0, 0.0, 1.0, 0.0]]),
                                          tf.constant(logits), 4, 0.1, 1)
    assert float(from_labels[0]) == pytest.approx(float(from_one_hot[0]), rel=1e-6)


ALL_OPTIONS = dict(randaugment_num_ops=2, random_erasing_probability=0.5, mixup_alpha=0.8,
                   cutmix_alpha=1.0, mix_probability=0.8)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    directory = tmp_path_factory.mktemp("augmentation")
    write_shards(str(directory), 6, 2, image_size=(20, 24))
    return str(directory / "train-*")


def _batches(pattern, context=None, skip_steps=0, steps=3, **values):
    settings = dict(file_pattern=pattern, image_size=16, global_batch_size=4, num_classes=12,
                    shuffle_buffer_size=12, seed=5, deterministic=True, **ALL_OPTIONS)
    config = DataConfig(**{**settings, **values})
    return collect(build_dataset(config, context, skip_steps=skip_steps), max_batches=steps)


def test_same_seed_same_batches_and_resume_continues_the_stream(shards, make_context):
    images, targets = _batches(shards)
    assert targets.shape == (12, 12)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
    again_images, again_targets = _batches(shards)
    np.testing.assert_array_equal(images, again_images)
    np.testing.assert_array_equal(targets, again_targets)
    # Resuming after one step gives the tail of the uninterrupted stream.
    tail_images, tail_targets = _batches(shards, skip_steps=1, steps=2)
    np.testing.assert_array_equal(tail_images, images[4:])
    np.testing.assert_array_equal(tail_targets, targets[4:])


def test_workers_and_seeds_draw_differently_and_reproducibly(shards, make_context):
    # RandAugment left out: it is what makes a pipeline slow to build.
    def draws(worker, seed=5):
        return _batches(shards, make_context(2, worker), steps=2, seed=seed,
                        randaugment_num_ops=0)[1]

    first, second = draws(0), draws(1)
    np.testing.assert_array_equal(first, draws(0))
    np.testing.assert_array_equal(second, draws(1))
    # The workers read different records: compare the mixing weights' pattern.
    assert not np.array_equal(np.sort(first, axis=1), np.sort(second, axis=1))
    assert not np.array_equal(np.sort(first, axis=1), np.sort(draws(0, seed=6), axis=1))


def test_no_augmentation_leaves_the_stream_as_it_was(shards):
    off = {name: 0 for name in ALL_OPTIONS}
    images, labels = _batches(shards, **off)
    assert labels.dtype == np.int32 and labels.shape == (12,)
    with_erasing, _ = _batches(shards, **{**off, "random_erasing_probability": 1.0})
    assert not np.array_equal(images, with_erasing)
    # Random erasing fills with the mean colour: 0 after normalisation.
    erased = (with_erasing != images).all(axis=-1)
    assert erased.any()
    np.testing.assert_allclose(with_erasing[erased], 0.0, atol=1e-5)


@pytest.mark.parametrize("values, message", [
    ({"mix_probability": 1.5}, "mix_probability must be a number in [0.0, 1.0]"),
    ({"random_erasing_probability": -0.1}, "random_erasing_probability must be a number"),
    ({"cutmix_alpha": 2.0}, "cutmix_alpha must be a number in [0.0, 1.0]"),
    ({"mixup_alpha": -1.0}, "mixup_alpha must be a number >= 0.0"),
    ({"randaugment_num_ops": 1.5}, "randaugment_num_ops must be an integer"),
    ({"random_erasing_scale": [0.5, 0.1]}, "random_erasing_scale must be two numbers"),
    ({"cutmx_alpha": 1.0}, "Unknown DataConfig field(s) ['cutmx_alpha']"),
])
def test_bad_augmentation_settings_are_named(values, message):
    with pytest.raises(ValueError) as error:
        DataConfig.from_dict({"file_pattern": "x", **values})
    assert message in str(error.value)


def test_mixing_needs_the_number_of_classes(shards):
    config = DataConfig(file_pattern=shards, image_size=16, global_batch_size=4, mixup_alpha=0.2)
    with pytest.raises(ValueError, match="set DataConfig.num_classes"):
        build_dataset(config)


def test_a_mixed_precision_policy_leaves_the_augmentation_in_float32():
    """The trainer sets a global mixed policy before the input pipeline is built: the
    augmentation layers must not take it (RandAugment's contrast multiplied a bfloat16 factor
    into the float32 image and failed), and must draw as they do in float32."""
    import keras  # noqa: PLC0415

    options = {"randaugment_num_ops": 2, "randaugment_magnitude": 0.9,
               "random_erasing_probability": 1.0, "mixup_alpha": 0.8, "cutmix_alpha": 1.0,
               "mix_probability": 1.0}
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (16, 16, 3)), tf.float32)
    images, labels = _flat_batch()
    seed = tf.constant([3, 4], tf.int64)

    def augmented():
        augmenter = _augmenter(**options)
        # A seed that draws RandAugment's contrast among its operations.
        outputs = [augmenter.augment_image(image, tf.constant([s, 1], tf.int64))
                   for s in range(12)]
        return outputs + list(augmenter.mix_batch(images, labels, seed))

    expected = augmented()
    previous = keras.config.dtype_policy()
    for policy in ("mixed_bfloat16", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        try:
            outputs = augmented()
        finally:
            keras.config.set_dtype_policy(previous)
        for output, reference in zip(outputs, expected):
            assert output.dtype == tf.float32, policy
            np.testing.assert_array_equal(output.numpy(), reference.numpy(), err_msg=policy)
