"""polynet_tf.weights depends on the layers only: no module of it imports polynet_tf.models.

The models call the weights code with what it needs (`PolyNet(weights=...)`);
the other direction would make an import circle.
"""

import ast
import pathlib

import polynet_tf.weights


def _imports_of_models(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "polynet_tf.models" or name.startswith("polynet_tf.models."):
                yield node.lineno, name


def _offenders():
    package_dir = pathlib.Path(polynet_tf.weights.__file__).parent
    modules = sorted(package_dir.glob("*.py"))
    assert len(modules) >= 5
    return [f"{path.name}:{line} imports {name}" for path in modules
            for line, name in _imports_of_models(path)]


def test_no_module_of_the_weights_package_imports_the_models():
    assert not _offenders(), "\n".join(_offenders())
