"""Strict loading: `PolyNet(weights=FILE)` loads only a file that fits the model exactly.

Tiny networks (width 0.1, 75x75 inputs, 10 classes); the files are written here
by `save_weights` / `save` of other tiny networks.
"""

import os

import keras
import numpy as np
import pytest

from polynet_tf.models.architectures import get_pretrained_config
from polynet_tf.models.polynet import PolyNet
from polynet_tf.weights import (
    CorruptWeightsFileError,
    WeightsMismatchError,
    load_weights_file,
)
from polynet_tf.weights.pretrained import (
    PretrainedWeightsError,
    cache_folder,
    load_pretrained_weights,
)

SMALL = "A: 2way | B: poly3[convs] | C: 2way"
LARGER = "A: 2way | B: poly3[convs] | C: 2way*2"  # one more module at the top


def _tiny(architecture=SMALL, width=0.1, **kwargs):
    kwargs.setdefault("classes", 10)
    return PolyNet(architecture, width_multiplier=width, input_shape=(75, 75, 3), **kwargs)


def _values(model):
    return [np.array(v) for v in model.weights]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    made = {}
    for name, model in {
        "small": _tiny(), "larger": _tiny(LARGER), "wider": _tiny(width=0.2),
        "no_top": _tiny(include_top=False),
    }.items():
        made[name] = str(folder / f"{name}.weights.h5")
        model.save_weights(made[name])
        if name == "small":
            made["small_values"] = _values(model)
            made["small_paths"] = [v.path for v in model.weights]
            made["small_keras"] = str(folder / "small.keras")
            model.save(made["small_keras"])
    return made


def test_a_file_that_fits_loads_every_weight(files):
    for path in (files["small"], files["small_keras"], "file://" + files["small"]):
        model = _tiny(weights=path)
        for loaded, saved in zip(_values(model), files["small_values"]):
            np.testing.assert_array_equal(loaded, saved)


def test_file_of_a_larger_network_is_refused(files):
    with pytest.raises(WeightsMismatchError) as info:
        _tiny(weights=files["larger"])
    error = info.value
    # Every weight of the small network is in the larger file: the extra module is named.
    assert error.kind == "unexpected"
    assert error.name.startswith("stage_c_1/") and error.model_shape is None
    assert error.file_shape is not None and str(error.file_shape) in str(error)
    assert "stage_c_1/" in str(error) and "nothing was loaded" in str(error)


def test_file_of_a_smaller_network_names_the_missing_weight(files):
    model = _tiny(LARGER)
    before = _values(model)
    with pytest.raises(WeightsMismatchError) as info:
        load_weights_file(model, files["small"])
    assert info.value.kind == "missing" and info.value.name.startswith("stage_c_1/")
    for after, original in zip(_values(model), before):  # nothing was assigned
        np.testing.assert_array_equal(after, original)


def test_wider_file_names_first_weight_with_both_shapes(files):
    with pytest.raises(WeightsMismatchError) as info:
        _tiny(weights=files["wider"])
    error = info.value
    assert error.kind == "shape"
    # The model's first weight (the stem's first conv) is the first that differs.
    assert error.name.startswith("stem/conv1/conv")
    assert error.file_shape[:3] == error.model_shape[:3] == (3, 3, 3)
    assert error.file_shape[3] > error.model_shape[3]
    assert f"{error.file_shape} in the file but {error.model_shape} in the model" in str(error)


def test_head_differences(files):
    with pytest.raises(WeightsMismatchError) as info:
        _tiny(weights=files["no_top"])
    assert info.value.kind == "missing" and info.value.name.startswith("predictions")
    # A model without the top may leave the file's classifier unused (as with "imagenet") ...
    model = _tiny(weights=files["small"], include_top=False)
    saved = dict(zip(files["small_paths"], files["small_values"]))
    assert len(model.weights) == len(saved) - 2
    for variable in model.weights:
        np.testing.assert_array_equal(np.array(variable), saved[variable.path])
    # ... but only when asked to: strictly, those are weights the model lacks.
    with pytest.raises(WeightsMismatchError) as info:
        load_weights_file(_tiny(include_top=False), files["small"])
    assert info.value.kind == "unexpected" and info.value.name.startswith("predictions")
    # Anything else still has to fit.
    with pytest.raises(WeightsMismatchError) as info:
        _tiny(LARGER, weights=files["small"], include_top=False)
    assert info.value.kind == "missing" and info.value.name.startswith("stage_c_1/")
    with pytest.raises(WeightsMismatchError) as info:
        _tiny(weights=files["small"], classes=11)
    assert info.value.kind == "shape" and info.value.name.startswith("predictions")
    assert "(205, 10) in the file but (205, 11) in the model" in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_file_given_by_hand(files, tmp_path, damage):
    data = open(files["small"], "rb").read()
    damaged = {"truncated": data[: len(data) // 2], "garbage": b"\x00not hdf5" * 100,
               "empty": b""}[damage]
    path = tmp_path / f"{damage}.weights.h5"
    path.write_bytes(damaged)
    with pytest.raises(CorruptWeightsFileError) as info:
        _tiny(weights=str(path))
    message = str(info.value)
    assert str(path) in message and "truncated or corrupt" in message
    assert "Delete it" in message and "convert it again" in message


def test_corrupt_converted_file_in_the_keras_cache(files, tmp_path):
    preset, published = get_pretrained_config(None, "imagenet")
    converted = os.path.join(cache_folder(str(tmp_path)), published.converted_filename)
    os.makedirs(os.path.dirname(converted))
    data = open(files["small"], "rb").read()
    with open(converted, "wb") as handle:
        handle.write(data[: len(data) // 3])
    with pytest.raises(PretrainedWeightsError) as info:
        load_pretrained_weights(_tiny(), published, preset, cache_dir=str(tmp_path))
    message = str(info.value)
    assert converted in message and "Delete it and call again" in message
    assert "truncated or corrupt" in message
    assert isinstance(info.value.__cause__, CorruptWeightsFileError)


def test_other_file_kinds_and_missing_files(files, tmp_path):
    legacy = tmp_path / "model.h5"
    legacy.write_bytes(open(files["small"], "rb").read())
    with pytest.raises(ValueError, match=r"`\.weights\.h5` file"):
        load_weights_file(_tiny(), str(legacy))
    with pytest.raises(ValueError, match="path to the weights file"):
        _tiny(weights=str(tmp_path / "absent.weights.h5"))
    keras.backend.clear_session()
