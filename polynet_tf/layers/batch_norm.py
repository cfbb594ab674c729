"""BatchNormalization settings shared by every unit of a network."""

import dataclasses

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
    """

    epsilon: float = 1e-5
    momentum: float = 0.99
    synchronized: bool = False

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
