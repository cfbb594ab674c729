import pytest

from polynet_tf.layers.module_spec import SpecSyntaxError
from polynet_tf.models import get_architecture, list_architectures, parse_architecture


def _module_texts(spec):
    return [(stage, str(module)) for stage, module in spec.modules]


def test_released_network_spec():
    spec = parse_architecture(
        "A: 2way*10 | B: (poly3[convs], 2way)*10 | C: (poly3[convs], 2way)*5"
    )
    assert spec.num_modules == 40
    texts = _module_texts(spec)
    assert texts[:10] == [("A", "2way")] * 10
    assert texts[10:14] == [("B", "poly3[convs]"), ("B", "2way")] * 2
    assert texts[30:] == [("C", "poly3[convs]"), ("C", "2way")] * 5


def test_nested_groups_and_whitespace():
    spec = parse_architecture("A:ir|B:( (2way,poly2)*2 , mpoly3 )*2|C : 3way")
    assert [m for s, m in _module_texts(spec) if s == "B"] == (
        ["2way", "poly2", "2way", "poly2", "mpoly3"] * 2
    )


@pytest.mark.parametrize("name", list_architectures())
def test_every_preset_round_trips_through_its_text(name):
    spec = get_architecture(name).architecture
    assert parse_architecture(str(spec)) == spec


@pytest.mark.parametrize(
    "text, column, fragment",
    [
        ("A: 2way*10 | B: (poyl3, 2way)*10 | C: ir", 18, "Unknown module term 'poyl3'"),
        ("A: ir | C: ir | B: ir", 9, "Stages must be exactly A, B, C"),
        ("A: ir | B: ir", 14, "Missing stage(s) C"),
        ("A: ir | B: ir | C: ir | A: ir", 25, "Stages must be exactly A, B, C"),
        ("A: ir*0 | B: ir | C: ir", 7, "repeat count must be at least 1"),
        ("A: ir* | B: ir | C: ir", 8, "Expected a repeat count"),
        ("A: (ir, 2way | B: ir | C: ir", 14, "Expected ')'"),
        ("A ir | B: ir | C: ir", 3, "Expected ':'"),
        ("A: ir; B: ir | C: ir", 6, "Unexpected character ';'"),
        ("D: ir | B: ir | C: ir", 1, "Expected a stage name"),
        ("A: | B: ir | C: ir", 4, "Expected a module"),
        ("", 1, "Empty architecture spec"),
    ],
)
def test_bad_specs_name_and_point_at_the_offending_token(text, column, fragment):
    with pytest.raises(SpecSyntaxError) as info:
        parse_architecture(text)
    message = str(info.value)
    assert fragment in message
    assert f"(column {column})" in message


def test_spec_must_be_text():
    with pytest.raises(TypeError, match="must be a string"):
        parse_architecture(["A: ir"])
