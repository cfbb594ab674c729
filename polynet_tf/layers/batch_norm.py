"""BatchNormalization settings shared by every unit of a network."""

import contextlib
import dataclasses
import threading

import keras


@dataclasses.dataclass(frozen=True)
class BatchNormSettings:
    """How every BatchNormalization of a network is made.

    Attributes:
        epsilon: added to the variance; 1e-5 in the released network (Caffe /
            PyTorch default), which the converted weights need.
        momentum: Keras momentum of the moving statistics (PyTorch's
            momentum 0.1 is Keras's 0.9).
        synchronized: average batch statistics across replicas
            (`tf.distribute`; TensorFlow backend only). The paper keeps them
            per GPU, so the default is False.
        folded: an inference network whose BatchNorms are folded into the
            convolutions (a conv with bias per BatchNorm, see
            `polynet_tf.models.fold_batch_norms`); it has no BatchNorm layers.
    """

    epsilon: float = 1e-5
    momentum: float = 0.99
    synchronized: bool = False
    folded: bool = False

    def __post_init__(self):
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(
                f"`bn_epsilon` must be in (0, 1). Received: bn_epsilon={self.epsilon}"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(
                f"`bn_momentum` must be in [0, 1). Received: bn_momentum={self.momentum}"
            )

    @classmethod
    def from_value(cls, value):
        """Accepts None (defaults), a `BatchNormSettings` or its dict form."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"Unknown batch norm settings: {sorted(unknown)}")
            return cls(**value)
        raise TypeError(
            "`batch_norm` must be None, a dict or a BatchNormSettings. "
            f"Received: {value!r}"
        )

    def to_dict(self):
        return dataclasses.asdict(self)


def make_batch_norm(settings, name, dtype=None):
    """A channels-last `keras.layers.BatchNormalization` made from `settings`."""
    kwargs = {}
    if settings.synchronized:
        # Only passed when asked for: the argument is TensorFlow-only.
        kwargs["synchronized"] = True
    return keras.layers.BatchNormalization(
        axis=-1,
        epsilon=settings.epsilon,
        momentum=settings.momentum,
        name=name,
        dtype=dtype,
        **kwargs,
    )


# Per thread: MirroredStrategy traces each replica's step in its own thread.
_FROZEN = threading.local()


@contextlib.contextmanager
def frozen_statistics():
    """BatchNorms of `ConvBN` units called inside leave their moving statistics alone.

    In training they still normalize with the batch statistics, so the output
    is what a normal training call computes. Rematerialization
    (`polynet_tf.layers.remat`) recomputes a module, a stem segment or a
    reduction in the backward pass under this scope: the statistics are then
    updated once per step (by the forward pass), not twice.

    Yields:
        None.
    """
    with _thread_scope(_FROZEN, True):
        yield


def statistics_frozen():
    """Whether the current thread is inside `frozen_statistics()`."""
    return bool(getattr(_FROZEN, "value", False))


# Per thread too: each replica's step enters the scope in its own thread.
_KERNEL = threading.local()


@contextlib.contextmanager
def training_batch_norm_kernel(kernel):
    """`ConvBN` units called inside compute training-mode BatchNorm with `kernel`.

    The layers stay backend-neutral: a backend-specific implementation (the
    training loop's fused TensorFlow kernel,
    `polynet_tf.training.fused_batch_norm`) is handed in here, for the
    thread that traces the step, and `normalize_in_training` uses it where it
    applies.

    Args:
        kernel: None for Keras's layer, or a callable `kernel(norm, inputs,
            update_statistics)`. It returns what `norm(inputs, training=True)`
            returns, updating `norm`'s moving statistics as the layer does
            when `update_statistics` is true; it returns None where it does
            not apply, and the layer is then called.

    Yields:
        None.
    """
    with _thread_scope(_KERNEL, kernel):
        yield


@contextlib.contextmanager
def _thread_scope(local, value):
    """Sets `local.value` for the current thread, and restores it on leaving."""
    previous = getattr(local, "value", None)
    local.value = value
    try:
        yield
    finally:
        local.value = previous


def normalize_in_training(norm, inputs):
    """A `ConvBN` unit's BatchNorm in training.

    With the scope's kernel (`training_batch_norm_kernel`) where it applies,
    else Keras's layer; inside `frozen_statistics()` the moving statistics are
    left alone either way. A BatchNorm that is not trainable normalizes with
    its moving statistics, as Keras's layer does.

    Args:
        norm: a built, channels-last `keras.layers.BatchNormalization`.
        inputs: the conv output, a 4D tensor.

    Returns:
        The normalized tensor in `norm`'s compute dtype.
    """
    if not norm.trainable:
        return norm(inputs, training=True)
    update_statistics = not statistics_frozen()
    kernel = getattr(_KERNEL, "value", None)
    if kernel is not None:
        outputs = kernel(norm, inputs, update_statistics)
        if outputs is not None:
            return outputs
    if update_statistics:
        return norm(inputs, training=True)
    return normalize_with_batch_statistics(norm, inputs)


def normalize_with_batch_statistics(norm, inputs):
    """What `norm(inputs, training=True)` returns, without updating `norm`'s moving statistics.

    Mirrors `keras.layers.BatchNormalization.call` in training (float32
    arithmetic for low-precision inputs, synchronized moments when asked).

    Args:
        norm: a built, channels-last `keras.layers.BatchNormalization`.
        inputs: a 4D tensor.

    Returns:
        The normalized tensor in `norm`'s compute dtype.
    """
    compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
    inputs = keras.ops.cast(inputs, compute_dtype)
    mean, variance = keras.ops.moments(
        inputs, axes=list(range(len(inputs.shape) - 1)), synchronized=norm.synchronized
    )
    outputs = keras.ops.batch_normalization(
        inputs,
        mean,
        variance,
        axis=-1,
        offset=keras.ops.cast(norm.beta, compute_dtype) if norm.center else None,
        scale=keras.ops.cast(norm.gamma, compute_dtype) if norm.scale else None,
        epsilon=norm.epsilon,
    )
    return keras.ops.cast(outputs, norm.compute_dtype)
