"""Rematerialization shared by the PolyInception modules, the stem and the reductions.

A rematerialized part of the network keeps only its inputs for the backward
pass and computes its activations again there (`keras.remat`). Two things
make that exact for PolyNet, and they live here once:

- the recomputation runs under `frozen_statistics()`: it normalizes with the
  same batch statistics as the forward pass but leaves the BatchNorm moving
  statistics alone, so they move once per training step, not twice;
- only TensorFlow is accepted, with an error that says what to do.
"""

import keras

from polynet_tf.layers.batch_norm import frozen_statistics


def rematerialized_call(function, *inputs):
    """`function(*inputs)` in training, recomputed in the backward pass instead of kept.

    Args:
        function: computes the part from `inputs` (tensors, positional). Any
            randomness must be drawn outside it and passed in as an input: a
            draw made again in the backward pass would differ from the
            forward pass's.
        *inputs: tensors; they are what is kept for the backward pass.

    Returns:
        What `function(*inputs)` returns.

    Raises:
        NotImplementedError: on a backend other than TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        # jax.checkpoint cannot let the BatchNorm statistic updates out
        # (UnexpectedTracerError); inference is unaffected.
        raise NotImplementedError(
            f"Training with `rematerialize=True` needs the TensorFlow backend; the "
            f"backend is {keras.backend.backend()!r}. Build the model with "
            "rematerialize=False (PolyNet option / model.rematerialize) to train on it."
        )
    # One list per call (per trace): the first run of `function` is the
    # forward pass, every later one a recomputation for the gradient.
    forward_done = []

    def forward_then_recompute(*inputs):
        if forward_done:
            with frozen_statistics():
                return function(*inputs)
        forward_done.append(True)
        return function(*inputs)

    return keras.remat(forward_then_recompute)(*inputs)
