import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import decode_predictions, preprocess_input

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _reference(x):
    return (np.asarray(x, np.float64) / 255.0 - MEAN) / STD


@pytest.mark.parametrize("shape", [(8, 9, 3), (2, 8, 9, 3), (2, 3, 4, 5, 3)])
def test_uint8_and_float_numpy_images(shape):
    x = np.random.default_rng(0).integers(0, 256, size=shape).astype("uint8")
    out = preprocess_input(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, _reference(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(preprocess_input(x.astype("float32")), out, rtol=1e-6)
    # 0 and 255 land where the released weights expect them.
    np.testing.assert_allclose(preprocess_input(np.zeros((1, 1, 3), "uint8"))[0, 0], -MEAN / STD,
                               rtol=1e-6)


def test_tensors_and_channels_first():
    x = np.random.default_rng(1).uniform(0, 255, size=(2, 5, 6, 3)).astype("float32")
    out = preprocess_input(tf.constant(x))
    np.testing.assert_allclose(np.asarray(out), _reference(x), rtol=1e-5, atol=1e-5)
    first = preprocess_input(np.transpose(x, (0, 3, 1, 2)), data_format="channels_first")
    np.testing.assert_allclose(np.transpose(first, (0, 2, 3, 1)), _reference(x), rtol=1e-5,
                               atol=1e-5)


def test_bad_preprocess_input():
    with pytest.raises(ValueError, match="3 channels"):
        preprocess_input(np.zeros((2, 4, 4, 4)))
    with pytest.raises(ValueError, match="data_format"):
        preprocess_input(np.zeros((4, 4, 3)), data_format="nhwc")


def test_decode_predictions_uses_the_shipped_class_index():
    preds = np.zeros((2, 1000), "float32")
    preds[0, [0, 1, 207]] = [0.1, 0.3, 0.6]
    preds[1, 999] = 1.0
    decoded = decode_predictions(preds, top=3)
    assert [d[:2] for d in decoded[0]] == [
        ("n02099601", "golden_retriever"), ("n01443537", "goldfish"), ("n01440764", "tench")]
    assert decoded[0][0][2] == pytest.approx(0.6)
    assert decoded[1][0][:2] == ("n15075141", "toilet_tissue")
    assert len(decode_predictions(preds)[0]) == 5


def test_bad_decode_predictions():
    with pytest.raises(ValueError, match=r"shape \(samples, 1000\)"):
        decode_predictions(np.zeros((2, 10)))
    with pytest.raises(ValueError, match="top"):
        decode_predictions(np.zeros((1, 1000)), top=0)
