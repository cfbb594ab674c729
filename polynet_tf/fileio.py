"""Files on any TensorFlow filesystem: local paths, `file://`, `gs://`, `hdfs://`, `ram://`.

Every path a user gives (`--model_dir`, `--output`, data patterns, ...) is a
URI read and written through `tf.io.gfile`; Python's `open`, `os.path`,
`shutil` and `glob` only know local paths. URIs are joined with
`posixpath.join` (`/`-separated on every filesystem); `os.path.abspath` is
never applied to them (it turns `gs://b/x` into `/cwd/gs:/b/x`).

Nothing half-written is taken for a finished file. Every output is written
under a temporary name beside its final one (`.tmp-<pid>-<random>-<name>`:
hidden, and matched by no reader's pattern) and renamed last:

* A file: a rename is atomic on POSIX file systems and HDFS. On object stores
  (GCS, S3) `tf.io.gfile.rename` copies the object and deletes the source;
  an object becomes visible only once its copy is complete, so the final
  name still appears whole or not at all.
* A directory (a SavedModel version): one atomic `rename(2)` on local file
  systems and HDFS. Elsewhere a directory rename is a copy, object by object,
  so `move_into_place` moves the files one at a time and the `last` ones
  (`saved_model.pb`: what makes a directory a SavedModel) after all others;
  until then the directory is not a loadable SavedModel.

Keras writes `.weights.h5`/`.keras` files with h5py, which needs a local
path: `local_file_for_writing` / `local_file_for_reading` stage such files on
the local disk and copy them through `tf.io.gfile`.
"""

import contextlib
import io
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import Any, Iterator, List, Sequence

import tensorflow as tf

# Filesystems whose rename (of a file or a whole directory) is one atomic step.
_ATOMIC_RENAME_SCHEMES = ("", "file", "hdfs", "viewfs")
TEMPORARY_PREFIX = ".tmp-"

join = posixpath.join


def scheme(path: str) -> str:
    """The URI scheme of `path` ("gs", "file", ...); "" for a plain local path."""
    head, separator, _ = str(path).partition("://")
    return head.lower() if separator and "/" not in head else ""


def is_local(path: str) -> bool:
    """True for a plain local path (no scheme): one that `open` and h5py accept."""
    return scheme(path) == ""


def has_atomic_rename(path: str) -> bool:
    """True where renaming a file or a directory under `path` is a single atomic step."""
    return scheme(path) in _ATOMIC_RENAME_SCHEMES


def dirname(path: str) -> str:
    """The folder of `path` (`gs://b/x/y` -> `gs://b/x`); "" for a bare file name."""
    return posixpath.dirname(str(path).rstrip("/"))


def basename(path: str) -> str:
    """The last component of `path`, ignoring a trailing `/`."""
    return posixpath.basename(str(path).rstrip("/"))


def exists(path: str) -> bool:
    """True if a file or folder is at `path`."""
    return tf.io.gfile.exists(path)


def isdir(path: str) -> bool:
    """True if `path` is a folder (on object stores: a prefix with objects below it)."""
    return tf.io.gfile.isdir(path)


def isfile(path: str) -> bool:
    """True if `path` is a file."""
    return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def modified_time_ns(path: str) -> int:
    """When `path` was last written, on the storage's clock (ns); 0 if it is
    missing or the file system keeps no time."""
    try:
        return int(tf.io.gfile.stat(path).mtime_nsec)
    except tf.errors.NotFoundError:
        return 0


def makedirs(path: str) -> None:
    """Creates `path` and its parents; nothing for "" (the working directory)."""
    if path:
        tf.io.gfile.makedirs(path)


def listdir(path: str) -> List[str]:
    """Names (not paths) in the folder `path`, sorted, without trailing `/`."""
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(path))


def glob(pattern: str) -> List[str]:
    """Paths matching `pattern`, sorted."""
    return sorted(tf.io.gfile.glob(pattern))


def read_bytes(path: str) -> bytes:
    """The contents of the file `path`.

    Raises:
      tf.errors.NotFoundError: no such file.
    """
    with tf.io.gfile.GFile(path, "rb") as stream:
        return stream.read()


def read_text(path: str) -> str:
    """The contents of the file `path` decoded as UTF-8."""
    return read_bytes(path).decode("utf-8")


def read_json(path: str) -> Any:
    """The JSON value in the file `path` (json.JSONDecodeError if it is not JSON)."""
    return json.loads(read_text(path))


def remove_tree(path: str) -> None:
    """Deletes a file or folder if it is there; errors are ignored (clean-up)."""
    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    except tf.errors.OpError:
        pass


def temporary_name(path: str) -> str:
    """A fresh hidden name beside `path` that keeps its ending (`.weights.h5`, `.png`)."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return join(dirname(path), f"{TEMPORARY_PREFIX}{token}-{basename(path)}")


def is_temporary(name: str) -> bool:
    """True for the names `temporary_name` makes (readers skip them)."""
    return basename(name).startswith(TEMPORARY_PREFIX)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes `data` to `path` under a temporary name, then renames it.

    Creates the parent folders. A local file gets the permissions of any new
    file (0666 less the umask).
    """
    with atomic_output(path) as temporary:
        with tf.io.gfile.GFile(temporary, "wb") as stream:
            stream.write(data)


