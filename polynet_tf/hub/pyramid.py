"""PolyNet's feature levels as keras-hub's `pyramid_outputs` (P2-P5), on exact grids.

keras-hub's heads assume the backbone's map at level Pn has ceil(side / 2^n)
cells, each 2x its neighbour: the feature pyramid of `RetinaNetObjectDetector`
upsamples P(n+1) by 2 and adds it to Pn, its anchors sit at the centres of
those grids, and `DeepLabV3ImageSegmenter` upsamples P5 to P2's size and
back to the image's. PolyNet's reductions are unpadded, so its maps are a
few cells short of that grid and never exactly 2x apart (at 256x256: 60, 29,
14 and 6 cells for P2-P5, against 64, 32, 16 and 8).

`AlignToGrid` zero-pads each map onto its grid: `offset` cells before (top
and left), the rest after, cropped to the grid where a map would overrun it.
The offset puts each PolyNet cell on the grid cell whose anchors are
nearest to its centre in the image: keras-hub's `AnchorGenerator` centres
the anchors of cell k of level Pn on pixel k * 2^n, and unpadded 3x3 windows
move a PolyNet map's first cell right and down (a stride-2 window starting at
pixel 0 is centred on pixel 1.5); the offset rounds that shift to whole grid
cells (see `grid_offset`). Padding, not resizing, keeps every cell of the map where it
is in the image and adds nothing to the network's weights.
"""

import math

import keras
from keras import ops

from polynet_tf.models import features

# keras-hub level Pn <- PolyNet feature level n - 1 (stride 2^n).
PYRAMID_FEATURE_LEVELS = {"P2": 1, "P3": 2, "P4": 3, "P5": 4}

# The unpadded 3x3 windows (their strides) below each feature level's map,
# bottom to top: stem conv1, conv2 | mixed 3a, 4a | mixed 5a | reduction A | B.
_WINDOWS_BELOW = {0: (2, 1), 1: (2, 1, 2, 1), 2: (2, 1, 2, 1, 2), 3: (2, 1, 2, 1, 2, 2),
                  4: (2, 1, 2, 1, 2, 2, 2)}


def first_cell_centre(level):
    """Centre (in input pixels, pixel i spanning [i, i + 1)) of a level's first cell."""
    centre, step = 0.5, 1
    for stride in _WINDOWS_BELOW[level]:
        centre += step  # a 3x3 window's centre is one of its input cells in
        step *= stride
    return centre


def grid_offset(level):
    """Cells to pad before a level's map so that its cells sit on the nearest anchors.

    keras-hub's anchors of grid cell k are centred on pixel stride * k: P2 and
    P3 get 2 cells, P4 and P5 1 (first centres 9.5, 13.5, 21.5 and 37.5
    pixels, placed on anchors at 8, 16, 16 and 32).
    """
    stride = features.LEVEL_STRIDES[level]
    return int(math.floor(first_cell_centre(level) / stride + 0.5))


def grid_size(side, level):
    """Cells of level `level`'s grid for an input side: ceil(side / stride)."""
    stride = features.LEVEL_STRIDES[level]
    return -(-side // stride)


def _pad_after(level, largest=4096):
    """Zero cells to append so that any input side up to `largest` fills its grid."""
    offset = grid_offset(level)
    smallest = features.min_input_size([level])
    return max(0, max(grid_size(side, level) - features.feature_sizes(side)[level] - offset
                      for side in range(smallest, largest + 1)))


@keras.saving.register_keras_serializable(package="polynet_tf")
class AlignToGrid(keras.layers.Layer):
    """Zero-pads a PolyNet feature map onto the grid of ceil(input side / stride) cells.

    Called on `[feature_map, image]`: the image gives the grid's size, also
    when it is known only at run time.

    Args:
        level: the PolyNet feature level (0-4) of the map.
        **kwargs: base layer arguments.
    """

    def __init__(self, level, **kwargs):
        super().__init__(**kwargs)
        self.level = int(level)
        self.stride = features.LEVEL_STRIDES[self.level]
        self.offset = grid_offset(self.level)
        self.pad_after = _pad_after(self.level)

    def call(self, inputs):
        feature_map, image = inputs
        pad = (self.offset, self.pad_after)
        padded = ops.pad(feature_map, ((0, 0), pad, pad, (0, 0)))
        height, width = ops.shape(image)[1], ops.shape(image)[2]
        rows = (height + self.stride - 1) // self.stride
        cols = (width + self.stride - 1) // self.stride
        return padded[:, :rows, :cols, :]

    def compute_output_shape(self, input_shape):
        map_shape, image_shape = input_shape
        rows, cols = (None if side is None else grid_size(side, self.level)
                      for side in image_shape[1:3])
        return (map_shape[0], rows, cols, map_shape[3])

    def get_config(self):
        config = super().get_config()
        config["level"] = self.level
        return config


def aligned_pyramid(level_maps, image):
    """keras-hub's `pyramid_outputs` from PolyNet's feature maps.

    Args:
        level_maps: {feature level: Keras tensor}, with levels 1-4.
        image: the model's input tensor.

    Returns:
        {"P2": ..., "P5": ...}: each map on its exact grid (`AlignToGrid`).
    """
    return {
        key: AlignToGrid(level, name=f"align_{key.lower()}")([level_maps[level], image])
        for key, level in PYRAMID_FEATURE_LEVELS.items()
    }
