"""Small real images for the evaluation tests (no downloads)."""

import io

import numpy as np
from PIL import Image


def photo(height, width, index=0):
    """A real photograph (scikit-learn's sample images) resized to height x width.

    Args:
      height: output height.
      width: output width.
      index: 0 (china.jpg) or 1 (flower.jpg).

    Returns:
      uint8 `[height, width, 3]`.
    """
    from sklearn.datasets import load_sample_images  # Ships the JPEGs; no download.

    image = Image.fromarray(load_sample_images().images[index])
    return np.asarray(image.resize((width, height), Image.BILINEAR))


def solid(height, width, rgb):
    """A uniform colour image, uint8 `[height, width, 3]`."""
    return np.broadcast_to(np.asarray(rgb, np.uint8), (height, width, 3)).copy()


def encode_jpeg(array, quality=95):
    """JPEG bytes of a uint8 RGB array."""
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="JPEG", quality=quality)
    return out.getvalue()


# ------------------------------------------------------------ known model
import keras  # noqa: E402

# Class colours of the colour classifier (RGB in [0, 255]); class i is COLOURS[i].
COLOURS = np.array([
    [220, 30, 30], [30, 200, 40], [40, 50, 210], [230, 220, 40], [40, 210, 220],
    [200, 40, 200], [128, 128, 128], [250, 250, 250], [10, 10, 10], [240, 140, 20],
], np.float32)


@keras.saving.register_keras_serializable(package="polynet_tf_tests")
class MeanColourClassifier(keras.layers.Layer):
    """Softmax of minus the squared distance of the image's mean colour to each class colour.

    Takes images normalised like `preprocess_input`; its outputs are known in
    closed form (`expected_probabilities`).
    """

    def __init__(self, colours, temperature=0.01, **kwargs):
        super().__init__(**kwargs)
        self.colours = [list(map(float, c)) for c in colours]
        self.temperature = float(temperature)

    def call(self, images):
        mean = keras.ops.mean(images, axis=(1, 2))  # [n, 3], normalised units
        centroids = keras.ops.convert_to_tensor(normalised(np.asarray(self.colours)))
        distance = keras.ops.sum((mean[:, None, :] - centroids[None]) ** 2, axis=-1)
        return keras.ops.softmax(-distance * self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "colours": self.colours,
                "temperature": self.temperature}


def normalised(rgb):
    """`preprocess_input`'s normalisation of RGB in [0, 255] (NumPy)."""
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((np.asarray(rgb, np.float32) / 255.0 - mean) / std).astype(np.float32)


def colour_model(temperature=0.01):
    """A Keras classifier of 10 classes by mean colour (takes any image size)."""
    inputs = keras.Input((None, None, 3))
    outputs = MeanColourClassifier(COLOURS.tolist(), temperature)(inputs)
    return keras.Model(inputs, outputs)


def expected_ranking(rgb):
    """Classes by distance of a colour to the class colours, nearest first (NumPy)."""
    distance = ((normalised(COLOURS) - normalised(rgb)) ** 2).sum(axis=1)
    return np.argsort(distance, kind="stable")
