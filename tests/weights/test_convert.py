"""Checkpoint conversion: both public layouts reproduce the PyTorch references.

Full-size network (the released very_deep), batch 2 at 331x331, inference mode.
Tolerance: max |keras - torch| <= 1e-4 x std(torch output). Building the
full-size network costs seconds each time: the module builds it once with the
top and once without, and loads each converted file into those (with
`load_weights_file`, what `PolyNet(weights=FILE)` does; that call itself is
tested on tiny networks in test_weights_file.py).
"""

import os

import keras
import numpy as np
import pytest

from polynet_tf.models.polynet import PolyNet
from polynet_tf.weights import (
    CheckpointError,
    CheckpointMismatchError,
    convert_checkpoint,
    load_weights_file,
)
from polynet_tf.convert_weights import main as convert_main

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

TOLERANCE = 1e-4  # of the reference output's standard deviation
LAYOUTS = ("pretrainedmodels", "pytorchcv")


def _relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.std(expected))


@pytest.fixture(scope="module")
def very_deep():
    """The released network with the top (logits): the pretrainedmodels conversion's target,
    the model each converted file is loaded into, and the rejection tests' target (a
    rejection assigns nothing)."""
    return PolyNet("very_deep", weights=None, classifier_activation=None)


@pytest.fixture(scope="module")
def converted(request, tmp_path_factory, very_deep):
    """layout -> (reference, converted .weights.h5); pytorchcv goes through the CLI."""
    folder = tmp_path_factory.mktemp("converted")
    out = {}
    for layout in LAYOUTS:
        reference = request.getfixturevalue(f"{layout}_reference")
        output = str(folder / f"{layout}.weights.h5")
        if layout == "pytorchcv":
            status = convert_main(["--source", layout, "--checkpoint", reference.checkpoint,
                                   "--output", output])
            assert status == 0
        else:
            assert convert_checkpoint(reference.checkpoint, output, layout, very_deep) == output
        assert os.path.isfile(output)
        out[layout] = (reference, output)
    # Atomic writes leave no temporary files behind.
    assert sorted(os.listdir(folder)) == [f"{layout}.weights.h5" for layout in sorted(LAYOUTS)]
    return out


