"""A check of an HDF5 file's global heaps that the HDF5 library itself lacks.

Keras records each layer's name as a variable-length string attribute, and
HDF5 keeps such strings in "global heap" collections. When HDF5 reads a
collection it walks the objects inside it, each header giving the size of the
next step; a corrupt header that says "free space of size 0" makes that walk
stand still, and the library (1.14.6 and 2.0.0 alike) loops forever while
holding Python's global lock, so no timeout or signal handler of the process
can end it. `check_global_heaps` walks every collection of a file the same
way first and refuses one whose walk would not end.

The layout read here is the HDF5 file format specification's (superblock
versions 0-3, "Global Heap" section): a collection is the signature `GCOL`,
version 1, three reserved bytes and its size (a "length" field), then
objects of a 16-bit index, a 16-bit reference count, four reserved bytes, a
length field and the object's data padded to 8 bytes; index 0 is the free
space and its size counts its own header.
"""

import mmap
import struct

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_COLLECTION = b"GCOL"
_MIN_COLLECTION_SIZE = 4096  # HDF5 never writes a smaller collection


class HeapLoopError(ValueError):
    """A global heap collection whose objects HDF5 would walk without end."""


def check_global_heaps(path):
    """Raises `HeapLoopError` if reading a global heap of the local file `path` would hang.

    Candidates are found by their signature; one whose header is not a
    collection's (another version, a size under 4096 bytes or past the end of
    the file) is skipped: HDF5 refuses those itself, with an error.

    Args:
        path: a local HDF5 file.

    Raises:
        HeapLoopError: naming the collection's offset and the object that
            stops the walk.
    """
    # A local file by contract, as for h5py: `weights_file` copies a URI to a
    # local scratch file first. mmap lets `find` scan a large file in C.
    with open(path, "rb") as handle:
        if handle.seek(0, 2) == 0:
            return
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            length_size = _length_size(data)
            if length_size is None:
                return  # not HDF5: h5py says so
            start = data.find(_COLLECTION)
            while start >= 0:
                _walk_collection(data, start, length_size)
                start = data.find(_COLLECTION, start + 1)


def _length_size(data):
    """The size of "length" fields from the superblock, or None when there is none."""
    for base in (0, 512, 1024, 2048):  # where the format lets a superblock start
        if data[base:base + 8] == _SIGNATURE and len(data) > base + 16:
            version = data[base + 8]
            size = data[base + 14] if version in (0, 1) else data[base + 10]
            return size if size in (2, 4, 8) else None
    return None


def _read_length(data, offset, length_size):
    return int.from_bytes(data[offset:offset + length_size], "little")


def _walk_collection(data, start, length_size):
    header = 8 + length_size
    if start + header > len(data) or data[start + 4] != 1 or any(data[start + 5:start + 8]):
        return
    size = _read_length(data, start + 8, length_size)
    if size < _MIN_COLLECTION_SIZE or start + size > len(data):
        return
    end = start + size
    object_header = 8 + length_size
    position = start + header
    while position < end:
        if position + object_header > end:
            return  # a tail too short for a header is free space
        index, = struct.unpack_from("<H", data, position)
        object_size = _read_length(data, position + 8, length_size)
        step = object_header + (object_size + 7) // 8 * 8 if index else object_size
        if step == 0:
            raise HeapLoopError(
                f"the global heap collection at byte {start} has a free-space object of size "
                f"0 at byte {position}, which HDF5 would read forever")
        position += step
