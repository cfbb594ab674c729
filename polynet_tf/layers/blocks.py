"""Stem, reductions and Inception residual blocks of the released PolyNet.

Every table here is docs/design.md section 1 (checked against the `pretrainedmodels`
port of the released network, `pretrainedmodels/models/polynet.py`): branch
order is concatenation order, which decides whether converted weights line up.
Channel counts are those of the released network, scaled by
`width_multiplier` (1.0 is the released network).
"""

import keras

from polynet_tf.layers.batch_norm import BatchNormSettings
from polynet_tf.layers.branches import BranchConcat, conv, maxpool, scale_channels
from polynet_tf.layers.conv_bn import ConvBN
from polynet_tf.layers.indexed import get_indexed, set_indexed
from polynet_tf.layers.remat import rematerialized_call

BLOCK_TYPES = ("A", "B", "C")


def _scaled(branches, width_multiplier):
    return [
        [
            dict(op, filters=scale_channels(op["filters"], width_multiplier))
            if op["op"] == "conv"
            else op
            for op in branch
        ]
        for branch in branches
    ]


# Residual blocks F: branches, concatenated, then a 1x1 projection (no ReLU)
# back to the input's channel count (384 / 1152 / 2048 at full width).
RESIDUAL_BRANCHES = {
    "A": [
        [conv(32, 1), conv(48, 3), conv(64, 3)],
        [conv(32, 1), conv(32, 3)],
        [conv(32, 1)],
    ],
    "B": [
        [conv(128, 1), conv(160, (1, 7)), conv(192, (7, 1))],
        [conv(192, 1)],
    ],
    "C": [
        [conv(192, 1), conv(224, (1, 3)), conv(256, (3, 1))],
        [conv(192, 1)],
    ],
}

STEM_CONVS = [
    conv(32, 3, strides=2, padding="valid"),
    conv(32, 3, padding="valid"),
    conv(64, 3),
]
MIXED_3A = [[maxpool()], [conv(96, 3, strides=2, padding="valid")]]
MIXED_4A = [
    [conv(64, 1), conv(96, 3, padding="valid")],
    [conv(64, 1), conv(64, (7, 1)), conv(64, (1, 7)), conv(96, 3, padding="valid")],
]
MIXED_5A = [[maxpool()], [conv(192, 3, strides=2, padding="valid")]]

# The stem's parts recomputed together when it is rematerialized, as
# [start, stop) ranges of `Stem.parts`: [conv1, conv2], [conv3, mixed_3a],
# [mixed_4a], [mixed_5a]. A segment costs its input, kept from the forward
# pass to the end of the backward pass, and its own activations, held only
# while its gradient is computed (the transient). Counted per sample at
# 331x331 as the outputs of each unit's conv, BatchNorm and ReLU (every
# width scales all parts alike): mixed_4a alone is the largest transient
# (about 10M values, six units at 79-81 px) and is one part. Pairing conv1
# with conv2 and conv3 with mixed_3a keeps both pairs' transients below it
# (about 5M and 8.5M) and puts their kept inputs on the small maps: conv2's
# output (163x163x32) is kept, not conv1's and conv3's (165x165x32 and
# 163x163x64), about 3.1M values kept in all against 5.7M with six
# segments (the images, kept anyway, aside). Larger segments would raise
# the transient (all three convs: about 10M; the whole stem: about 25M, all
# the plain stem keeps). The extra compute is the same for any split: one
# more stem forward pass per step.
STEM_REMAT_SEGMENTS = ((0, 2), (2, 4), (4, 5), (5, 6))

REDUCTION_A = [
    [conv(256, 1), conv(256, 3), conv(384, 3, strides=2, padding="valid")],
    [conv(384, 3, strides=2, padding="valid")],
    [maxpool()],
]
REDUCTION_B = [
    [conv(256, 1), conv(256, 3), conv(256, 3, strides=2, padding="valid")],
    [conv(256, 1), conv(256, 3, strides=2, padding="valid")],
    [conv(256, 1), conv(384, 3, strides=2, padding="valid")],
    [maxpool()],
]


# The smallest image whose maps fit each unpadded layer's 3x3 windows
# (polynet_tf.models.features.min_input_size): the stem's output is 1x1 at
# 27, reduction A's at 43, reduction B's (stage C) at 75.
STEM_MIN_INPUT = 27


def check_input_size(layer, inputs, smallest, image_smallest):
    """A clear error when a map is known (static) to be too small for `layer`.

    Without it, TensorFlow stops deep inside a conv with "Computed output size
    would be zero or negative"; models with unknown input sizes meet that at
    run time.
    """
    height, width = inputs.shape[1:3]
    if any(side is not None and side < smallest for side in (height, width)):
        raise ValueError(
            f"The input image is too small for layer {layer.name!r}: its input map is "
            f"{height}x{width}, less than the {smallest}x{smallest} it needs; images must be "
            f"at least {image_smallest}x{image_smallest} up to this layer (75x75 for the whole "
            "network; feature maps of lower levels need less, see "
            "polynet_tf.models.features).")


