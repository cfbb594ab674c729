"""`python -m polynet_tf.hub.make_preset` from a weights file; polynet_tf without the extra."""

import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np

from polynet_tf import PolyNet
from polynet_tf.data import InputContract
from polynet_tf.hub import PolyNetImageClassifier, make_preset
from tests.conftest import TINY_WIDTH
from tests.hub.conftest import TINY_SPEC, randomize, raw_images

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_make_preset_from_a_weights_file(tmp_path, capsys):
    model = PolyNet(TINY_SPEC, width_multiplier=TINY_WIDTH, classes=3,
                    input_shape=(75, 75, 3))
    randomize(model, seed=4)
    weights = str(tmp_path / "tiny.weights.h5")
    model.save_weights(weights)
    output = str(tmp_path / "presets" / "tiny")
    args = ["--weights", weights, "--architecture", TINY_SPEC, "--width_multiplier",
            str(TINY_WIDTH), "--classes", "3", "--image_size", "75", "--output", output]
    assert make_preset.main(args) == 0
    assert "Wrote the keras-hub preset" in capsys.readouterr().out
    loaded = keras_hub.models.ImageClassifier.from_preset(output)
    assert isinstance(loaded, PolyNetImageClassifier) and loaded.activation == "softmax"
    # A weights file without published weights: the "single" protocol at --image_size.
    converter = loaded.preprocessor.image_converter
    assert converter.image_size == (75, 75)
    assert converter.input_contract == InputContract("single", 75, crop_fraction=0.875)
    images = raw_images(count=2)
    expected = keras.ops.convert_to_numpy(model(loaded.preprocessor(images)))
    assert np.std(expected) > 0.05
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, rtol=0, atol=1e-6)

    # An existing output is kept unless --overwrite is given.
    assert make_preset.main(args) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    # --protocol: the preprocessor cuts that crop (squash: resized whole to 86, centre 75).
    assert make_preset.main(args + ["--protocol", "squash", "--overwrite"]) == 0
    squash = keras_hub.models.ImageClassifier.from_preset(output).preprocessor
    assert squash.image_converter.input_contract == InputContract("squash", 75, resize_size=86)
    resized = squash(images).numpy()
    assert resized.shape == (2, 75, 75, 3)
    assert np.abs(resized - loaded.preprocessor(images).numpy()).max() > 0.1
    assert make_preset.main(args + ["--protocol", "squash", "--crop_fraction", "0.9",
                                    "--overwrite"]) == 1
    assert "crop_fraction applies to 'single' only" in capsys.readouterr().err
    # ... refused before any weights are read (here: a file that does not exist).
    assert make_preset.main(["--weights", str(tmp_path / "missing.weights.h5"),
                             "--architecture", TINY_SPEC, "--protocol", "squash",
                             "--crop_fraction", "0.9", "--output", str(tmp_path / "none")]) == 1
    assert "crop_fraction applies to 'single' only" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "none")
    # Weights of another network: nothing written, the first differing weight named.
    other = str(tmp_path / "other")
    bad = [a if a != TINY_SPEC else "A: 2way | B: 2way | C: poly3[convs]" for a in args]
    assert make_preset.main(bad[:-1] + [other]) == 1
    assert "does not fit this model" in capsys.readouterr().err
    assert not os.path.exists(other)
    assert make_preset.main(["--output", other]) == 2  # --weights is required
    assert "weights" in capsys.readouterr().err
    # The published weights have 1000 classes: another --classes is an error, not ignored.
    assert make_preset.main(["--weights", "imagenet", "--classes", "10", "--output", other]) == 1
    assert "should be 1000. Received classes=10" in capsys.readouterr().err
    assert not os.path.exists(other)


def test_polynet_tf_without_keras_hub():
    # keras_hub made unimportable, as when the extra is not installed.
    script = textwrap.dedent("""
        import sys
        sys.modules["keras_hub"] = None
        import polynet_tf
        from polynet_tf import PolyNet, list_architectures
        assert "very_deep" in list_architectures()
        try:
            import polynet_tf.hub
        except ImportError as error:
            print("MESSAGE:", error)
        else:
            raise SystemExit("polynet_tf.hub imported without keras_hub")
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=_REPO)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, cwd=_REPO, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'pip install "polynet-tf[hub]"' in result.stdout
