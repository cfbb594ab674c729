"""function_preserving growth: the grown network computes what the small one did."""

import numpy as np
import pytest

from polynet_tf.grow import GrowthError, grow_model
from tests.grow.conftest import images, predict, randomize_batch_norms, tiny

ABLATIONS = [
    f"ir_3_6_3_{stage}_{module}"
    for stage in "abc"
    for module in ("2way", "3way", "poly2", "poly3", "mpoly2", "mpoly3")
]
# Fully shared poly-k: the F^2, F^3 terms reuse F, so only a gate can close them.
NEEDS_GATES = {name for name in ABLATIONS if "_poly" in name} | {"ir_6_12_6_mixed"}
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def source_outputs(ir_3_6_3_source):
    """Inputs and the source's outputs at inference and in training mode."""
    x = images(batch=3, seed=3)
    return x, predict(ir_3_6_3_source, x), predict(ir_3_6_3_source, x, training=True)


@pytest.mark.parametrize("architecture", ABLATIONS + ["ir_6_12_6", "ir_6_12_6_mixed"])
def test_grown_network_computes_what_the_small_one_did(
        ir_3_6_3_source, source_outputs, architecture):
    target = tiny(architecture, path_gates=architecture in NEEDS_GATES)
    report = grow_model(ir_3_6_3_source, target, mode="function_preserving")
    x, inference, training = source_outputs
    difference = np.abs(predict(target, x) - inference).max()
    print(f"{architecture}: max |grown - small| = {difference:.3g}")
    assert difference <= TOLERANCE
    # Every source weight lives on in the target.
    assert report.not_carried == []
    assert len(report.retained()) == len(ir_3_6_3_source.weights)
    if architecture == "ir_6_12_6_mixed":
        # Batch statistics: new paths still output exactly 0 (gamma = beta =
        # 0, or a closed gate), so training continues from the same loss.
        assert np.abs(predict(target, x, training=True) - training).max() <= TOLERANCE


def test_the_source_is_not_at_its_initial_values(ir_3_6_3_source):
    gammas = [w for w in ir_3_6_3_source.weights if w.path.endswith("gamma")]
    assert not np.allclose(np.concatenate([np.ravel(g) for g in gammas]), 1.0)


def test_fully_shared_poly_targets_without_gates_name_the_module(ir_3_6_3_source):
    target = tiny("ir_3_6_3_b_poly2")
    before = [np.array(w) for w in target.weights]
    with pytest.raises(GrowthError, match="path_gates=True") as error:
        grow_model(ir_3_6_3_source, target, mode="function_preserving")
    assert error.value.name == "stage_b_0"
    # Validated before the first assignment: the target is unchanged.
    assert all(np.array_equal(a, np.array(w)) for a, w in zip(before, target.weights))


def test_every_module_family_pair_and_a_residual_scale_change():
    # poly3[convs] -> mpoly3, poly2 -> poly3 (gate), mpoly2 -> mpoly3 (new block),
    # ir -> poly2+1way (gate and new chain), 2way -> 3way with depth doubled;
    # the gates also absorb beta 0.3 -> 0.2.
    source = randomize_batch_norms(tiny(
        "A: 2way | B: poly3[convs], poly2, mpoly2 | C: ir", residual_scale=0.3), seed=1)
    target = tiny("A: 3way*2 | B: mpoly3, poly3, mpoly3 | C: poly2+1way",
                  residual_scale=0.2, path_gates=True)
    report = grow_model(source, target, mode="function_preserving")
    x = images(batch=3, seed=1)
    assert np.abs(predict(target, x) - predict(source, x)).max() <= TOLERANCE
    gates = {w.target: w.value for w in report.weights if w.target.endswith("path_gates")}
    np.testing.assert_allclose(gates["stage_b_1/path_gates"], [1.5, 1.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(gates["stage_c_0/path_gates"], [1.5, 0.0, 1.0], rtol=1e-6)


def test_a_residual_scale_change_without_gates_is_an_error():
    source = tiny("A: ir | B: ir | C: ir", residual_scale=0.3)
    target = tiny("A: ir | B: 2way | C: ir", residual_scale=0.2)
    with pytest.raises(GrowthError, match="residual_scale") as error:
        grow_model(source, target, mode="function_preserving")
    assert error.value.name == "stage_a_0"


def test_growing_twice_keeps_the_function_and_the_source_gates():
    small = tiny("A: ir | B: poly2 | C: ir", path_gates=True)
    randomize_batch_norms(small, seed=2)  # gates in [0.5, 1.5]
    grown = tiny("A: ir*2 | B: poly3*2 | C: ir*2", path_gates=True)
    grow_model(small, grown, mode="function_preserving")
    larger = tiny("A: ir*4 | B: (poly3, mpoly3)*2 | C: ir*2", path_gates=True)
    grow_model(grown, larger, mode="function_preserving")
    x = images(batch=2, seed=2)
    assert np.abs(predict(larger, x) - predict(small, x)).max() <= TOLERANCE


def test_dropping_a_source_path_is_an_error():
    source = tiny("A: ir | B: 3way | C: ir")
    target = tiny("A: ir | B: mpoly3 | C: ir")
    with pytest.raises(GrowthError, match="only add paths") as error:
        grow_model(source, target, mode="function_preserving")
    assert error.value.name == "stage_b_0"
