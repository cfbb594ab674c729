"""The model code is backend-neutral: the tiny network, and its folded copy, on JAX as on TF."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import ROOT, jax_subprocess_env
from tests.models.test_polynet import tiny

pytest.importorskip("jax")

_JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    from polynet_tf import PolyNet, fold_batch_norms
    # Seeded: an unlucky draw of the stochastic paths (rate 0.3, 4 images) may
    # drop a whole path, whose weights then rightly keep their values.
    keras.utils.set_random_seed(0)
    weights, inputs, outputs, folded_outputs = sys.argv[1:5]
    model = PolyNet("ir_3_6_3_b_mpoly2", width_multiplier=0.0625, classes=10,
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
    """
)


@pytest.mark.slow
def test_tiny_network_on_jax_matches_tensorflow_and_trains(tmp_path):
    model = tiny("ir_3_6_3_b_mpoly2", drop_path_rate=0.3)
    x = np.random.default_rng(0).uniform(-2, 2, size=(4, 75, 75, 3)).astype("float32")
    model(x, training=True)  # move BatchNorm statistics off their initial values
    weights = tmp_path / "tiny.weights.h5"
    model.save_weights(weights)
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run_jax.py"
    script.write_text(_JAX_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(weights), str(tmp_path / "x.npy"),
         str(tmp_path / "y.npy"), str(tmp_path / "folded.npy")],
        env=jax_subprocess_env(), capture_output=True, text=True, timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax-ok" in result.stdout
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-5)
    # The BatchNorm-folded inference network, folded on JAX.
    np.testing.assert_allclose(np.load(tmp_path / "folded.npy"), expected, rtol=1e-4, atol=1e-5)


_JAX_RATES_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import keras
    from polynet_tf import PolyNet, set_path_drop_rates
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


@pytest.mark.slow
def test_path_drop_rates_set_after_the_jax_step_is_compiled_take_effect(tmp_path):
    script = tmp_path / "rates_jax.py"
    script.write_text(_JAX_RATES_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], env=jax_subprocess_env(),
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [row for row in result.stdout.splitlines() if row.startswith("rates ")][-1]
    plain, dropped, restored = (float(value) for value in line.split()[1:])
    # A rate baked into the compiled step as a constant would leave the loss unchanged.
    assert abs(dropped - plain) > 1e-4, (plain, dropped)
    assert restored == pytest.approx(plain, rel=1e-6, abs=1e-6)
