"""PolyNet(): parameters, shapes, keras.applications-style validation, saving."""


import keras
import numpy as np
import pytest

from polynet_tf import PolyNet, list_architectures, set_path_drop_rates
from polynet_tf.models import polyinception_modules
from polynet_tf.models.complexity import network_cost
from tests.conftest import TINY_WIDTH, tiny_polynet

# Keras-built parameter counts at TINY_WIDTH with 10 classes: (trainable, non-trainable).
TINY = {
    "very_deep": (387020, 22568), "ir_5_10_5": (121360, 4998), "ir_3_6_3": (84560, 3202),
    "ir_3_6_3_a_2way": (86396, 3436), "ir_3_6_3_a_3way": (88232, 3670),
    "ir_3_6_3_a_poly2": (84560, 3202), "ir_3_6_3_a_poly3": (84560, 3202),
    "ir_3_6_3_a_mpoly2": (86396, 3436), "ir_3_6_3_a_mpoly3": (88232, 3670),
    "ir_3_6_3_b_2way": (113336, 4570), "ir_3_6_3_b_3way": (142112, 5938),
    "ir_3_6_3_b_poly2": (84560, 3202), "ir_3_6_3_b_poly3": (84560, 3202),
    "ir_3_6_3_b_mpoly2": (113336, 4570), "ir_3_6_3_b_mpoly3": (142112, 5938),
    "ir_3_6_3_c_2way": (109148, 4294), "ir_3_6_3_c_3way": (133736, 5386),
    "ir_3_6_3_c_poly2": (84560, 3202), "ir_3_6_3_c_poly3": (84560, 3202),
    "ir_3_6_3_c_mpoly2": (109148, 4294), "ir_3_6_3_c_mpoly3": (133736, 5386),
    "ir_6_12_6": (139760, 5896), "ir_6_12_6_3way": (254864, 11368),
    "ir_6_12_6_mpoly3": (254864, 11368), "ir_6_12_6_poly3": (139760, 5896),
    "ir_6_12_6_mixed": (216496, 9544), "ir_20_56_20": (474096, 22116),
}


def _counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, non_trainable


def tiny(architecture="ir_3_6_3", **kwargs):
    return tiny_polynet(architecture, **kwargs)


