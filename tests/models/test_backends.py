"""The model code is backend-neutral: the tiny network, and its folded copy, on JAX as on TF.

One JAX subprocess (starting one and compiling there is what costs) runs both
checks: the TF network's outputs, folded outputs and a gradient step on JAX,
and path-drop rates set after the JAX train step is compiled.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT, jax_subprocess_env
from tests.models.test_polynet import tiny

pytest.importorskip("jax")
pytestmark = pytest.mark.slow

# One module per stage: the module kinds of the ir_3_6_3_b_mpoly2 preset (ir, mpoly2 in
# stage B); depth adds only compile time on JAX.
ARCHITECTURE = "A: ir | B: mpoly2 | C: ir"

_JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from polynet_tf import PolyNet, fold_batch_norms, set_path_drop_rates

    # 1. The TF network's weights on JAX: outputs, folded outputs, one gradient step.
    # Seeded: an unlucky draw of the stochastic paths (rate 0.3, 4 images) may
    # drop a whole path, whose weights then rightly keep their values.
    keras.utils.set_random_seed(0)
    architecture, weights, inputs, outputs, folded_outputs = sys.argv[1:6]
    model = PolyNet(architecture, width_multiplier=0.0625, classes=10,
                    input_shape=(75, 75, 3), drop_path_rate=0.3, weights=weights)
    x = np.load(inputs)
    np.save(outputs, model.predict(x, verbose=0))
    np.save(folded_outputs, fold_batch_norms(model).predict(x, verbose=0))
    # One gradient step, stochastic paths on.
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    before = [np.array(w) for w in model.trainable_weights]
    loss = float(model.train_on_batch(x, np.arange(len(x)) % 10))
    changed = sum(not np.array_equal(b, np.array(w))
                  for b, w in zip(before, model.trainable_weights))
    assert np.isfinite(loss), loss
    assert changed == len(before), (changed, len(before))
    print("jax-ok", loss)

    # 2. Path-drop rates set after the train step is compiled.
    keras.utils.set_random_seed(0)
    model = PolyNet("A: 2way | B: poly3[convs] | C: 2way", width_multiplier=0.0625, classes=10,
                    input_shape=(75, 75, 3),
                    dropout_rate=0.0, weights=None)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 1, (4, 75, 75, 3)).astype("float32")
    y = np.arange(4) % 10
    state = [np.array(v) for v in model.variables]

    def loss():
        for variable, value in zip(model.variables, state):
            variable.assign(value)
        return float(model.train_on_batch(x, y))

    plain = loss()  # compiles the train step with every rate at 0
    assert model.train_function is not None
    assert loss() == plain
    set_path_drop_rates(model, 0.9)
    dropped = loss()
    set_path_drop_rates(model, 0.0)
    print("rates", plain, dropped, loss())
    """
)


@pytest.fixture(scope="module")
def on_jax(tmp_path_factory):
    """Runs the JAX script on a TF network's weights; returns (TF model, inputs, folder, stdout)."""
    folder = tmp_path_factory.mktemp("jax")
    model = tiny(ARCHITECTURE, drop_path_rate=0.3)
    x = np.random.default_rng(0).uniform(-2, 2, size=(4, 75, 75, 3)).astype("float32")
    model(x, training=True)  # move BatchNorm statistics off their initial values
    weights = folder / "tiny.weights.h5"
    model.save_weights(weights)
    np.save(folder / "x.npy", x)
    result = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, ARCHITECTURE, str(weights), str(folder / "x.npy"),
         str(folder / "y.npy"), str(folder / "folded.npy")],
        env=jax_subprocess_env(), capture_output=True, text=True, timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return model, x, folder, result.stdout


def test_tiny_network_on_jax_matches_tensorflow_and_trains(on_jax):
    model, x, folder, stdout = on_jax
    assert "jax-ok" in stdout
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.load(folder / "y.npy"), expected, rtol=1e-4, atol=1e-5)
    # The BatchNorm-folded inference network, folded on JAX.
    np.testing.assert_allclose(np.load(folder / "folded.npy"), expected, rtol=1e-4, atol=1e-5)


def test_path_drop_rates_set_after_the_jax_step_is_compiled_take_effect(on_jax):
    line = [row for row in on_jax[3].splitlines() if row.startswith("rates ")][-1]
    plain, dropped, restored = (float(value) for value in line.split()[1:])
    # A rate baked into the compiled step as a constant would leave the loss unchanged.
    assert abs(dropped - plain) > 1e-4, (plain, dropped)
    assert restored == pytest.approx(plain, rel=1e-6, abs=1e-6)
