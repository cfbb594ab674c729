"""The global-heap check that keeps a corrupt `.weights.h5` from hanging HDF5."""

import faulthandler
import struct

import keras
import numpy as np
import pytest

from polynet_tf.weights import weights_file
from polynet_tf.weights.hdf5_heaps import HeapLoopError, check_global_heaps


def _model():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="predictions")(hidden))


def _free_space_size_field(data):
    """Byte offset of the size field of the first collection's free-space object."""
    start = data.index(b"GCOL")
    size = int.from_bytes(data[start + 8:start + 16], "little")
    position = start + 16
    while position + 16 <= start + size:
        index, = struct.unpack_from("<H", data, position)
        object_size = int.from_bytes(data[position + 8:position + 16], "little")
        if index == 0:
            return position + 8
        position += 16 + (object_size + 7) // 8 * 8
    raise AssertionError("the collection has no free-space object")


@pytest.fixture()
def saved(tmp_path):
    model = _model()
    for variable in model.weights:
        variable.assign(np.random.default_rng(0).normal(size=variable.shape))
    path = tmp_path / "model.weights.h5"
    model.save_weights(str(path))
    return path


def test_an_intact_keras_file_passes_and_loads(saved):
    check_global_heaps(str(saved))
    target = _model()
    weights_file.load_weights_file(target, str(saved))
    assert [tuple(v.shape) for v in target.weights] == [(4, 3), (3,), (3, 2), (2,)]


def test_a_free_space_object_of_size_zero_is_refused_without_reading_the_heap(saved):
    data = bytearray(saved.read_bytes())
    field = _free_space_size_field(data)
    data[field:field + 8] = bytes(8)
    corrupt = saved.with_name("corrupt.weights.h5")
    corrupt.write_bytes(bytes(data))
    with pytest.raises(HeapLoopError, match=f"free-space object of size 0 at byte {field - 8}"):
        check_global_heaps(str(corrupt))
    # HDF5 itself would read this file's layer names forever: a hang ends the test run.
    faulthandler.dump_traceback_later(60, exit=True)
    try:
        with pytest.raises(weights_file.CorruptWeightsFileError, match="would read forever"):
            weights_file.load_weights_file(_model(), str(corrupt))
    finally:
        faulthandler.cancel_dump_traceback_later()


def test_files_that_are_not_hdf5_are_left_to_h5py(tmp_path):
    empty = tmp_path / "empty.weights.h5"
    empty.write_bytes(b"")
    check_global_heaps(str(empty))
    text = tmp_path / "text.weights.h5"
    text.write_bytes(b"GCOL\x01\x00\x00\x00" + bytes(8) + b"not an HDF5 file")
    check_global_heaps(str(text))
    with pytest.raises(weights_file.CorruptWeightsFileError):
        weights_file.load_weights_file(_model(), str(text))