def _predict(model, x):
    """Inference outputs as NumPy: an eager call (`model.predict` traces a function for
    each model, seconds each, for the same numbers)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.slow
def test_released_network_has_exactly_the_published_parameter_count():
    model = PolyNet(weights=None)
    assert _counts(model) == (95366600, 361088)
    assert model.count_params() == 95366600 + 361088
    assert model.input_shape == (None, 331, 331, 3)
    assert model.output_shape == (None, 1000)
    assert model.name == "polynet_very_deep"
    modules = polyinception_modules(model)
    assert len(modules) == 40
    # beta_k = 1 - 0.3 k / 39 rounded to 6 decimals (docs/design.md section 1).
    assert [m.residual_scale for m in modules[:3]] == [1.0, 0.992308, 0.984615]
    assert modules[-1].residual_scale == 0.7
    assert [str(m.spec) for m in modules[10:12]] == ["poly3[convs]", "2way"]


def test_every_preset_is_pinned():
    assert sorted(TINY) == list_architectures()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_parameter_counts(name):
    model = PolyNet(name, width_multiplier=TINY_WIDTH, classes=10)
    assert _counts(model) == TINY[name]
    analytic = network_cost(name, 299, TINY_WIDTH, classes=10)
    assert TINY[name] == (analytic.trainable_params, analytic.non_trainable_params)


@pytest.mark.parametrize(
    "input_shape, pooling, expected",
    [
        ((75, 75, 3), None, (2, 1, 1, 128)),
        ((128, 160, 3), None, (2, 2, 3, 128)),
        ((299, 299, 3), None, (2, 8, 8, 128)),
        ((331, 331, 3), "avg", (2, 128)),
        ((96, 200, 3), "max", (2, 128)),
    ],
)
def test_feature_shapes(input_shape, pooling, expected):
    model = tiny(include_top=False, input_shape=input_shape, pooling=pooling)
    x = np.random.default_rng(0).uniform(size=(2, *input_shape)).astype("float32")
    assert _predict(model, x).shape == expected


def test_default_input_shapes_follow_keras_applications():
    assert tiny(input_shape=None).input_shape == (None, 299, 299, 3)
    assert tiny(include_top=False, input_shape=None).input_shape == (None, None, None, 3)
    top = tiny(input_shape=(75, 75, 3), classifier_activation=None)
    logits = _predict(top, np.zeros((3, 75, 75, 3), "float32"))
    assert logits.shape == (3, 10)
    probabilities = _predict(tiny(), np.zeros((3, 75, 75, 3), "float32"))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_input_tensor_is_used():
    inputs = keras.Input((80, 80, 3), name="images")
    model = tiny(input_tensor=inputs, input_shape=None)
    assert model.inputs[0] is inputs
    assert model.input_shape == (None, 80, 80, 3)


def test_custom_spec_and_options():
    model = PolyNet(
        "A: poly2+ir | B: (3way, mpoly3)*2 | C: poly3[convs]",
        width_multiplier=TINY_WIDTH, classes=5, input_shape=(75, 75, 3),
        residual_scale={"start": 0.5, "end": 0.1}, drop_path_rate=0.2, dropout_rate=0.0,
        bn_epsilon=1e-3, bn_momentum=0.9,
    )
    modules = polyinception_modules(model)
    assert model.name == "polynet"
    assert [str(m.spec) for m in modules] == ["poly2+ir", "3way", "mpoly3", "3way", "mpoly3",
                                              "poly3[convs]"]
    np.testing.assert_allclose([m.residual_scale for m in modules], np.linspace(0.5, 0.1, 6))
    np.testing.assert_allclose([m.drop_path_rate for m in modules], np.linspace(0, 0.2, 6),
                               rtol=1e-6)
    assert modules[0].batch_norm.epsilon == 1e-3


def test_set_path_drop_rates_uses_the_linear_schedule():
    model = tiny()
    rates = set_path_drop_rates(model, 0.25)
    np.testing.assert_allclose(rates, np.linspace(0.0, 0.25, 12))
    np.testing.assert_allclose([m.drop_path_rate for m in polyinception_modules(model)], rates,
                               rtol=1e-6)
    assert set_path_drop_rates(model, [0.1] * 12) == [0.1] * 12
    with pytest.raises(ValueError, match="one value per module"):
        set_path_drop_rates(model, [0.1] * 3)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        set_path_drop_rates(model, 1.0)
    with pytest.raises(ValueError, match="no PolyInception modules"):
        set_path_drop_rates(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), 0.1)


def test_saved_keras_file_loads_in_safe_mode_with_identical_outputs(tmp_path):
    model = PolyNet("A: 2way | B: poly3[convs], mpoly2 | C: poly2+ir", width_multiplier=TINY_WIDTH,
                    classes=7, input_shape=(75, 75, 3), drop_path_rate=0.1, seed=1)
    # Train mode once so BatchNorm moving statistics are not the initial ones.
    x = np.random.default_rng(1).uniform(0, 1, size=(4, 75, 75, 3)).astype("float32")
    model(x, training=True)
    path = tmp_path / "tiny.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(_predict(restored, x), _predict(model, x))
    assert [m.drop_path_rate for m in polyinception_modules(restored)] == pytest.approx(
        [m.drop_path_rate for m in polyinception_modules(model)])


def test_weights_file_is_loaded(tmp_path):
    model = tiny()
    path = str(tmp_path / "tiny.weights.h5")
    model.save_weights(path)
    loaded = tiny(weights=path)
    x = np.random.default_rng(2).uniform(size=(2, 75, 75, 3)).astype("float32")
    np.testing.assert_array_equal(_predict(loaded, x), _predict(model, x))


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        (dict(weights="/no/such/file.weights.h5"), ValueError, "The `weights` argument should be"),
        (dict(weights="imagenet", classes=10), ValueError,
         "published only for architecture='very_deep'. Received: architecture='ir_3_6_3'"),
        (dict(weights="imagenet", architecture="A: ir | B: ir | C: ir"), ValueError,
         "Received: architecture='a custom spec'"),
        (dict(architecture="very_deep", weights="imagenet", classes=10), ValueError,
         "`classes` should be 1000"),
        (dict(architecture="very_deep", weights="imagenet", classes=1000,
              classifier_activation="sigmoid"), ValueError, "classifier_activation"),
        (dict(input_shape=(74, 75, 3)), ValueError, "at least 75x75"),
        (dict(input_shape=(75, 75)), ValueError, "tuple of three integers"),
        (dict(pooling="median", include_top=False), ValueError, "`pooling` must be"),
        (dict(classes=0), ValueError, "`classes` must be a positive integer"),
        (dict(architecture="very_deeep"), ValueError, "Unknown architecture 'very_deeep'"),
        (dict(architecture="A: ir | B: ir"), ValueError, "Missing stage(s) C"),
        (dict(widht_multiplier=0.5), TypeError, "widht_multiplier"),
        (dict(dropout_rate=1.0), ValueError, "dropout_rate"),
        (dict(residual_scale={"begin": 1}), ValueError, "'start' and 'end'"),
        (dict(residual_scale=-0.3), ValueError, "must be positive"),
    ],
)
def test_bad_arguments_are_rejected_with_keras_style_messages(kwargs, error, fragment):
    kwargs.setdefault("architecture", "ir_3_6_3")
    architecture = kwargs.pop("architecture")
    kwargs.setdefault("classes", 10)
    kwargs.setdefault("input_shape", (75, 75, 3))
    width = kwargs.pop("width_multiplier", TINY_WIDTH if "weights" not in kwargs else 1.0)
    with pytest.raises(error) as info:
        PolyNet(architecture, width_multiplier=width, **kwargs)
    assert fragment in str(info.value)


def test_imagenet_weights_need_the_full_width():
    with pytest.raises(ValueError, match="width_multiplier=1.0"):
        PolyNet("very_deep", weights="imagenet", width_multiplier=0.5)


def test_one_gradient_step_on_tensorflow():
    model = tiny(drop_path_rate=0.2)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(3).uniform(size=(4, 75, 75, 3)).astype("float32")
    y = np.array([0, 1, 2, 3])
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(changed)


def test_tensorflow_checkpoint_holds_every_weight(tmp_path):
    """tf.train.Checkpoint (what training writes) must see every sublayer."""
    import tensorflow as tf

    spec = "A: 2way | B: poly3[convs], mpoly2 | C: poly2+ir"
    model = PolyNet(spec, width_multiplier=TINY_WIDTH, classes=5, input_shape=(75, 75, 3),
                    path_gates=True)
    x = np.random.default_rng(4).uniform(size=(3, 75, 75, 3)).astype("float32")
    model(x, training=True)  # BatchNorm statistics off their initial values
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    keras.utils.set_random_seed(99)
    restored = PolyNet(spec, width_multiplier=TINY_WIDTH, classes=5, input_shape=(75, 75, 3),
                       path_gates=True)
    tf.train.Checkpoint(model=restored).restore(path).assert_consumed()
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(_predict(restored, x), _predict(model, x))
