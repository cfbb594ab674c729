"""Paper mode: retained weights bit-identical, new ones freshly initialized."""

import json

import numpy as np
import pytest

from polynet_tf.grow import grow_model
from tests.grow.conftest import randomize_batch_norms, tiny, values

FRESH_BATCH_NORM = {"gamma": 1.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0}


@pytest.fixture(scope="module")
def grown_mixed(ir_3_6_3_source):
    """IR 3-6-3 -> IR 6-12-6 mixed (depth doubled and module types changed)."""
    target = tiny("ir_6_12_6_mixed")
    initial = values(target)
    report = grow_model(ir_3_6_3_source, target, mode="paper")
    return target, initial, report


def test_every_retained_weight_is_bit_identical(ir_3_6_3_source, grown_mixed):
    target, _, report = grown_mixed
    source, grown = values(ir_3_6_3_source), values(target)
    retained = report.retained()
    assert len(retained) == len(source)  # every source weight has a place
    for target_path, source_path in retained.items():
        assert grown[target_path].dtype == source[source_path].dtype
        assert grown[target_path].tobytes() == source[source_path].tobytes(), target_path


def test_every_target_weight_is_reported_once(grown_mixed):
    target, _, report = grown_mixed
    assert [w.target for w in report.weights] == [w.path for w in target.weights]
    assert {w.action for w in report.weights} == {"copied", "new"}


def test_interleaved_positions_and_kept_first_order_blocks(grown_mixed):
    _, _, report = grown_mixed
    retained = report.retained()
    # Old units at 0, 2, 4 ...; the units between them are new.
    assert retained["stage_a_2/block_0/projection/conv/kernel"] == (
        "stage_a_1/block_0/projection/conv/kernel")
    assert "stage_a_1/block_0/projection/conv/kernel" not in retained
    # Stage B 6 -> 12: (3way, mpoly3, poly3)*4, so the old units land on
    # 3way (0), poly3 (2), mpoly3 (4), ... and keep F as their first block.
    assert retained["stage_b_4/block_0/branches/branch0_conv0/conv/kernel"] == (
        "stage_b_2/block_0/branches/branch0_conv0/conv/kernel")
    assert "stage_b_4/block_1/branches/branch0_conv0/conv/kernel" not in retained
    modules = {m["target"]: m for m in report.modules}
    assert modules["stage_b_3"]["source"] is None
    assert modules["stage_b_2"]["source"] == "stage_b_1"
    assert retained["predictions/kernel"] == "predictions/kernel"
    assert retained["reduction_a/branch1_conv0/conv/kernel"] == (
        "reduction_a/branch1_conv0/conv/kernel")


def test_new_weights_keep_their_fresh_initialization(grown_mixed):
    target, initial, report = grown_mixed
    grown = values(target)
    new = report.new()
    assert new
    for path in new:
        assert grown[path].tobytes() == initial[path].tobytes(), path
        kind = path.rsplit("/", 1)[-1]
        if kind in FRESH_BATCH_NORM:
            assert np.all(grown[path] == FRESH_BATCH_NORM[kind]), path


def test_new_kernels_have_glorot_uniform_statistics(grown_mixed):
    target, _, report = grown_mixed
    grown = values(target)
    scaled = []
    for path in report.new():
        if not path.endswith("kernel"):
            continue
        kernel = grown[path]
        receptive = int(np.prod(kernel.shape[:-2]))
        fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))  # variance 2 / (fan_in + fan_out)
        scaled.append(np.ravel(kernel) / limit)
    scaled = np.concatenate(scaled)
    assert scaled.size > 50_000
    assert np.abs(scaled).max() <= 1.0
    # U(-1, 1): mean 0, variance 1/3.
    assert abs(scaled.mean()) < 0.01
    assert scaled.var() == pytest.approx(1.0 / 3.0, rel=0.02)


def test_module_family_pairs_map_as_documented():
    source = randomize_batch_norms(tiny(
        "A: ir | B: ir, 2way, mpoly3, poly3[convs], poly2 | C: mpoly2"), seed=4)
    target = tiny("A: ir | B: poly3[convs], 3way, poly3, mpoly3, mpoly2 | C: mpoly2")
    report = grow_model(source, target, mode="paper")
    retained = report.retained()
    src, grown = values(source), values(target)
    for target_path, source_path in retained.items():
        assert grown[target_path].tobytes() == src[source_path].tobytes()

    # ir -> poly3[convs]: shared convs and application 0 take F; 1 and 2 are new.
    f = "stage_b_0/block_0/"
    conv = f + "branches/branch0_conv0/"
    assert retained[conv + "conv/kernel"] == conv + "conv/kernel"
    assert retained[conv + "bn_0/gamma"] == conv + "bn/gamma"
    assert retained[f + "projection_0/conv/kernel"] == f + "projection/conv/kernel"
    for application in (1, 2):
        assert f + f"branches/branch0_conv0/bn_{application}/gamma" not in retained
        assert f + f"projection_{application}/conv/kernel" not in retained

    # 2way -> 3way: both blocks copied, the third is new.
    for block in (0, 1):
        path = f"stage_b_1/block_{block}/projection/bn/moving_variance"
        assert retained[path] == path
    assert "stage_b_1/block_2/projection/conv/kernel" not in retained

    # mpoly3 -> poly3: F kept, G and H dropped and reported.
    assert retained["stage_b_2/block_0/projection/conv/kernel"] == (
        "stage_b_2/block_0/projection/conv/kernel")
    modules = {m["target"]: m for m in report.modules}
    assert len(modules["stage_b_2"]["dropped"]) == 2
    assert "stage_b_2/block_1/projection/conv/kernel" in report.not_carried

    # poly3[convs] -> mpoly3: block i takes application i (convs copied to each).
    for block in range(3):
        assert retained[f"stage_b_3/block_{block}/projection/conv/kernel"] == (
            f"stage_b_3/block_0/projection_{block}/conv/kernel")
        assert retained[f"stage_b_3/block_{block}/branches/branch1_conv0/conv/kernel"] == (
            "stage_b_3/block_0/branches/branch1_conv0/conv/kernel")

    # poly2 -> mpoly2: F^2 = F(F): both blocks take F.
    for block in (0, 1):
        assert retained[f"stage_b_4/block_{block}/projection/conv/kernel"] == (
            "stage_b_4/block_0/projection/conv/kernel")

    # Same type: a whole copy, BatchNorm moving statistics included.
    stage_c = [w for w in target.weights if w.path.startswith("stage_c_0/")]
    assert all(retained[w.path] == w.path for w in stage_c)


def test_report_text_and_json_list_every_target_weight(grown_mixed):
    target, _, report = grown_mixed
    text = report.to_text()
    for weight in target.weights:
        assert f"  {weight.path} " in text
    assert "stage_b_1 (mpoly3) <- inserted" in text
    data = json.loads(report.to_json())
    assert len(data["weights"]) == len(target.weights)
    assert data["summary"]["copied"]["weights"] == len(report.retained())
    assert {w.get("source") for w in data["weights"]} - {None} == set(report.retained().values())
