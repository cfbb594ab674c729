"""Parameter counts and multiply-adds of every preset, pinned.

Full-width counts come from the analytic model (`network_cost`); the Keras
build is checked against it at tiny width for every preset (test_polynet.py)
and at full width for the released network.
"""

import pytest

from polynet_tf.models import list_architectures
from polynet_tf.models.complexity import network_cost

# name: (trainable, non-trainable, G multiply-adds at the default input size)
FULL_WIDTH = {
    "very_deep": (95366600, 361088, 34.70),
    "ir_5_10_5": (31574440, 79968, 9.19),
    "ir_3_6_3": (22584680, 51232, 7.25),
    "ir_3_6_3_a_2way": (22998536, 54976, 7.75),
    "ir_3_6_3_a_3way": (23412392, 58720, 8.25),
    "ir_3_6_3_a_poly2": (22584680, 51232, 7.75),
    "ir_3_6_3_a_poly3": (22584680, 51232, 8.25),
    "ir_3_6_3_a_mpoly2": (22998536, 54976, 7.75),
    "ir_3_6_3_a_mpoly3": (23412392, 58720, 8.25),
    "ir_3_6_3_b_2way": (29623016, 73120, 9.28),
    "ir_3_6_3_b_3way": (36661352, 95008, 11.30),
    "ir_3_6_3_b_poly2": (22584680, 51232, 9.28),
    "ir_3_6_3_b_poly3": (22584680, 51232, 11.30),
    "ir_3_6_3_b_mpoly2": (29623016, 73120, 9.28),
    "ir_3_6_3_b_mpoly3": (36661352, 95008, 11.30),
    "ir_3_6_3_c_2way": (28617128, 68704, 7.63),
    "ir_3_6_3_c_3way": (34649576, 86176, 8.02),
    "ir_3_6_3_c_poly2": (22584680, 51232, 7.63),
    "ir_3_6_3_c_poly3": (22584680, 51232, 8.02),
    "ir_3_6_3_c_mpoly2": (28617128, 68704, 7.63),
    "ir_3_6_3_c_mpoly3": (34649576, 86176, 8.02),
    "ir_6_12_6": (36069320, 94336, 10.16),
    "ir_6_12_6_3way": (64222664, 181888, 18.27),
    "ir_6_12_6_mpoly3": (64222664, 181888, 18.27),
    "ir_6_12_6_poly3": (36069320, 94336, 18.27),
    "ir_6_12_6_mixed": (54838216, 152704, 18.27),
    "ir_20_56_20": (117766536, 353856, 29.17),
}


def test_every_preset_is_pinned():
    assert sorted(FULL_WIDTH) == list_architectures()


@pytest.mark.parametrize("name", sorted(FULL_WIDTH))
def test_full_width_cost(name):
    size = 331 if name == "very_deep" else 299
    cost = network_cost(name, size)
    trainable, non_trainable, giga_macs = FULL_WIDTH[name]
    assert cost.trainable_params == trainable
    assert cost.non_trainable_params == non_trainable
    assert cost.multiply_adds / 1e9 == pytest.approx(giga_macs, abs=0.005)


def test_released_network_cost_matches_design():
    # docs/design.md section 1: 95,366,600 + 361,088 parameters, about 34.7 G multiply-adds.
    cost = network_cost("very_deep", 331)
    assert cost.total_params == 95366600 + 361088
    assert round(cost.multiply_adds / 1e9, 1) == 34.7


def test_cascade_cost_ratios():
    # Sharing changes parameters, not compute: poly-k costs k blocks like mpoly-k.
    base = network_cost("ir_3_6_3_b_2way", 299)
    poly3, mpoly3 = network_cost("ir_3_6_3_b_poly3", 299), network_cost("ir_3_6_3_b_mpoly3", 299)
    assert poly3.multiply_adds == mpoly3.multiply_adds
    ir = network_cost("ir_3_6_3", 299)
    block_macs = (base.multiply_adds - ir.multiply_adds) / 6  # one extra B block per unit
    assert mpoly3.multiply_adds - ir.multiply_adds == pytest.approx(12 * block_macs)


def test_width_and_size_scale_the_cost():
    full = network_cost("ir_3_6_3", 299)
    half = network_cost("ir_3_6_3", 299, width_multiplier=0.5)
    assert 0.2 < half.trainable_params / full.trainable_params < 0.3
    bigger = network_cost("ir_3_6_3", 331)
    assert bigger.trainable_params == full.trainable_params
    assert bigger.multiply_adds > full.multiply_adds
