"""Reading PyTorch checkpoints safely, hashing files, writing weights atomically.

torch is an optional dependency (`pip install "polynet-tf[convert]"`), imported
only inside these functions. Checkpoints are read with
`torch.load(..., weights_only=True)`: tensors and plain containers only, never
arbitrary pickled objects.
"""

import hashlib
import os
import shutil
import tempfile
import uuid
import zipfile

TORCH_INSTALL_HINT = 'pip install "polynet-tf[convert]"  (or: pip install torch)'


class CheckpointError(ValueError):
    """A file that is not a readable PyTorch state dict (truncated, wrong type, ...)."""


def import_torch():
    """Imports torch, or raises ImportError saying how to install it."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as error:
        raise ImportError(
            "Reading PyTorch checkpoints needs torch, which is an optional "
            f"dependency: {TORCH_INSTALL_HINT}. Original error: {error}"
        ) from error
    return torch


def read_checkpoint(path):
    """Loads a PyTorch state dict as numpy arrays, in checkpoint order.

    A `.zip` file holding exactly one `.pth` (how pytorchcv publishes its
    weights) is opened too.

    Args:
        path: a `.pth` file (a state dict saved by `torch.save`) or such a
            `.zip`.

    Returns:
        dict of key -> numpy array (float tensors as float32).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, truncated, or not a flat state dict of
            tensors (including pickles of arbitrary objects, which are refused).
        ImportError: torch is not installed.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checkpoint file not found: {path}")
    if path.endswith(".zip"):
        with tempfile.TemporaryDirectory(prefix="polynet-ckpt-") as folder:
            return read_checkpoint(extract_single_pth(path, folder))
    torch = import_torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError...
        raise CheckpointError(
            f"Cannot read the PyTorch checkpoint {path}: {type(error).__name__}: {error}. "
            "The file may be truncated or corrupted (download it again), or not a state "
            "dict saved by torch.save (objects other than tensors are refused: "
            "weights_only=True)."
        ) from error
    if not isinstance(state, dict) or not state:
        raise CheckpointError(
            f"{path} holds a {type(state).__name__}, not a state dict "
            "(a mapping of names to tensors)."
        )
    arrays = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "expected a flat state dict (model.state_dict())."
            )
        if value.is_floating_point():
            value = value.detach().to(torch.float32)
        arrays[key] = value.cpu().numpy()
    return arrays


def extract_single_pth(path, folder):
    """Extracts the only `.pth` member of a zip file into `folder`; returns its path."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [name for name in archive.namelist() if name.endswith(".pth")]
            if len(members) != 1:
                raise CheckpointError(
                    f"{path} should hold exactly one .pth file; it holds {members or 'none'}."
                )
            member = members[0]
            target = os.path.join(folder, os.path.basename(member))
            with archive.open(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except zipfile.BadZipFile as error:
        raise CheckpointError(f"{path} is not a valid zip file (truncated?): {error}") from error
    return target


def file_digest(path, algorithm):
    """Hex digest of a file ("sha1", "sha256", ...), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
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
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # Same folder (so the rename is atomic), hidden, unique; created by h5py
    # with the usual permissions.
    temporary = os.path.join(
        folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp.weights.h5"
    )
    try:
        model.save_weights(temporary, overwrite=True)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path

