"""One `InputContract`, one tensor: every consumer feeds the model the same input.

The same non-square image, for every single-crop protocol, through the input
pipeline (`InputContract.preprocess`), the evaluator (its crops dataset and a
Keras scorer's normalisation), the serving signatures (encoded bytes and
decoded pixels) and the keras-hub converter and preprocessor (eagerly and in
`tf.data`). A model that only flattens its input shows what each path feeds
it. All paths run the same TensorFlow ops (`make_crops` or the data
package's functions built from the same resize and slice, then
`normalize_image`), so the tensors are equal to the bit.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf.data import InputContract
from polynet_tf.evaluation import data as evaluation_data
from polynet_tf.evaluation.model_sources import keras_scorer
from polynet_tf.hub import PolyNetImageClassifierPreprocessor, PolyNetImageConverter
from polynet_tf.serving import SignatureOptions, signatures
from tests.serving.conftest import MEAN, STD, encode, random_image

SIZE = 24
CONTRACTS = [
    InputContract("single", SIZE, crop_fraction=0.8, mean=MEAN, std=STD),
    InputContract("squash", SIZE, mean=MEAN, std=STD),
    InputContract("squash", SIZE, resize_size=31, antialias=False, mean=MEAN, std=STD),
    InputContract("shorter_side", SIZE, mean=MEAN, std=STD),
    InputContract("pytorchcv", SIZE, resize_size=29, mean=MEAN, std=STD),
]


def _flatten_model():
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, keras.layers.Flatten()(inputs))


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.describe())
@pytest.mark.parametrize("height, width", [(37, 50), (61, 40)])
def test_every_consumer_feeds_the_model_the_same_tensor(contract, height, width):
    image = random_image(height, width, seed=height)
    png = encode(image, "PNG")
    reference = contract.preprocess(tf.constant(png)).numpy()  # The input pipeline.
    assert reference.shape == (SIZE, SIZE, 3)
    flat = reference.reshape(1, -1)
    model = _flatten_model()

    # The evaluator: its crops dataset, then its scorer's normalisation.
    records = tf.data.Dataset.from_tensors((png, 0, "image"))
    crops, _ = next(iter(evaluation_data.crops_dataset(records, contract.crop_protocol(), 1)))
    scorer = keras_scorer(model, contract.mean, contract.std)
    np.testing.assert_array_equal(scorer(crops[:, 0]).numpy(), flat)

    # The serving signatures (the model's "probabilities" are its input, flattened).
    options = SignatureOptions(contract, [str(i) for i in range(flat.shape[1])], top_k=1)
    builder = signatures._SignatureBuilder(model, options)
    served = builder.serve_encoded(tf.constant([png]))["probabilities"].numpy()
    np.testing.assert_array_equal(served, flat)
    pixels = builder.serve_images_uint8(tf.constant(image[None]))["probabilities"].numpy()
    np.testing.assert_array_equal(pixels, flat)

    # keras-hub: the converter eagerly, and the preprocessor inside tf.data.
    converter = PolyNetImageConverter.from_contract(contract)
    np.testing.assert_array_equal(np.asarray(converter(image)), reference)
    preprocessor = PolyNetImageClassifierPreprocessor(converter)
    mapped = tf.data.Dataset.from_tensors(image[None]).map(preprocessor)
    np.testing.assert_array_equal(next(iter(mapped)).numpy()[0], reference)


def test_the_published_weights_contract_is_served_and_converted_by_default():
    from polynet_tf.loading import preset_contract

    contract = preset_contract("very_deep")
    assert contract == InputContract("squash", 331, resize_size=378)
    assert PolyNetImageConverter().input_contract == contract
