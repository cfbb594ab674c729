"""polynet_tf.fileio: atomic writes and folder moves on local paths, file:// and ram:// URIs."""

import os
import uuid

import h5py
import numpy as np
import pytest
import tensorflow as tf

from polynet_tf import fileio


def _ram(name):
    return f"ram://fileio-{uuid.uuid4().hex[:8]}/{name}"


def _umask():
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_scheme_and_atomic_rename():
    assert fileio.scheme("gs://b/x") == "gs" and fileio.scheme("/a/b") == ""
    assert fileio.scheme("a/b://c") == ""  # '://' inside a relative path is no scheme
    assert fileio.has_atomic_rename("file:///tmp/x") and not fileio.has_atomic_rename("gs://b/x")
    assert fileio.dirname("gs://b/x/") == "gs://b" and fileio.basename("gs://b/x/") == "x"
    assert fileio.dirname("x.json") == ""


@pytest.mark.parametrize("kind", ["local", "file_uri", "ram"])
def test_atomic_write_creates_folders_replaces_and_leaves_nothing_else(tmp_path, kind):
    root = {"local": str(tmp_path), "file_uri": f"file://{tmp_path}",
            "ram": _ram("root")}[kind]
    path = fileio.join(root, "a", "b", "report.json")
    fileio.write_json(path, {"x": 1})
    fileio.write_json(path, {"x": 2, "a": [1]})
    assert fileio.read_json(path) == {"x": 2, "a": [1]}
    assert fileio.read_text(path).endswith("\n")
    assert fileio.listdir(fileio.dirname(path)) == ["report.json"]
    if kind != "ram":
        local = tmp_path / "a" / "b" / "report.json"
        assert os.stat(local).st_mode & 0o777 == 0o666 & ~_umask()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = f"file://{tmp_path}/out.txt"
    fileio.atomic_write_text(path, "old")
    with pytest.raises(RuntimeError, match="half"):
        with fileio.atomic_output(path) as temporary:
            assert fileio.is_temporary(temporary) and temporary.startswith(f"file://{tmp_path}/")
            with tf.io.gfile.GFile(temporary, "w") as stream:
                stream.write("half-")
            raise RuntimeError("half written")
    assert (tmp_path / "out.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def _write_tree(root, files):
    for name, data in files.items():
        fileio.makedirs(fileio.dirname(fileio.join(root, name)))
        with tf.io.gfile.GFile(fileio.join(root, name), "wb") as stream:
            stream.write(data)


def _read_tree(root):
    found = {}
    for folder, _, names in tf.io.gfile.walk(root):
        for name in names:
            relative = fileio.join(folder[len(root):].strip("/"), name).lstrip("/")
            found[relative] = fileio.read_bytes(fileio.join(folder, name))
    return found


@pytest.mark.parametrize("kind", ["file_uri", "ram"])
def test_a_folder_moves_into_place_whole_and_replaces_only_with_overwrite(tmp_path, kind):
    # file:// is one rename(2); ram:// has no atomic directory rename: file by file.
    root = f"file://{tmp_path}" if kind == "file_uri" else _ram("models")
    target = fileio.join(root, "m", "1")
    first = {"saved_model.pb": b"pb1", "variables/v.index": b"i1", "assets.extra/a": b"a1"}
    with fileio.atomic_output(target, overwrite=False, last=["saved_model.pb"]) as temporary:
        _write_tree(temporary, first)
    assert _read_tree(target) == first
    with pytest.raises(FileExistsError):
        with fileio.atomic_output(target, overwrite=False) as temporary:
            _write_tree(temporary, {"saved_model.pb": b"pb2"})
    second = {"saved_model.pb": b"pb2", "variables/v.index": b"i2"}
    with fileio.atomic_output(target, overwrite=True, last=["saved_model.pb"]) as temporary:
        _write_tree(temporary, second)
    assert _read_tree(target) == second  # no file of the old version is left in it
    assert fileio.listdir(fileio.join(root, "m")) == ["1"]


def test_temporary_directory_beside_is_removed(tmp_path):
    with fileio.temporary_directory_beside(f"file://{tmp_path}/out/x") as folder:
        _write_tree(folder, {"f": b"1"})
        assert fileio.dirname(folder) == f"file://{tmp_path}/out"
    assert os.listdir(tmp_path / "out") == []


def test_figure_is_rendered_in_memory_and_written_through_gfile():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    figure = pyplot.figure(figsize=(1, 1))
    path = _ram("fig/plot.png")
    fileio.write_figure(figure, path, dpi=20)
    pyplot.close(figure)
    assert fileio.read_bytes(path)[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["local", "file_uri"])
def test_h5py_files_are_staged_locally(tmp_path, kind):
    # h5py (Keras weights) opens local names only; a URI is written locally, then copied.
    path = (str(tmp_path) if kind == "local" else f"file://{tmp_path}") + "/w/m.weights.h5"
    with fileio.local_file_for_writing(path) as local:
        assert fileio.is_local(local) and local.endswith(".weights.h5")
        with h5py.File(local, "w") as stream:
            stream["x"] = np.arange(3)
    assert os.listdir(tmp_path / "w") == ["m.weights.h5"]
    with fileio.local_file_for_reading(path) as local:
        with h5py.File(local, "r") as stream:
            np.testing.assert_array_equal(stream["x"][()], np.arange(3))
    if kind == "file_uri":
        assert not os.path.exists(local)  # the local copy is deleted


def test_yaml_configuration_round_trip_on_ram():
    from polynet_tf.configs.base import ConfigError, load_yaml, write_yaml  # noqa: PLC0415

    path = _ram("run/params.yaml")
    values = {"model": {"num_classes": 3, "architecture": "A: ir | B: ir | C: ir"}}
    write_yaml(values, path)
    assert load_yaml(path) == values
    assert fileio.listdir(fileio.dirname(path)) == ["params.yaml"]
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(_ram("missing.yaml"))
