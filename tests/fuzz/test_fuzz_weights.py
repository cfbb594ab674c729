"""Fuzzing the weights readers with mutated files.

`torch_format.load_state_dict` (the torch-free reader of `torch.save` files)
must return a dict of NumPy arrays or raise `CheckpointError` (its
`UnsafeCheckpointError` included) for every mutation; the `.weights.h5`
checker (`weights_file.load_weights_file`) must load the file or raise
`CorruptWeightsFileError` / `WeightsMismatchError`, never leaving the model
half-loaded without an error. No crash, no hang, no other exception.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.fuzz.mutation import mutate, run_cases


def torch_target(folder):
    """The torch.save target; run in a subprocess (a crash must fail the test, not pytest)."""
    import torch

    from polynet_tf.weights.torch_format import load_state_dict
    from polynet_tf.weights.torch_pickle import CheckpointError

    state = {"conv.weight": torch.arange(24, dtype=torch.float32).reshape(2, 3, 2, 2),
             "bn.running_var": torch.ones(3), "fc.bias": torch.zeros(5, dtype=torch.float64),
             "steps": torch.tensor(7)}
    seeds = []
    for legacy in (False, True):
        path = os.path.join(folder, f"seed_{legacy}.pth")
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        seeds.append(open(path, "rb").read())
    path = os.path.join(folder, "case.pth")
    outcomes = {"read": 0, "refused": 0}

    def make_case(rng, number):
        return mutate(seeds[number % 2], rng)

    def check(data):
        with open(path, "wb") as f:
            f.write(data)
        try:
            result = load_state_dict(path)
        except CheckpointError:
            outcomes["refused"] += 1
            return
        assert isinstance(result, dict)
        assert all(isinstance(v, np.ndarray) for v in result.values()), result
        outcomes["read"] += 1

    count = run_cases(make_case, check, min_cases=3000, case_seconds=30)
    assert count >= 3000 and outcomes["refused"] > 0 and outcomes["read"] > 0, outcomes
    print(f"torch target: {count} cases, {outcomes}")


def test_mutated_torch_save_files(tmp_path):
    pytest.importorskip("torch")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys; from tests.fuzz.test_fuzz_weights import torch_target; "
            "torch_target(sys.argv[1])")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, cwd=root, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SystemError" not in result.stderr, result.stderr[-3000:]


def test_mutated_weights_h5_files(tmp_path):
    import keras

    from polynet_tf.weights import weights_file

    def model():
        inputs = keras.Input((4,))
        outputs = keras.layers.Dense(2, name="predictions")(
            keras.layers.Dense(3, name="hidden")(inputs))
        return keras.Model(inputs, outputs)

    source = model()
    for variable in source.weights:
        variable.assign(np.random.default_rng(0).normal(size=variable.shape))
    seed_path = str(tmp_path / "seed.weights.h5")
    source.save_weights(seed_path)
    seed = open(seed_path, "rb").read()
    target = model()
    path = str(tmp_path / "case.weights.h5")
    outcomes = {"loaded": 0, "refused": 0}

    def make_case(rng, number):
        return mutate(seed, rng)

    def check(data):
        with open(path, "wb") as f:
            f.write(data)
        try:
            weights_file.load_weights_file(target, path)
        except (weights_file.CorruptWeightsFileError, weights_file.WeightsMismatchError):
            outcomes["refused"] += 1
            return
        assert [tuple(v.shape) for v in target.weights] == [
            tuple(v.shape) for v in source.weights]
        outcomes["loaded"] += 1

    count = run_cases(make_case, check, min_cases=300, case_seconds=30)
    assert count >= 300 and outcomes["refused"] > 0, outcomes
    assert os.listdir(tmp_path) == ["seed.weights.h5", "case.weights.h5"] or sorted(
        os.listdir(tmp_path)) == ["case.weights.h5", "seed.weights.h5"]