# Keys of: the first stem conv, the 3rd BatchNorm of the first shared conv of
# the first poly-3 module (stage_b_0), and the classifier.
SPOT_KEYS = {
    "pretrainedmodels": ("stem.conv1.0.conv.weight",
                         "stage_b.0.path0_1x1.bn_blocks.2.running_var",
                         "last_linear.weight"),
    "pytorchcv": ("features.init_block.conv1.conv.weight",
                  "features.stage2.unit2.poly.pre_block.branches.branch1.conv_list.conv1"
                  ".bns.2.running_var",
                  "output.fc.weight"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_logits_match_reference(converted, very_deep, layout):
    reference, path = converted[layout]
    model = very_deep
    load_weights_file(model, path)  # strict: every weight of the model, nothing else
    assert model.count_params() == 95_366_600 + 361_088
    logits = keras.ops.convert_to_numpy(model(reference.inputs, training=False))
    error = _relative_error(logits, reference.logits)
    print(f"{layout}: logits max abs diff / std = {error:.2e} (std {np.std(reference.logits):.3f})")
    assert logits.shape == (2, 1000)
    assert np.std(reference.logits) > 0.1  # a meaningful comparison, not all zeros
    assert error <= TOLERANCE

    # Each transform, exactly: conv (O, I, kh, kw) -> (kh, kw, I, O); BatchNorm
    # moving statistics of a poly-3 application; dense W -> W.T.
    state = torch.load(reference.checkpoint, weights_only=True)
    conv_key, variance_key, dense_key = SPOT_KEYS[layout]
    np.testing.assert_array_equal(
        model.get_layer("stem").parts[0].conv.kernel.numpy(),
        state[conv_key].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        model.get_layer("stage_b_0").blocks[0].branches.ops[0].norms[2].moving_variance.numpy(),
        state[variance_key].numpy())
    np.testing.assert_array_equal(
        model.get_layer("predictions").kernel.numpy(), state[dense_key].numpy().T)


@pytest.fixture(scope="module")
def very_deep_without_top():
    return PolyNet("very_deep", include_top=False, weights=None, input_shape=(331, 331, 3))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_features_without_top_match_reference(converted, very_deep_without_top, layout):
    reference, path = converted[layout]
    model = very_deep_without_top
    load_weights_file(model, path, allow_unused=("predictions",))  # the file has the top
    features = keras.ops.convert_to_numpy(model(reference.inputs, training=False))
    error = _relative_error(features, reference.features)
    print(f"{layout}: features max abs diff / std = {error:.2e}")
    assert features.shape == (2, 9, 9, 2048)
    assert error <= TOLERANCE


def _save(state, path):
    torch.save(state, path)
    return str(path)


def _assert_nothing_written(folder):
    assert os.listdir(folder) == [], os.listdir(folder)


def test_truncated_state_dict_names_first_missing_key(pretrainedmodels_reference, very_deep,
                                                      tmp_path):
    state = torch.load(pretrainedmodels_reference.checkpoint, weights_only=True)
    keys = list(state)
    kept = dict(list(state.items())[: len(keys) // 2])
    first_missing = next(k for k in keys[len(keys) // 2:] if not k.endswith("num_batches_tracked"))
    checkpoint = _save(kept, tmp_path / "half.pth")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointMismatchError) as info:
        convert_checkpoint(checkpoint, str(out / "x.weights.h5"), "pretrainedmodels",
                           model=very_deep)
    assert info.value.key == first_missing
    assert repr(first_missing) in str(info.value)
    assert "truncated" in str(info.value)
    _assert_nothing_written(out)


def test_truncated_file_is_rejected(pretrainedmodels_reference, very_deep, tmp_path):
    data = open(pretrainedmodels_reference.checkpoint, "rb").read()
    checkpoint = tmp_path / "cut.pth"
    checkpoint.write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointError, match="cut.pth.*truncated"):
        convert_checkpoint(str(checkpoint), str(out / "x.weights.h5"), "pretrainedmodels",
                           very_deep)
    _assert_nothing_written(out)


def test_wrong_layout_is_named(pytorchcv_reference, very_deep, tmp_path):
    with pytest.raises(CheckpointMismatchError) as info:
        convert_checkpoint(pytorchcv_reference.checkpoint, str(tmp_path / "x.weights.h5"),
                           "pretrainedmodels", model=very_deep)
    assert info.value.key == "stem.conv1.0.conv.weight"
    assert "use source='pytorchcv'" in str(info.value)
    _assert_nothing_written(tmp_path)


def test_wrong_shape_and_extra_tensor_are_named(pretrainedmodels_reference, very_deep, tmp_path):
    state = torch.load(pretrainedmodels_reference.checkpoint, weights_only=True)
    bad_key = "stage_b.3.blocks.1.conv2d.conv.weight"
    state[bad_key] = state[bad_key][:, :-1]  # 383 input channels instead of 384
    state["stage_c.9.extra.weight"] = torch.zeros(3)
    checkpoint = _save(state, tmp_path / "bad.pth")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CheckpointMismatchError) as info:
        convert_checkpoint(checkpoint, str(out / "x.weights.h5"), "pretrainedmodels",
                           model=very_deep)
    assert info.value.key == bad_key
    assert "(1152, 383, 1, 1)" in str(info.value) and "(1152, 384, 1, 1)" in str(info.value)
    assert info.value.unexpected == ["stage_c.9.extra.weight"]
    _assert_nothing_written(out)


def test_unassigned_keras_weight_is_named(pretrainedmodels_reference, very_deep, tmp_path):
    extra = keras.layers.Dense(3, name="extra_head")
    model = keras.Model(very_deep.input, extra(very_deep.output))
    with pytest.raises(CheckpointMismatchError) as info:
        convert_checkpoint(pretrainedmodels_reference.checkpoint, str(tmp_path / "x.weights.h5"),
                           "pretrainedmodels", model=model)
    assert info.value.key == extra.kernel.path
    _assert_nothing_written(tmp_path)


class _Payload:
    """An arbitrary object: torch.load(weights_only=True) must refuse to unpickle it."""


def test_arbitrary_pickled_objects_are_refused(very_deep, tmp_path):
    checkpoint = _save({"stem.conv1.0.conv.weight": torch.zeros(1), "x": _Payload()},
                       tmp_path / "objects.pth")
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_checkpoint(checkpoint, str(tmp_path / "x.weights.h5"), "pretrainedmodels",
                           very_deep)
    assert not os.path.exists(tmp_path / "x.weights.h5")


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    status = convert_main(["--source", "pytorchcv", "--checkpoint", str(tmp_path / "none.pth"),
                           "--output", str(tmp_path / "x.weights.h5")])
    assert status == 1
    assert "not found" in capsys.readouterr().err
    assert convert_main(["--source", "caffe", "--checkpoint", "a",
                         "--output", "b.weights.h5"]) == 2
    assert "--source" in capsys.readouterr().err
