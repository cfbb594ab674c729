"""`ModelOptions`: the one schema of PolyNet's keyword options.

`PolyNet(**options)`, the experiment configuration's `model` section
(`polynet_tf.configs.ModelConfig`, which extends this class with the
architecture and the number of classes) and `polynet_tf.models.build_model`
all read these fields, their defaults and their validation from here.
"""

import dataclasses
from typing import Any, Optional


@dataclasses.dataclass
class ModelOptions:
    """Options of `PolyNet()` beyond the architecture and the head.

    Attributes:
        width_multiplier: scales every channel count.
        residual_scale: float, {"start", "end"[, "decimals"]} schedule or a
            per-module list; None: the architecture's own schedule.
        drop_path_rate: float r (linear 0 -> r from the bottom module to the
            top), a schedule or a per-module list.
        dropout_rate: dropout before the classifier, in [0, 1).
        bn_epsilon: BatchNorm epsilon.
        bn_momentum: BatchNorm moving-average momentum.
        synchronized_batch_norm: statistics over all replicas.
        kernel_initializer: Keras initializer of every convolution and dense.
        seed: seed of the stochastic-path masks (None: random).
        path_gates: a trainable scalar per path (function-preserving growth).
        rematerialize: recompute each PolyInception module, the stem and
            both reductions in the backward pass instead of keeping their
            activations (less memory; TensorFlow backend for training).
    """

    width_multiplier: float = 1.0
    residual_scale: Any = None
    drop_path_rate: Any = 0.0
    dropout_rate: float = 0.2
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.99
    synchronized_batch_norm: bool = False
    kernel_initializer: str = "glorot_uniform"
    seed: Optional[int] = None
    path_gates: bool = False
    rematerialize: bool = False

    @classmethod
    def field_names(cls):
        """Names of the options, in declaration order."""
        return tuple(field.name for field in dataclasses.fields(ModelOptions))

    @classmethod
    def from_kwargs(cls, options, caller="PolyNet"):
        """Options from keyword arguments, validated.

        Args:
            options: a mapping of option names to values.
            caller: named in the error message.

        Returns:
            A `ModelOptions`.

        Raises:
            TypeError: an unknown option, naming it and the known ones.
            ValueError: an invalid value, naming the option.
        """
        unknown = sorted(set(options) - set(cls.field_names()))
        if unknown:
            raise TypeError(
                f"Unrecognized keyword arguments passed to {caller}: {unknown}. "
                f"Supported options: {sorted(cls.field_names())}"
            )
        return ModelOptions(**options).validate()

    @classmethod
    def of(cls, config):
        """The option fields of a `ModelConfig` (or any object that has them), validated."""
        return ModelOptions(**{name: getattr(config, name) for name in cls.field_names()
                               if hasattr(config, name)}).validate()

    def as_kwargs(self):
        """The options as `PolyNet()` keyword arguments."""
        return {name: getattr(self, name) for name in ModelOptions.field_names()}

    def validate(self):
        """Checks the values; returns self.

        Raises:
            ValueError: naming the option and the value received.
        """
        width = self.width_multiplier
        if not isinstance(width, (int, float)) or isinstance(width, bool) or width <= 0:
            raise ValueError(
                "`width_multiplier` must be a positive number. Received: "
                f"width_multiplier={width!r}")
        if (isinstance(self.dropout_rate, bool) or not isinstance(self.dropout_rate, (int, float))
                or not 0.0 <= self.dropout_rate < 1.0):
            raise ValueError(
                f"`dropout_rate` must be in [0, 1). Received: dropout_rate={self.dropout_rate!r}")
        return self