class _WidthConfigMixin:
    """get_config of the stem and reductions: width, BatchNorm settings, rematerialization.

    `rematerialize` defaults to False in the constructors, so configs saved
    before it existed still load.
    """

    def get_config(self):
        config = keras.layers.Layer.get_config(self)
        config.update(
            width_multiplier=self.width_multiplier,
            batch_norm=self.batch_norm.to_dict(),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            rematerialize=self.rematerialize,
        )
        return config


@keras.saving.register_keras_serializable(package="polynet_tf")
class Stem(_WidthConfigMixin, keras.layers.Layer):
    """Three convs, then mixed 3a, 4a and 5a (331x331x3 -> 39x39x384).

    Args:
        width_multiplier: scales every channel count.
        batch_norm: `BatchNormSettings` or its dict form.
        kernel_initializer: conv kernel initializer.
        rematerialize: in training, keep only the inputs of the segments
            `STEM_REMAT_SEGMENTS` for the backward pass and recompute the
            segments there (see `polynet_tf.layers.remat`): less memory, one
            more forward pass of the stem. Gradients and BatchNorm moving
            statistics are unchanged. Training with it needs TensorFlow.
        feature_parts: indices into `parts` whose outputs are returned too,
            for feature maps by level (`polynet_tf.models.features`): the
            call then returns a list, those outputs in order and the stem's
            own output last. Empty (the default): the stem's output alone.
            The weights are the same either way.
        **kwargs: base layer arguments.
    """

    def __init__(
        self, width_multiplier=1.0, batch_norm=None,
        kernel_initializer="glorot_uniform", rematerialize=False, feature_parts=(),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.width_multiplier = float(width_multiplier)
        self.rematerialize = bool(rematerialize)
        self.feature_parts = tuple(sorted({int(index) for index in feature_parts}))
        self.batch_norm = BatchNormSettings.from_value(batch_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        common = dict(
            batch_norm=self.batch_norm,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
        )
        parts = [
            ConvBN(
                scale_channels(spec["filters"], self.width_multiplier),
                spec["kernel_size"], strides=spec["strides"], padding=spec["padding"],
                name=f"conv{i + 1}", **common,
            )
            for i, spec in enumerate(STEM_CONVS)
        ]
        for name, branches in (
            ("mixed_3a", MIXED_3A), ("mixed_4a", MIXED_4A), ("mixed_5a", MIXED_5A)
        ):
            parts.append(
                BranchConcat(_scaled(branches, self.width_multiplier), name=name, **common)
            )
        self._num_parts = set_indexed(self, "part", parts)

    @property
    def parts(self):
        """The three stem convs, then mixed 3a, 4a and 5a."""
        return get_indexed(self, "part", self._num_parts)

    def build(self, input_shape):
        shape = input_shape
        for part in self.parts:
            part.build(shape)
            shape = part.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, training=None):
        check_input_size(self, inputs, STEM_MIN_INPUT, STEM_MIN_INPUT)
        remat = training and self.rematerialize
        # Segments end where a feature map is taken, so that each is a
        # segment's output (kept for the backward pass either way).
        stops = {stop for _, stop in STEM_REMAT_SEGMENTS} if remat else set()
        stops |= {index + 1 for index in self.feature_parts} | {self._num_parts}
        x, start, features = inputs, 0, []
        for stop in sorted(stops):
            if remat:
                x = rematerialized_call(
                    # Default arguments bind this segment's bounds, not the last ones.
                    lambda x, start=start, stop=stop: self._parts_call(x, start, stop, training),
                    x,
                )
            else:
                x = self._parts_call(x, start, stop, training)
            if stop - 1 in self.feature_parts:
                features.append(x)
            start = stop
        return features + [x] if self.feature_parts else x

    def _parts_call(self, inputs, start, stop, training):
        """Parts `start` to `stop - 1`, in order."""
        x = inputs
        for part in self.parts[start:stop]:
            x = part(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        shape, features = input_shape, []
        for index, part in enumerate(self.parts):
            shape = part.compute_output_shape(shape)
            if index in self.feature_parts:
                features.append(shape)
        return features + [shape] if self.feature_parts else shape

    def get_config(self):
        config = super().get_config()
        if self.feature_parts:  # absent otherwise: the classifier's config is unchanged
            config["feature_parts"] = list(self.feature_parts)
        return config


class _Reduction(_WidthConfigMixin, BranchConcat):
    """A fixed-topology BranchConcat configured by width only.

    Args:
        width_multiplier: scales every channel count.
        batch_norm: `BatchNormSettings` or its dict form.
        kernel_initializer: conv kernel initializer.
        rematerialize: in training, keep only the input for the backward
            pass and recompute the branches there, as one segment (see
            `polynet_tf.layers.remat`): less memory, one more forward pass of
            the reduction. Gradients and BatchNorm moving statistics are
            unchanged. Training with it needs TensorFlow.
        **kwargs: base layer arguments.
    """

    BRANCHES = None
    MIN_IMAGE_SIZE = None  # the smallest image whose map fits this reduction

    def __init__(
        self, width_multiplier=1.0, batch_norm=None,
        kernel_initializer="glorot_uniform", rematerialize=False, **kwargs,
    ):
        self.width_multiplier = float(width_multiplier)
        self.rematerialize = bool(rematerialize)
        super().__init__(
            _scaled(self.BRANCHES, self.width_multiplier),
            batch_norm=batch_norm,
            kernel_initializer=kernel_initializer,
            **kwargs,
        )

    def call(self, inputs, training=None):
        check_input_size(self, inputs, 3, self.MIN_IMAGE_SIZE)
        branches = super().call
        if training and self.rematerialize:
            # One segment: its activations (about 3.7M values per sample at
            # 331x331 for ReductionA, 1.6M for ReductionB, counted as for
            # STEM_REMAT_SEGMENTS) stay below the stem's largest transient.
            return rematerialized_call(lambda x: branches(x, training=training), inputs)
        return branches(inputs, training=training)


@keras.saving.register_keras_serializable(package="polynet_tf")
class ReductionA(_Reduction):
    """Stage A -> B: 35/39 -> 17/19 spatially, 384 -> 1152 channels at full width."""

    BRANCHES = REDUCTION_A
    MIN_IMAGE_SIZE = 43


@keras.saving.register_keras_serializable(package="polynet_tf")
class ReductionB(_Reduction):
    """Stage B -> C: 17/19 -> 8/9 spatially, 1152 -> 2048 channels at full width."""

    BRANCHES = REDUCTION_B
    MIN_IMAGE_SIZE = 75


@keras.saving.register_keras_serializable(package="polynet_tf")
class InceptionResidualBlock(keras.layers.Layer):
    """The residual function F of stage A, B or C (Inception-ResNet-v2 style).

    Branches are concatenated and projected by a 1x1 conv + BN without ReLU
    back to the input's channel count. With `num_applications > 1` the block is
    the released poly-3's shared block: the branch convs are shared, and each
    application has its own BatchNorms and its own projection.

    Args:
        block_type: "A", "B" or "C".
        num_applications: how many applications share the branch convs.
        width_multiplier: scales the branch channel counts.
        batch_norm: `BatchNormSettings` or its dict form.
        kernel_initializer: conv kernel initializer.
        **kwargs: base layer arguments.
    """

    def __init__(
        self, block_type, num_applications=1, width_multiplier=1.0,
        batch_norm=None, kernel_initializer="glorot_uniform", **kwargs,
    ):
        super().__init__(**kwargs)
        if block_type not in BLOCK_TYPES:
            raise ValueError(
                f"`block_type` must be one of {BLOCK_TYPES}. Received: {block_type!r}"
            )
        if int(num_applications) < 1:
            raise ValueError(
                f"`num_applications` must be >= 1. Received: {num_applications}"
            )
        self.block_type = block_type
        self.num_applications = int(num_applications)
        self.width_multiplier = float(width_multiplier)
        self.batch_norm = BatchNormSettings.from_value(batch_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.branches = BranchConcat(
            _scaled(RESIDUAL_BRANCHES[block_type], self.width_multiplier),
            num_norms=self.num_applications,
            batch_norm=self.batch_norm,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="branches",
        )
        self._num_projections = 0

    @property
    def projections(self):
        """One 1x1 projection (conv + BN, no ReLU) per application."""
        return get_indexed(self, "projection", self._num_projections)

    def build(self, input_shape):
        self.branches.build(input_shape)
        concat_shape = self.branches.compute_output_shape(input_shape)
        # Created here: the projection width is the input's channel count.
        self._num_projections = set_indexed(self, "projection", [
            ConvBN(
                input_shape[-1], 1, activation=False,
                batch_norm=self.batch_norm,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name="projection" if self.num_applications == 1 else f"projection_{i}",
            )
            for i in range(self.num_applications)
        ])
        for projection in self.projections:
            projection.build(concat_shape)
        self.built = True

    def call(self, inputs, application=0, training=None):
        x = self.branches(inputs, norm_index=application, training=training)
        return self.projections[application](x, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            block_type=self.block_type,
            num_applications=self.num_applications,
            width_multiplier=self.width_multiplier,
            batch_norm=self.batch_norm.to_dict(),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
