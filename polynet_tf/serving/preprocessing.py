"""In-graph decoding and preprocessing of the serving signatures.

Request images are decoded whole (any size, JPEG, PNG, GIF or BMP), checked
(an empty string, bytes that are not an image, or an image the decoder
rejects, such as a truncated JPEG, stop the request with an
`InvalidArgumentError` naming the position in the batch: `check_encoded_batch`), then cut and
normalised as the model's `InputContract` says (`polynet_tf.data.input_contract`:
the evaluator's crop of its one-crop protocol, its mean and standard deviation).
"""

import tensorflow as tf

from polynet_tf.evaluation import protocols

# First bytes of the formats `tf.io.decode_image` reads.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GIF_SIGNATURE = b"GIF8"
_BMP_SIGNATURE = b"BM"
SUPPORTED_FORMATS = "JPEG, PNG, GIF or BMP"


def decode_checked(image_bytes: tf.Tensor, position: tf.Tensor,
                   signature_name: str) -> tf.Tensor:
    """Decodes one encoded image after checking it is one.

    Args:
      image_bytes: scalar string tensor.
      position: scalar int tensor, the image's index in the request batch
        (quoted in the error).
      signature_name: quoted in the error.

    Returns:
      uint8 `[height, width, 3]`.

    Raises:
      tf.errors.InvalidArgumentError (when run): empty string, or bytes that
        start like none of the supported formats.
    """
    not_empty = tf.debugging.Assert(
        tf.strings.length(image_bytes) > 0,
        [f"{signature_name}: the image at this batch position is an empty string; "
         f"send the bytes of an encoded {SUPPORTED_FORMATS} file. Position:", position],
    )
    header = tf.strings.substr(image_bytes, 0, 8)
    known_format = tf.reduce_any(tf.stack([
        tf.io.is_jpeg(image_bytes),
        tf.equal(header, _PNG_SIGNATURE),
        tf.equal(tf.strings.substr(header, 0, 4), _GIF_SIGNATURE),
        tf.equal(tf.strings.substr(header, 0, 2), _BMP_SIGNATURE),
    ]))
    is_image = tf.debugging.Assert(
        known_format,
        [f"{signature_name}: the bytes at this batch position are not an encoded "
         f"{SUPPORTED_FORMATS} image (REST clients: base64 in {{\"b64\": ...}}, "
         "not raw pixels). Position:", position],
    )
    with tf.control_dependencies([not_empty, is_image]):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _first_false(ok: tf.Tensor) -> tf.Tensor:
    """Index of the first False in the bool vector `ok` (its size when all are True)."""
    bad = tf.where(tf.logical_not(ok))[:, 0]
    return tf.concat([bad, tf.size(ok, out_type=tf.int64)[None]], axis=0)[0]


def _known_format(image_bytes: tf.Tensor) -> tf.Tensor:
    """Elementwise: whether each string starts like a supported format."""
    return tf.reduce_any(tf.stack([
        tf.equal(tf.strings.substr(image_bytes, 0, 3), b"\xff\xd8\xff"),  # tf.io.is_jpeg
        tf.equal(tf.strings.substr(image_bytes, 0, 8), _PNG_SIGNATURE),
        tf.equal(tf.strings.substr(image_bytes, 0, 4), _GIF_SIGNATURE),
        tf.equal(tf.strings.substr(image_bytes, 0, 2), _BMP_SIGNATURE),
    ]), axis=0)


def _decodable(image_bytes: tf.Tensor) -> tf.Tensor:
    """Elementwise: whether the decoder reads each image.

    A decoder error (truncated JPEG, corrupt GIF) cannot be caught inside a
    graph, but a `tf.data` pipeline can leave failing elements out
    (`ignore_errors`): the positions that remain are the readable ones.
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    positions = tf.range(count)

    def decode(data, position):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        # A value of the pixels (not only a control dependency, which graph
        # optimisations may drop): the decoding cannot be skipped.
        return position, tf.reduce_min(image) >= 0

    readable = tf.data.Dataset.from_tensor_slices((image_bytes, positions)).map(
        decode).ignore_errors()
    return readable.reduce(
        tf.zeros([count], tf.bool),
        lambda seen, item: tf.tensor_scatter_nd_update(seen, item[0][None, None],
                                                       item[1][None]))


def check_encoded_batch(image_bytes: tf.Tensor, signature_name: str) -> tf.Operation:
    """Checks a batch of encoded images; the error names the first bad position.

    Args:
      image_bytes: string `[batch]`.
      signature_name: quoted in the error.

    Returns:
      An op that passes when every image is a non-empty, supported and
      decodable image; run the decoding after it (control dependency).

    Raises:
      tf.errors.InvalidArgumentError (when run): an empty string, bytes of no
        supported format, or an image the decoder rejects (truncated or
        corrupt); the message names the signature and the batch position.
    """
    image_bytes = tf.reshape(image_bytes, [-1])
    not_empty = tf.strings.length(image_bytes) > 0
    empty = tf.debugging.Assert(tf.reduce_all(not_empty), [
        f"{signature_name}: the image at this batch position is an empty string; send the "
        f"bytes of an encoded {SUPPORTED_FORMATS} file. Position:", _first_false(not_empty)])
    with tf.control_dependencies([empty]):
        known = _known_format(image_bytes)
        unknown = tf.debugging.Assert(tf.reduce_all(known), [
            f"{signature_name}: the bytes at this batch position are not an encoded "
            f"{SUPPORTED_FORMATS} image (REST clients: base64 in {{\"b64\": ...}}, not raw "
            "pixels). Position:", _first_false(known)])
    with tf.control_dependencies([unknown]):
        readable = _decodable(image_bytes)
        return tf.debugging.Assert(tf.reduce_all(readable), [
            f"{signature_name}: the image at this batch position cannot be decoded (a "
            f"truncated or corrupt {SUPPORTED_FORMATS} file). Position:",
            _first_false(readable)])


def single_crop(image: tf.Tensor, protocol: protocols.CropProtocol) -> tf.Tensor:
    """The evaluator's crop of one decoded image: float32 `[crop, crop, 3]` in [0, 255]."""
    return protocols.make_crops(image, protocol)[0]
