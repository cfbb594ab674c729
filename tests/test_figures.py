"""`polynet_tf.figures`: a figure is written whole when its block ends, and only then."""

import pytest
import tensorflow as tf

from polynet_tf import figures

pytest.importorskip("matplotlib")


def test_a_finished_figure_is_a_png_of_the_asked_size():
    path = "ram://test_figures/finished.png"
    with figures.png_figure(path, 1, 2, figsize=(4, 2), dpi=50) as (figure, axes):
        axes[0].plot([0, 1], [1, 0])
        assert not tf.io.gfile.exists(path)  # nothing before the block ends
    data = tf.io.gfile.GFile(path, "rb").read()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    height, width = tf.image.decode_png(data).shape[:2]
    assert (width, height) == (200, 100)
    assert not figures.pyplot().get_fignums()  # closed


def test_a_block_that_raises_writes_nothing_and_closes_the_figure():
    path = "ram://test_figures/failed.png"
    with pytest.raises(RuntimeError, match="drawing failed"):
        with figures.png_figure(path, figsize=(2, 2)) as (_, axes):
            axes.plot([0, 1], [0, 1])
            raise RuntimeError("drawing failed")
    assert not tf.io.gfile.exists(path)
    assert not figures.pyplot().get_fignums()
