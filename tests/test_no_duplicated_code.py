"""No block of ten or more lines of code is written twice inside the package.

Code lines only: docstrings, function signatures, comments and blank lines
are left out (an `Args:` section or a list of keyword options may well read
the same in two public functions), and lines are compared token by token.
Blocks of the same shape with other names are allowed; identical ones belong
in one function.
"""

import ast
import collections
import io
import pathlib
import tokenize

import polynet_tf

_BLOCK = 10


def _skipped_lines(tree):
    """Line numbers of docstrings and of `def` headers (decorators to the colon)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            lines.update(range(first, node.body[0].lineno))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def code_lines(source):
    """(line number, stripped text) of each line holding code, comments removed."""
    skip = _skipped_lines(ast.parse(source))
    text = collections.defaultdict(list)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                          tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if token.start[0] not in skip:
            text[token.start[0]].append(token.string)
    return [(number, " ".join(parts)) for number, parts in sorted(text.items())]


def duplicated_blocks(files, size=_BLOCK):
    """{block text: [(file, first line), ...]} for blocks found in two places or more."""
    seen = collections.defaultdict(list)
    for name, source in files.items():
        lines = code_lines(source)
        for start in range(len(lines) - size + 1):
            window = lines[start:start + size]
            seen["\n".join(text for _, text in window)].append((name, window[0][0]))
    return {block: places for block, places in seen.items() if len(places) > 1}


def test_the_checker_finds_a_copied_block_and_ignores_docstrings():
    body = "".join(f"    x{i} = f(x{i - 1}, {i})\n" for i in range(1, 11))
    doc = '    """' + "\n    Args:\n      a: the same words.\n" * 6 + '    """\n'
    found = duplicated_blocks({"a.py": f"def a(x0):\n{doc}{body}    return x10\n",
                               "b.py": f"def b(x0):\n{doc}    # other\n{body}    return 1\n"})
    assert [sorted(places) for places in found.values()] == [[("a.py", 21), ("b.py", 22)]]
    shorter = "".join(body.splitlines(keepends=True)[:9])
    assert not duplicated_blocks({"a.py": f"def a(x0):\n{shorter}",
                                  "b.py": f"def b(x0):\n{shorter}"})


def test_no_block_of_ten_code_lines_appears_twice_in_the_package():
    root = pathlib.Path(polynet_tf.__file__).parent
    files = {str(path.relative_to(root)): path.read_text(encoding="utf-8")
             for path in sorted(root.rglob("*.py"))}
    assert len(files) > 50
    found = duplicated_blocks(files)
    report = ["  " + ", ".join(f"{name}:{line}" for name, line in places)
              for places in found.values()]
    assert not found, "blocks of 10 code lines written more than once:\n" + "\n".join(report)
