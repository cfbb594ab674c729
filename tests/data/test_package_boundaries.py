"""The data package knows nothing about models: checked on its imports."""

import ast
import pathlib

import polynet_tf.data

_FORBIDDEN = ("polynet_tf.models", "polynet_tf.layers", "keras", "tensorflow.keras")
# Keras's image preprocessing layers are data operations, not model code: the
# augmentation module may use these, and nothing else of Keras.
_KERAS_DATA_OPS = {"augmentation.py": {
    "keras.layers.RandAugment", "keras.layers.RandomErasing", "keras.layers.MixUp",
    "keras.layers.CutMix", "keras.layers.Layer", "keras.random.SeedGenerator"}}


def _imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _keras_names(path):
    """Every attribute chain `keras.a`, `keras.a.b`, ... used in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.insert(0, node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name) and node.id == "keras":
            yield ".".join(["keras"] + parts)


def test_no_module_of_the_data_package_imports_model_code():
    package_dir = pathlib.Path(polynet_tf.data.__file__).parent
    modules = sorted(package_dir.glob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        allowed = _KERAS_DATA_OPS.get(path.name)
        for name in _imported_modules(path):
            if allowed and name == "keras":
                continue
            assert not name.startswith(_FORBIDDEN), f"{path.name} imports {name}"
            assert "tf.keras" not in path.read_text(encoding="utf-8"), path.name
        if allowed:
            used = set(_keras_names(path))
            modules = {name.rsplit(".", 1)[0] for name in allowed}
            assert used and used <= allowed | modules, (
                f"{path.name} uses {sorted(used - allowed - modules)}")