def atomic_write_text(path: str, text: str) -> None:
    """`atomic_write_bytes` of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str, values: Any, indent: int = 2, sort_keys: bool = True) -> None:
    """Writes `values` as JSON (with a final newline) atomically."""
    atomic_write_text(path, json.dumps(values, indent=indent, sort_keys=sort_keys) + "\n")


def write_figure(figure: Any, path: str, **savefig_kwargs: Any) -> None:
    """Saves a matplotlib figure atomically: rendered in memory, then written.

    The format follows the ending of `path` (`.png`, `.pdf`, `.svg`) unless
    `format` is given; other keyword arguments go to `figure.savefig`.
    """
    buffer = io.BytesIO()
    savefig_kwargs.setdefault("format", posixpath.splitext(path)[1].lstrip(".").lower() or "png")
    figure.savefig(buffer, **savefig_kwargs)
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_output(path: str, overwrite: bool = True, last: Sequence[str] = ()) -> Iterator[str]:
    """Yields a temporary name beside `path` to write a file or folder to.

    When the block ends normally the temporary is moved to `path`
    (`move_into_place`); when it raises, the temporary is deleted and `path`
    is left as it was.

    Args:
      path: the final file or folder.
      overwrite: replace an existing `path`; False raises FileExistsError.
      last: for a folder on a filesystem without atomic renames, names of
        files (relative to the folder) moved after all others.
    """
    makedirs(dirname(path))
    temporary = temporary_name(path)
    try:
        yield temporary
        move_into_place(temporary, path, overwrite=overwrite, last=last)
    finally:
        remove_tree(temporary)


@contextlib.contextmanager
def temporary_directory_beside(path: str) -> Iterator[str]:
    """Yields a new empty folder beside `path`, deleted on exit (if still there)."""
    makedirs(dirname(path))
    temporary = temporary_name(path)
    tf.io.gfile.makedirs(temporary)
    try:
        yield temporary
    finally:
        remove_tree(temporary)


def move_into_place(source: str, target: str, overwrite: bool = False,
                    last: Sequence[str] = ()) -> None:
    """Renames the finished file or folder `source` to `target`.

    A file: `tf.io.gfile.rename` (atomic locally and on HDFS; on object stores
    a copy whose result appears whole). A folder: one rename where it is atomic;
    elsewhere file by file, `last` (relative names) after all the others. An
    existing `target` folder with `overwrite` is first moved aside (put back
    if the move of `source` fails) and deleted once `source` is in place: the
    old and the new folder are never mixed.

    Raises:
      FileExistsError: `target` exists and `overwrite` is False.
    """
    if tf.io.gfile.exists(target) and not overwrite:
        raise FileExistsError(f"{target!r} already exists.")
    if not tf.io.gfile.isdir(source):
        tf.io.gfile.rename(source, target, overwrite=overwrite)
        return
    if tf.io.gfile.exists(target):
        aside = temporary_name(target)
        _move_directory(target, aside, ())
        try:
            _move_directory(source, target, last)
        except BaseException:
            _move_directory(aside, target, ())  # Keep what was there.
            raise
        remove_tree(aside)
    else:
        _move_directory(source, target, last)


def _move_directory(source, target, last):
    if has_atomic_rename(source) and has_atomic_rename(target):
        tf.io.gfile.rename(source, target)
        return
    files = []
    for folder, _, names in tf.io.gfile.walk(source):
        # `folder` starts with `source` (walk joins names onto it); no relpath,
        # which would make URIs absolute local paths.
        relative = folder[len(source):].strip("/")
        tf.io.gfile.makedirs(join(target, relative) if relative else target)
        # The exists() check: ram:// lists `assets.extra/x` as `.extra` in `assets`.
        files += [join(relative, name) if relative else name for name in names
                  if tf.io.gfile.exists(join(folder, name))]
    held = [name for name in files if name in set(last)]
    moved = []
    try:
        for name in [name for name in files if name not in set(last)] + held:
            tf.io.gfile.rename(join(source, name), join(target, name), overwrite=True)
            moved.append(name)
    except BaseException:
        # Callers move onto a free name (an old target was moved aside first):
        # put back what was moved, so that `source` is whole and `target` absent.
        for name in moved:
            try:
                tf.io.gfile.rename(join(target, name), join(source, name), overwrite=True)
            except tf.errors.OpError:
                pass
        remove_tree(target)
        raise
    remove_tree(source)


@contextlib.contextmanager
def local_file_for_writing(path: str) -> Iterator[str]:
    """Yields a local file name to write (with h5py, Keras) that becomes `path`.

    A local `path`: the local name is a temporary one beside it, renamed when
    the block ends. A URI: the file is written in a local scratch folder, then
    copied through `tf.io.gfile` to a temporary name beside `path` and renamed.
    The local name keeps the ending of `path` (Keras checks `.weights.h5`).
    """
    if is_local(path):
        with atomic_output(path) as temporary:
            yield temporary
        return
    scratch = tempfile.mkdtemp(prefix="polynet_tf-")
    try:
        local = os.path.join(scratch, basename(path))
        yield local
        with atomic_output(path) as temporary:
            tf.io.gfile.copy(local, temporary, overwrite=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def local_file_for_reading(path: str) -> Iterator[str]:
    """Yields a local file name holding the contents of `path` (for h5py, Keras).

    A local `path` is yielded as it is; a URI is copied to a local scratch
    folder first, deleted when the block ends.
    """
    if is_local(path):
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="polynet_tf-")
    try:
        local = os.path.join(scratch, basename(path))
        tf.io.gfile.copy(path, local, overwrite=True)
        yield local
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = [
    "atomic_output", "atomic_write_bytes", "atomic_write_text", "basename", "dirname",
    "exists", "glob", "has_atomic_rename", "is_local", "is_temporary", "isdir", "isfile",
    "join", "listdir", "local_file_for_reading", "local_file_for_writing", "makedirs",
    "move_into_place", "read_bytes", "read_json", "read_text", "remove_tree", "scheme",
    "temporary_directory_beside", "temporary_name", "write_figure", "write_json",
]
