"""Pooling crop scores into one score per image: plain mean or per-scale top-k.

Re-exported by `polynet_tf.evaluation.protocols`.
"""

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:  # Annotations only.
    from polynet_tf.data.protocols import CropProtocol


def pool_scores(scores, protocol: "CropProtocol") -> tf.Tensor:
    """Pools crop scores into one score per image and class.

    Args:
      scores: `[batch, num_crops, classes]` (softmax probabilities), crops
        in the protocol's crop order.
      protocol: the `CropProtocol`.

    Returns:
      float32 `[batch, classes]`: for "topk" pooling, per scale and class the
      mean of the `protocol.topk` best crop scores, then the mean over scales;
      for "mean" pooling the mean over all crops.

    Raises:
      ValueError: if the crop axis does not have `protocol.num_crops` entries.
    """
    scores = tf.convert_to_tensor(scores, dtype=tf.float32)
    scores.shape.assert_has_rank(3)
    if scores.shape[1] is not None and scores.shape[1] != protocol.num_crops:
        raise ValueError(
            f"scores have {scores.shape[1]} crops per image, protocol {protocol.name!r} "
            f"makes {protocol.num_crops}.")
    if protocol.pooling == "mean" or protocol.topk == protocol.crops_per_scale:
        return tf.reduce_mean(scores, axis=1)
    batch, classes = tf.shape(scores)[0], tf.shape(scores)[2]
    per_scale = tf.reshape(scores, [batch, protocol.num_scales, protocol.crops_per_scale,
                                    classes])
    # top_k works on the last axis: put the crops there.
    best = tf.math.top_k(tf.transpose(per_scale, [0, 1, 3, 2]), k=protocol.topk).values
    return tf.reduce_mean(tf.reduce_mean(best, axis=-1), axis=1)
