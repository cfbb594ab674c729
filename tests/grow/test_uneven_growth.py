"""Growth between stage depths that are not whole multiples (3 -> 10, 10 -> 56, ...)."""

import numpy as np
import pytest

from polynet_tf.grow import grow_model
from polynet_tf.grow.plan import spread_positions
from tests.grow.conftest import images, predict, randomize_batch_norms, tiny

TOLERANCE = 1e-5


@pytest.mark.parametrize(
    "n_source, n_target, expected",
    [
        (3, 3, [0, 1, 2]),
        (3, 6, [0, 2, 4]),  # integer multiple: interleaved, paper Fig. 9 (b)
        (3, 10, [0, 3, 6]),
        (5, 20, [0, 4, 8, 12, 16]),
        (10, 56, [0, 5, 11, 16, 22, 28, 33, 39, 44, 50]),
        (1, 4, [0]),
    ],
)
def test_old_modules_are_spread_evenly_in_order(n_source, n_target, expected):
    positions = spread_positions(n_source, n_target)
    assert positions == expected
    gaps = np.diff(positions + [n_target])
    # Evenly: every old module is followed by floor or ceil of the mean gap.
    assert gaps.min() >= n_target // n_source and gaps.max() <= -(-n_target // n_source)


def _module_sources(report):
    """{target module name: source module name or None}."""
    return {module["target"]: module["source"] for module in report.modules}


def test_ir_3_6_3_grows_to_3_10_and_keeps_its_function(ir_3_6_3_source):
    target = tiny("A: ir*10 | B: ir*13 | C: ir*5")
    report = grow_model(ir_3_6_3_source, target, mode="function_preserving")
    x = images(batch=2, seed=5)
    assert np.abs(predict(target, x) - predict(ir_3_6_3_source, x)).max() <= TOLERANCE
    sources = _module_sources(report)
    assert [k for k, v in sources.items() if k.startswith("stage_a") and v] == [
        "stage_a_0", "stage_a_3", "stage_a_6"]
    assert [sources[f"stage_a_{i}"] for i in (0, 3, 6)] == [
        "stage_a_0", "stage_a_1", "stage_a_2"]
    # 6 -> 13: positions 0, 2, 4, 6, 8, 10.
    assert [k for k, v in sources.items() if k.startswith("stage_b") and v] == [
        f"stage_b_{i}" for i in (0, 2, 4, 6, 8, 10)]
    assert report.not_carried == []


@pytest.mark.slow
def test_ir_20_56_20_grows_from_ir_5_10_5():
    # The paper's Very Deep Inception-ResNet (section 5) from its baseline:
    # 5 -> 20 (x4), 10 -> 56 (not a multiple), 5 -> 20.
    source = randomize_batch_norms(tiny("ir_5_10_5"), seed=11)
    target = tiny("ir_20_56_20")
    report = grow_model(source, target, mode="function_preserving")
    x = images(batch=2, seed=6)
    assert np.abs(predict(target, x) - predict(source, x)).max() <= TOLERANCE
    sources = _module_sources(report)
    assert sum(v is not None for v in sources.values()) == 20
    assert [sources[f"stage_b_{i}"] for i in (0, 5, 11, 16, 22, 28, 33, 39, 44, 50)] == [
        f"stage_b_{i}" for i in range(10)]
    assert sources["stage_b_55"] is None
    assert report.not_carried == []


def test_paper_mode_copies_the_old_modules_bit_for_bit(ir_3_6_3_source):
    target = tiny("A: ir*10 | B: ir*6 | C: ir*3")
    grow_model(ir_3_6_3_source, target, mode="paper")
    source_weights = {w.path: np.array(w) for w in ir_3_6_3_source.weights}
    for old, new in ((0, 0), (1, 3), (2, 6)):
        copied = {w.path.replace(f"stage_a_{new}/", f"stage_a_{old}/", 1): np.array(w)
                  for w in target.weights if w.path.startswith(f"stage_a_{new}/")}
        assert copied and all(np.array_equal(v, source_weights[k]) for k, v in copied.items())
