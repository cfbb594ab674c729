"""The conv-BN-ReLU unit every PolyNet convolution is made of.

docs/design.md section 1: every "conv" is Conv2D without bias -> BatchNorm(epsilon=1e-5)
-> ReLU, unless marked *no ReLU*. The released poly-3 modules share a conv
between the three applications of their block but give each application its
own BatchNorm, so one unit may hold several BatchNorms (`num_norms`) and is
called with the index of the one to use.
"""

import keras

from polynet_tf.layers.batch_norm import (
    BatchNormSettings,
    make_batch_norm,
    normalize_with_batch_statistics,
    statistics_frozen,
)
from polynet_tf.layers.indexed import get_indexed, set_indexed


@keras.saving.register_keras_serializable(package="polynet_tf")
class ConvBN(keras.layers.Layer):
    """Conv2D (no bias) -> BatchNormalization -> optional ReLU.

    Args:
        filters: number of output channels.
        kernel_size: int or (height, width).
        strides: int or (height, width).
        padding: "same" (symmetric for the odd kernels used here) or "valid".
        activation: whether a ReLU follows the BatchNorm.
        num_norms: number of BatchNorms sharing this conv; `call` picks one
            with `norm_index`.
        batch_norm: `BatchNormSettings` or its dict form.
        kernel_initializer: initializer of the conv kernel (the paper uses
            Xavier/Glorot).
        **kwargs: base `keras.layers.Layer` arguments (name, dtype, ...).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        activation=True,
        num_norms=1,
        batch_norm=None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if padding not in ("same", "valid"):
            raise ValueError(
                f"`padding` must be 'same' or 'valid'. Received: padding={padding!r}"
            )
        if int(num_norms) < 1:
            raise ValueError(f"`num_norms` must be >= 1. Received: num_norms={num_norms}")
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.strides = _pair(strides)
        self.padding = padding
        self.activation = bool(activation)
        self.num_norms = int(num_norms)
        self.batch_norm = BatchNormSettings.from_value(batch_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if self.batch_norm.folded:
            # Inference form: each BatchNorm folded into a copy of the conv
            # (kernel * s, bias beta - mean * s); see models.fold_batch_norms.
            self.conv = None
            set_indexed(self, "conv", [
                self._make_conv(True, "conv" if self.num_norms == 1 else f"conv_{i}")
                for i in range(self.num_norms)
            ])
            return
        self.conv = self._make_conv(False, "conv")
        set_indexed(self, "norm", [
            make_batch_norm(
                self.batch_norm,
                name="bn" if self.num_norms == 1 else f"bn_{i}",
                dtype=self.dtype_policy,
            )
            for i in range(self.num_norms)
        ])

    def _make_conv(self, use_bias, name):
        return keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            use_bias=use_bias,
            data_format="channels_last",
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    @property
    def norms(self):
        """The BatchNorms sharing this conv, in application order (none when folded)."""
        return [] if self.batch_norm.folded else get_indexed(self, "norm", self.num_norms)

    @property
    def folded_convs(self):
        """The convs with bias of a folded unit, one per BatchNorm it replaces."""
        if not self.batch_norm.folded:
            raise ValueError(f"ConvBN {self.name!r} is not folded; it has one conv, `conv`.")
        return get_indexed(self, "conv", self.num_norms)

    def build(self, input_shape):
        if self.batch_norm.folded:
            for conv in self.folded_convs:
                conv.build(input_shape)
            self.built = True
            return
        self.conv.build(input_shape)
        conv_shape = self.conv.compute_output_shape(input_shape)
        for norm in self.norms:
            norm.build(conv_shape)
        self.built = True

    def call(self, inputs, norm_index=0, training=None):
        if self.batch_norm.folded:
            x = self.folded_convs[norm_index](inputs)
        else:
            x = self.conv(inputs)
            norm = self.norms[norm_index]
            if training and norm.trainable and statistics_frozen():
                x = normalize_with_batch_statistics(norm, x)
            else:
                x = norm(x, training=training)
        if self.activation:
            x = keras.ops.relu(x)
        return x

    def compute_output_shape(self, input_shape):
        conv = self.folded_convs[0] if self.batch_norm.folded else self.conv
        return conv.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            activation=self.activation,
            num_norms=self.num_norms,
            batch_norm=self.batch_norm.to_dict(),
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def _pair(value):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"Expected an int or a pair of ints. Received: {value}")
    return value
