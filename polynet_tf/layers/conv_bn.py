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
    normalize_in_training,
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
        # Variables are read as stored (float32 under a mixed policy): inference
        # scales the float32 kernel, then casts it once (`_inference`). The
        # conv and BatchNorm sublayers still autocast their own variables.
        self.autocast = False
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
        elif not training:
            # Inference (`training=None` too, as for BatchNormalization): the
            # BatchNorm is an affine map per channel, see `_inference`.
            x = self._inference(inputs, self.norms[norm_index])
        else:
            x = normalize_in_training(self.norms[norm_index], self.conv(inputs))
        if self.activation:
            x = keras.ops.relu(x)
        return x

    def _inference(self, inputs, norm):
        """`norm(conv(inputs), training=False)`, by the cheaper of two exact rewrites.

        With `s = gamma / sqrt(moving_variance + epsilon)` and
        `b = beta - moving_mean * s` (per output channel):

        - through the kernel: `conv(x, W * s) + b`, the rewrite of
          `polynet_tf.models.fold_batch_norms` done on every call from the
          unchanged variables; on TensorFlow, Grappler fuses the conv, the
          bias and the ReLU into one convolution;
        - on the output: `conv(x, W) * s + b`, one pass over the conv's output.

        Either is cheaper than the BatchNorm layer, whose multiply and add
        (and casts around float32 arithmetic under a mixed policy) are
        separate passes over every conv output. In float32 each unit picks
        the rewrite that moves fewer elements for its shapes
        (`_scales_kernel`). Under a mixed policy every unit goes through the
        kernel, scaled in float32 and cast once to the compute dtype: a mixed
        conv casts its kernel on every call anyway, and low-precision
        element-wise kernels are slow on CPUs. The measurements behind these
        choices are in docs/models.md and docs/benchmarks.md.

        Args:
            inputs: the unit's input, channels last.
            norm: the built `keras.layers.BatchNormalization` to apply.

        Returns:
            The conv output with the BatchNorm applied (no ReLU), in the
            unit's compute dtype.
        """
        # BatchNorm variables are float32 (never autocast); the per-channel
        # scale and bias are computed in float32 like the BatchNorm does.
        scale = keras.ops.rsqrt(
            keras.ops.cast(norm.moving_variance, "float32") + norm.epsilon)
        if norm.scale:
            scale = scale * keras.ops.cast(norm.gamma, "float32")
        bias = -keras.ops.cast(norm.moving_mean, "float32") * scale
        if norm.center:
            bias = bias + keras.ops.cast(norm.beta, "float32")
        dtype = self.compute_dtype
        if dtype != self.variable_dtype or self._scales_kernel(inputs.shape):
            # Inside a network the kernel comes as stored: this layer does not
            # autocast. Called alone, outside any layer, Keras autocasts it all
            # the same; the cast brings it back to the variables' dtype.
            stored = self.variable_dtype
            kernel = keras.ops.cast(self.conv.kernel, stored) * keras.ops.cast(scale, stored)
            x = keras.ops.conv(
                keras.ops.cast(inputs, dtype),
                keras.ops.cast(kernel, dtype),
                strides=self.strides,
                padding=self.padding,
                data_format="channels_last",
            )
        else:
            x = self.conv(inputs) * keras.ops.cast(scale, dtype)
        # `keras.ops.add`, not `+`: on TensorFlow it adds a per-channel vector
        # with a BiasAdd, which Grappler fuses with a conv right before it
        # (the kernel rewrite) and the ReLU after it into one oneDNN
        # convolution; it leaves an AddV2 apart.
        return keras.ops.add(x, keras.ops.cast(bias, dtype))

    def _scales_kernel(self, input_shape):
        """Whether float32 inference applies the BatchNorm through the kernel (else on the output).

        Through the kernel when the kernel has at most as many elements as
        the conv's output: both rewrites are memory-bound passes, one over
        the kernel, the other (multiply, bias, ReLU unfused) over the output.
        The shapes are static, so the choice is made when the graph is
        traced. An unknown batch counts as 1 (a SavedModel's serving
        signature): by this count no unit costs more than the BatchNorm layer
        would, at any batch. Unknown spatial dimensions choose the kernel,
        whose cost does not grow with the input.

        Args:
            input_shape: the unit's input shape, channels last.

        Returns:
            A Python bool.
        """
        input_shape = tuple(input_shape)
        output_shape = self.conv.compute_output_shape(input_shape)
        if output_shape[1] is None or output_shape[2] is None:
            return True
        positions = (output_shape[0] or 1) * output_shape[1] * output_shape[2]
        return self.kernel_size[0] * self.kernel_size[1] * input_shape[-1] <= positions

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
