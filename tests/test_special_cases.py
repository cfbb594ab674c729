"""No module tests for the released network by name or by its sizes.

The released network's name ("very_deep") and its evaluation sizes (crop 331
after a resize to 378) are data: the architecture registry, the preset's
`PretrainedConfig`, the protocol registry and default argument values hold
them; everything else looks them up. Checked on the code (string and number
constants outside docstrings, default values and the modules that own them).
"""

import ast
import pathlib

import polynet_tf

_LITERALS = ("very_deep", 378, 379, 331)
# The modules that own the facts.
_OWNERS = {
    "models/architectures.py",  # the registry and each preset's PretrainedConfig
    "data/preprocessing.py",  # RELEASED_CROP_SIZE, RELEASED_RESIZE_SIZE, ...
}


def _defaults(tree):
    """ids of the nodes that are default values (arguments, dataclass fields)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            found.update(id(d) for d in node.args.defaults + node.args.kw_defaults if d)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and item.value is not None:
                    found.add(id(item.value))
    return found


def _docstrings(tree):
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _special_cases(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _defaults(tree) | _docstrings(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and id(node) not in skip
                and not isinstance(node.value, bool) and node.value in _LITERALS):
            yield node.lineno, node.value


def test_no_module_names_the_released_network_outside_the_registry():
    root = pathlib.Path(polynet_tf.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative in _OWNERS:
            continue
        found.extend(f"{relative}:{line}: {value!r}" for line, value in _special_cases(path))
    assert not found, "special cases of the released network:\n" + "\n".join(found)
