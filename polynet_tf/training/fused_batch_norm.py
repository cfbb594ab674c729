"""Training-mode BatchNorm through TensorFlow's fused kernel.

Keras 3's `BatchNormalization` trains through separate ops: the moments (two
reductions), the affine normalization and their gradients, each a pass over
every conv output, and, under a mixed policy, a cast to float32 and back
around them. TensorFlow's `FusedBatchNormV3` does the same arithmetic in one
kernel each way (oneDNN on x86, cuDNN on GPUs) and takes bfloat16 and float16
inputs with float32 statistics. On a 2-core AVX-512 CPU the released
network's training step was 1.10x faster with it in float32 at batch 8 and
1.36x under mixed_bfloat16 (docs/benchmarks.md).

`fused_batch_norm` is the kernel the trainer hands to
`polynet_tf.layers.batch_norm.training_batch_norm_kernel` (see
`training_kernel` for when). It computes what the layer does in training,
outputs, gradients and moving-statistics updates, up to rounding, and
declines (returns None, so the layer runs) where it cannot: synchronized
BatchNorm (its moments are all-reduced across replicas), batch
renormalization, inputs that are not 4D channels-last floats.
"""

import functools

import tensorflow as tf

_FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)
# tf.compat.v1.nn.fused_batch_norm raises smaller epsilons to this (cuDNN's
# minimum); passed as it is to the op, 1e-5 stays 1e-5 on the CPU.
_CUDNN_MIN_EPSILON = 1.001e-5


def fused_batch_norm(norm, inputs, update_statistics):
    """What `norm(inputs, training=True)` computes, by `FusedBatchNormV3`.

    Args:
        norm: a built, channels-last `keras.layers.BatchNormalization`.
        inputs: the tensor to normalize.
        update_statistics: whether to update `norm`'s moving mean and
            variance as the layer does (with the biased batch variance).

    Returns:
        The normalized tensor in `norm`'s compute dtype, or None where the
        fused kernel does not apply (the caller then calls the layer).
    """
    inputs = tf.convert_to_tensor(inputs)
    if (norm.synchronized or getattr(norm, "renorm", False) or inputs.shape.rank != 4
            or norm.axis not in (-1, 3) or inputs.dtype not in _FUSED_DTYPES):
        return None
    channels = inputs.shape[-1]
    scale = (tf.cast(norm.gamma, tf.float32) if norm.scale
             else tf.ones([channels], tf.float32))
    offset = (tf.cast(norm.beta, tf.float32) if norm.center
              else tf.zeros([channels], tf.float32))
    epsilon = max(norm.epsilon, _CUDNN_MIN_EPSILON) if _has_gpu() else norm.epsilon
    outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=scale, offset=offset,
        mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
        epsilon=epsilon, data_format="NHWC", is_training=True)
    if update_statistics:
        # The kernel returns the unbiased variance (n - 1 in the denominator);
        # Keras averages the biased one. multiply_no_nan: with one value per
        # channel the unbiased variance is undefined and the biased one 0.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = tf.math.multiply_no_nan(variance, (count - 1.0) / count)
        momentum = norm.momentum
        norm.moving_mean.assign(
            norm.moving_mean * momentum + mean * (1.0 - momentum))
        norm.moving_variance.assign(
            norm.moving_variance * momentum + variance * (1.0 - momentum))
    return tf.cast(outputs, norm.compute_dtype)


@functools.cache
def _has_gpu():
    """Whether TensorFlow sees a GPU; fixed once its runtime has started.

    Asked once, not at each of the network's 537 BatchNorms per trace.
    """
    return any(device.device_type == "GPU" for device in tf.config.list_logical_devices())


def training_kernel(batch_norm_kernel):
    """The kernel the trainer hands to the layers (None: Keras's layer).

    Args:
        batch_norm_kernel: `trainer.batch_norm_kernel`, "fused" or "keras".

    Returns:
        `fused_batch_norm` or None.

    Raises:
        ValueError: an unknown `batch_norm_kernel`.
    """
    if batch_norm_kernel not in ("fused", "keras"):
        raise ValueError("`trainer.batch_norm_kernel` must be 'fused' or 'keras'. "
                         f"Received: {batch_norm_kernel!r}")
    return fused_batch_norm if batch_norm_kernel == "fused" else None
