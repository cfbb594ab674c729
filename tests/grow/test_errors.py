"""Errors name the first layer that cannot be mapped; nothing is written."""

import os

import numpy as np
import pytest

from polynet_tf import PolyNet
from polynet_tf.grow import GrowthError, grow, grow_model
from tests.conftest import TINY_WIDTH
from tests.grow.conftest import tiny


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory, ir_3_6_3_source):
    path = tmp_path_factory.mktemp("source") / "ir_3_6_3.weights.h5"
    ir_3_6_3_source.save_weights(path)
    return path


def test_different_class_counts_name_the_classifier(ir_3_6_3_source):
    with pytest.raises(GrowthError, match="10 classes .* into 5") as error:
        grow_model(ir_3_6_3_source, tiny("ir_6_12_6", classes=5))
    assert error.value.name == "predictions/kernel"


def test_different_widths_name_the_first_stem_conv(ir_3_6_3_source):
    target = PolyNet("ir_6_12_6", width_multiplier=2 * TINY_WIDTH, classes=10,
                     input_shape=(75, 75, 3))
    with pytest.raises(GrowthError, match="width_multiplier") as error:
        grow_model(ir_3_6_3_source, target)
    assert error.value.name == "stem/conv1/conv/kernel"


def test_a_source_without_the_head_names_it(ir_3_6_3_source):
    source = tiny("ir_3_6_3", include_top=False, input_shape=None)
    with pytest.raises(GrowthError, match="no layer") as error:
        grow_model(source, tiny("ir_3_6_3"))
    assert error.value.name == "predictions"


@pytest.mark.parametrize(
    "architecture, first, reason",
    [
        ("A: ir*2 | B: ir*6 | C: ir*3", "stage_a_0", "cannot remove modules"),  # 3 -> 2
        ("A: ir*3 | B: ir*3 | C: ir*3", "stage_b_0", "cannot remove modules"),  # 6 -> 3
    ],
)
def test_unsupported_depth_ratios(ir_3_6_3_source, architecture, first, reason):
    target = tiny(architecture)
    before = [np.array(w) for w in target.weights]
    with pytest.raises(GrowthError, match=reason) as error:
        grow_model(ir_3_6_3_source, target)
    assert error.value.name == first
    assert all(np.array_equal(a, np.array(w)) for a, w in zip(before, target.weights))


def test_nothing_is_written_when_a_layer_cannot_be_mapped(tmp_path, small_weights):
    output = tmp_path / "out" / "grown.weights.h5"
    with pytest.raises(GrowthError) as error:
        grow("ir_3_6_3", small_weights, "A: ir*2 | B: ir*6 | C: ir*3", output,
             width_multiplier=TINY_WIDTH, classes=10, verbose=False)
    assert error.value.name == "stage_a_0"
    assert not output.exists()
    assert not output.parent.exists() or os.listdir(output.parent) == []


def test_a_checkpoint_of_another_architecture_names_the_file(tmp_path, small_weights):
    output = tmp_path / "grown.weights.h5"
    with pytest.raises(GrowthError, match="does not match the source architecture") as error:
        grow("ir_3_6_3_b_2way", small_weights, "ir_6_12_6", output,
             width_multiplier=TINY_WIDTH, classes=10, verbose=False)
    assert error.value.name == os.fspath(small_weights)
    assert os.listdir(tmp_path) == []


def test_bad_output_name_and_mode_fail_before_any_work(tmp_path, small_weights):
    with pytest.raises(ValueError, match=".weights.h5"):
        grow("ir_3_6_3", small_weights, "ir_6_12_6", tmp_path / "grown.h5")
    with pytest.raises(ValueError, match="mode"):
        grow("ir_3_6_3", small_weights, "ir_6_12_6", tmp_path / "g.weights.h5", mode="magic")
    assert os.listdir(tmp_path) == []
