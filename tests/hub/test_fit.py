"""Fine-tuning through keras-hub's task API gives the network `PolyNet()` builds."""

import keras
import numpy as np

from polynet_tf import PolyNet
from polynet_tf.hub import to_polynet
from tests.hub.conftest import raw_images, tiny_classifier


def test_fit_then_the_weights_map_one_to_one_onto_polynet():
    classifier = tiny_classifier(num_classes=3)
    before = [v.numpy().copy() for v in classifier.weights]
    images = raw_images(count=4, height=96, width=84, seed=5)
    labels = np.array([0, 1, 2, 1])
    classifier.compile(optimizer=keras.optimizers.SGD(0.05))  # keras-hub's loss and metric
    history = classifier.fit(images, labels, batch_size=2, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert "sparse_categorical_accuracy" in history.history
    changed = [not np.array_equal(b, v.numpy()) for b, v in zip(before, classifier.weights)]
    moving = [v.path.endswith(("moving_mean", "moving_variance")) for v in classifier.weights]
    assert all(c for c, m in zip(changed, moving) if m)  # BatchNorm statistics updated
    assert sum(changed) > 0.9 * len(changed)

    # The package's builder, from the task's own description, gets the same
    # variables in the same order under the same layer paths.
    kwargs = classifier.polynet_kwargs()
    assert kwargs["dropout_rate"] == 0.2 and kwargs["classifier_activation"] is None
    reference = PolyNet(**kwargs)
    assert [(v.path, tuple(v.shape)) for v in reference.weights] == [
        (v.path, tuple(v.shape)) for v in classifier.weights]
    assert reference.count_params() == classifier.count_params()
    reference.set_weights(classifier.get_weights())
    x = classifier.preprocessor(images)
    # The plain Keras models are called (a traced predict function each costs more
    # than the check); the task's predict() runs its preprocessor.
    expected = keras.ops.convert_to_numpy(reference(x, training=False))
    np.testing.assert_allclose(classifier.predict(images, verbose=0), expected, rtol=0, atol=1e-6)
    # to_polynet() copies layer by layer, by name: the same function again.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(to_polynet(classifier)(x)), expected,
                               rtol=0, atol=1e-6)
