"""Sublayers kept as numbered attributes instead of Python lists.

Keras 3 tracks layers held in lists for its own saving, but such lists are
invisible to `tf.train.Checkpoint` on the TensorFlow backend: their weights
(BatchNorm statistics included) would silently be missing from training
checkpoints. Each sublayer is therefore an attribute of its own (`bn_0`,
`bn_1`, ...), and a list view is rebuilt on demand.
"""


def set_indexed(owner, prefix, layers):
    """Assigns `layers` to `owner.<prefix>_0`, `<prefix>_1`, ...; returns the count."""
    for index, layer in enumerate(layers):
        setattr(owner, f"{prefix}_{index}", layer)
    return len(layers)


def get_indexed(owner, prefix, count):
    """The list of `owner.<prefix>_0` ... `<prefix>_{count-1}`."""
    return [getattr(owner, f"{prefix}_{index}") for index in range(count)]
