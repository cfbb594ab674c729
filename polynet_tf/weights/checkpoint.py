"""Reading PyTorch checkpoints without torch, hashing files, writing weights atomically.

Checkpoints are read by `polynet_tf.weights.torch_format` (standard library
and NumPy only): tensors in dicts, never arbitrary pickled objects, as
`torch.load(..., weights_only=True)` reads them. All paths are read and
written through `tf.io.gfile`, so they may be URIs (`gs://...`).
"""

import hashlib
import os
import posixpath
import tempfile
import zipfile

import numpy as np
import tensorflow as tf

from polynet_tf import fileio
from polynet_tf.weights.torch_format import CheckpointError, load_state_dict

__all__ = ["CheckpointError", "extract_single_pth", "file_digest", "hash_matches",
           "read_checkpoint", "save_weights_atomically"]


def read_checkpoint(path):
    """Loads a PyTorch state dict as numpy arrays, in checkpoint order, without torch.

    A `.zip` file holding exactly one `.pth` (how pytorchcv publishes its
    weights) is opened too.

    Args:
        path: a `.pth` file (a state dict saved by `torch.save`, zip or legacy
            format) or such a `.zip`; a path or URI.

    Returns:
        dict of key -> numpy array (floating-point tensors as float32).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: empty, truncated, corrupt, or not a flat state dict of
            tensors (including pickles of arbitrary objects, which are refused
            without being run: `UnsafeCheckpointError`).
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    if path.endswith(".zip"):
        with tempfile.TemporaryDirectory(prefix="polynet-ckpt-") as folder:
            return read_checkpoint(extract_single_pth(path, folder))
    try:
        state = load_state_dict(path)
    except CheckpointError as error:
        raise type(error)(
            f"Cannot read the PyTorch checkpoint: {error}. If the file was downloaded, "
            "download it again; only state dicts saved by torch.save are read "
            "(weights_only=True: tensors in dicts, nothing else)."
        ) from error
    if not state:
        raise CheckpointError(f"{path} holds an empty state dict.")
    # copy=False: float32 tensors (all of the published files) keep their buffers.
    return {key: value.astype(np.float32, copy=False) if np.issubdtype(value.dtype, np.floating)
            or value.dtype.name == "bfloat16" else value for key, value in state.items()}


def extract_single_pth(path, folder):
    """Extracts the only `.pth` member of a zip file into `folder`; returns its path."""
    try:
        with tf.io.gfile.GFile(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
            members = [name for name in archive.namelist() if name.endswith(".pth")]
            if len(members) != 1:
                raise CheckpointError(
                    f"{path} should hold exactly one .pth file; it holds {members or 'none'}."
                )
            member = members[0]
            target = fileio.join(folder, posixpath.basename(member))
            with archive.open(member) as src, tf.io.gfile.GFile(target, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    dst.write(chunk)
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path} is not a valid zip file (truncated?): {error}") from error
    return target


def file_digest(path, algorithm):
    """Hex digest of a file ("sha1", "sha256", ...), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with tf.io.gfile.GFile(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def hash_matches(path, algorithm, expected):
    """Whether the file's hex digest equals `expected`, or starts with it (a prefix)."""
    return file_digest(path, algorithm).startswith(expected.lower())


def save_weights_atomically(model, path):
    """`model.save_weights(path)` through a temporary file and a rename.

    A reader never sees a half-written file, and a failure leaves nothing
    behind.

    Args:
        model: a Keras model.
        path: destination, ending in `.weights.h5`.

    Returns:
        The destination path.

    Raises:
        ValueError: the path does not end in `.weights.h5`.
    """
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise ValueError(
            f"The output file name must end in `.weights.h5`. Received: {path}"
        )
    # A hidden temporary beside `path` (or a local scratch file for a URI),
    # renamed when complete; deleted if saving fails.
    with fileio.local_file_for_writing(path) as local:
        model.save_weights(local, overwrite=True)
    return path
