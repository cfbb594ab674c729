"""Parallel Inception branches concatenated on the channel axis.

Each branch is a sequence of operations given as data, so the stem, the
reductions and the residual blocks of docs/design.md section 1 are written as tables
that read like the paper's figures:

    {"op": "conv", "filters": 64, "kernel_size": (7, 1)}          # stride 1, same
    {"op": "conv", "filters": 96, "kernel_size": 3, "padding": "valid"}
    {"op": "conv", "filters": 384, "kernel_size": 3, "strides": 2, "padding": "valid"}
    {"op": "maxpool"}                                              # 3x3 / 2, valid
"""

import keras

from polynet_tf.layers.batch_norm import BatchNormSettings
from polynet_tf.layers.conv_bn import ConvBN
from polynet_tf.layers.indexed import get_indexed, set_indexed

_CONV_KEYS = {"op", "filters", "kernel_size", "strides", "padding"}


def conv(filters, kernel_size, strides=1, padding="same"):
    """The spec of one conv-BN-ReLU unit inside a branch."""
    return {
        "op": "conv",
        "filters": int(filters),
        "kernel_size": kernel_size,
        "strides": strides,
        "padding": padding,
    }


def maxpool():
    """The spec of the 3x3 stride-2 unpadded max pool used throughout."""
    return {"op": "maxpool"}


def scale_channels(channels, width_multiplier):
    """Channel count scaled by the width multiplier, at least 1."""
    return max(1, int(round(channels * width_multiplier)))


@keras.saving.register_keras_serializable(package="polynet_tf")
class BranchConcat(keras.layers.Layer):
    """Runs branches of conv units / max pools on one input and concatenates them.

    Args:
        branches: a list of branches, each a list of op specs (see module
            docstring); branch outputs are concatenated in this order.
        num_norms: BatchNorms per conv (see `ConvBN`); `call` selects one with
            `norm_index`.
        batch_norm: `BatchNormSettings` or its dict form.
        kernel_initializer: conv kernel initializer.
        **kwargs: base layer arguments.
    """

    def __init__(
        self,
        branches,
        num_norms=1,
        batch_norm=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.branches = [[dict(op) for op in branch] for branch in branches]
        if not self.branches or any(not branch for branch in self.branches):
            raise ValueError(f"Every branch needs at least one op. Received: {branches}")
        self.num_norms = int(num_norms)
        self.batch_norm = BatchNormSettings.from_value(batch_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        ops, self._branch_slices = [], []
        for b, branch in enumerate(self.branches):
            start = len(ops)
            for i, spec in enumerate(branch):
                ops.append(self._make_op(spec, name=f"branch{b}_{spec['op']}{i}"))
            self._branch_slices.append((start, len(ops)))
        self._num_ops = set_indexed(self, "op", ops)

    @property
    def ops(self):
        """Every conv unit / pool, branch by branch, in order."""
        return get_indexed(self, "op", self._num_ops)

    def _make_op(self, spec, name):
        if spec["op"] == "maxpool":
            return keras.layers.MaxPooling2D(
                pool_size=3, strides=2, padding="valid", data_format="channels_last",
                dtype=self.dtype_policy, name=name,
            )
        if spec["op"] != "conv" or not set(spec) <= _CONV_KEYS:
            raise ValueError(f"Unknown branch op spec: {spec}")
        return ConvBN(
            spec["filters"],
            spec["kernel_size"],
            strides=spec.get("strides", 1),
            padding=spec.get("padding", "same"),
            num_norms=self.num_norms,
            batch_norm=self.batch_norm,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _branch_ops(self):
        ops = self.ops
        return [ops[start:stop] for start, stop in self._branch_slices]

    def build(self, input_shape):
        for branch in self._branch_ops():
            shape = input_shape
            for op in branch:
                op.build(shape)
                shape = op.compute_output_shape(shape)
        self.built = True

    def call(self, inputs, norm_index=0, training=None):
        outputs = []
        for branch in self._branch_ops():
            x = inputs
            for op in branch:
                if isinstance(op, ConvBN):
                    x = op(x, norm_index=norm_index, training=training)
                else:
                    x = op(x)
            outputs.append(x)
        if len(outputs) == 1:
            return outputs[0]
        return keras.ops.concatenate(outputs, axis=-1)

    def compute_output_shape(self, input_shape):
        channels = 0
        for branch in self._branch_ops():
            shape = input_shape
            for op in branch:
                shape = op.compute_output_shape(shape)
            channels += shape[-1]
        return tuple(shape[:-1]) + (channels,)

    def get_config(self):
        config = super().get_config()
        config.update(
            branches=self.branches,
            num_norms=self.num_norms,
            batch_norm=self.batch_norm.to_dict(),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
