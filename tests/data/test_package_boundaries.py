"""The data package knows nothing about models: checked on its imports."""

import ast
import pathlib

import polynet_tf.data

_FORBIDDEN = ("polynet_tf.models", "polynet_tf.layers", "keras", "tensorflow.keras")


def _imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_module_of_the_data_package_imports_model_code():
    package_dir = pathlib.Path(polynet_tf.data.__file__).parent
    modules = sorted(package_dir.glob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        for name in _imported_modules(path):
            assert not name.startswith(_FORBIDDEN), f"{path.name} imports {name}"
            assert "tf.keras" not in path.read_text(encoding="utf-8"), path.name
