"""docs/architectures.md is the registry's table and current; every preset is rendered."""

import os
import re

from polynet_tf.models import architecture_table
from polynet_tf.models.architectures import get_architecture, list_architectures
from polynet_tf.models.complexity import network_cost

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGE = os.path.join(ROOT, "docs", "architectures.md")


def _table_lines(text):
    return [line for line in text.splitlines() if line.startswith("| `")]


def test_docs_page_is_current():
    with open(PAGE, encoding="utf-8") as f:
        written = f.read()
    assert written == architecture_table.render_table(), (
        "docs/architectures.md is out of date with the architecture registry; regenerate it: "
        f"{architecture_table.REGENERATE}")


def test_every_preset_has_one_row_with_its_own_figures():
    lines = _table_lines(architecture_table.render_table())
    names = [re.match(r"\| `([^`]+)`", line).group(1) for line in lines]
    assert names == list_architectures()
    for line in lines:
        # Split on cell borders, not on the escaped '\|' inside the spec.
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        name = cells[0].strip("`")
        preset = get_architecture(name)
        assert cells[1].strip("`").replace("\\|", "|") == preset.spec
        # Modules per stage counted independently of the parser: a group "(a, b)*n" has
        # len * n modules, a term "m*n" n modules, per stage text.
        expected = []
        for stage in preset.spec.split("|"):
            body = stage.split(":", 1)[1].strip()
            group = re.fullmatch(r"\((.*)\)\*(\d+)", body)
            if group:
                expected.append(len(group.group(1).split(",")) * int(group.group(2)))
            else:
                expected.append(sum(int(t.split("*")[1]) if "*" in t else 1
                                    for t in body.split(",")))
        assert cells[2] == " / ".join(map(str, expected)), name
        cost = network_cost(name, preset.default_size, classes=1000)
        assert cells[3] == f"{cost.trainable_params:,}"
        assert cells[5] == str(preset.default_size)


def test_released_network_row():
    row, = architecture_table.architecture_rows(["very_deep"])
    # The released network: 10 + 20 + 10 modules, 95,366,600 trainable parameters,
    # about 34.7 G multiply-adds at 331 (docs/design.md section 1).
    assert row.modules_per_stage == (10, 20, 10)
    assert row.trainable_params == 95366600
    assert round(row.multiply_adds / 1e9, 1) == 34.7
    line = architecture_table.render_row(row)
    assert "| 10 / 20 / 10 | 95,366,600 | 34.70 G | 331 | 1 -> 0.7 |" in line
    assert "`A: 2way*10 \\| B: (poly3[convs], 2way)*10 \\| C: (poly3[convs], 2way)*5`" in line


def test_command_writes_the_page_and_rejects_unknown_flags(tmp_path, capsys):
    output = tmp_path / "architectures.md"
    assert architecture_table.main(["--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == architecture_table.render_table()
    assert architecture_table.main(["--outptu", "x.md"]) == 2
    assert "outptu" in capsys.readouterr().err
