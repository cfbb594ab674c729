import pytest

from polynet_tf.layers.module_spec import Chain, SpecSyntaxError, parse_module


@pytest.mark.parametrize(
    "text, chains, paths",
    [
        ("ir", [Chain(1, "none")], 1),
        ("1way", [Chain(1, "none")], 1),
        ("2way", [Chain(1, "none")] * 2, 2),
        ("3-way", [Chain(1, "none")] * 3, 3),
        ("poly2", [Chain(2, "all")], 2),
        ("poly-3", [Chain(3, "all")], 3),
        ("poly3[convs]", [Chain(3, "convs")], 3),
        ("mpoly3", [Chain(3, "none")], 3),
        ("poly1", [Chain(1, "none")], 1),
        ("poly2+ir", [Chain(2, "all"), Chain(1, "none")], 3),
        ("2way + mpoly2", [Chain(1, "none")] * 2 + [Chain(2, "none")], 4),
        ("poly5", [Chain(5, "all")], 5),
    ],
)
def test_module_chains_and_paths(text, chains, paths):
    spec = parse_module(text)
    assert spec.chains() == chains
    assert spec.num_paths == paths


@pytest.mark.parametrize(
    "text, canonical",
    [("1way", "ir"), ("3-way", "3way"), ("POLY3", "poly3"), ("poly3[all]", "poly3"),
     ("poly3[convs]", "poly3[convs]"), ("mpoly-2 + 2way", "mpoly2+2way")],
)
def test_canonical_text_round_trips(text, canonical):
    spec = parse_module(text)
    assert str(spec) == canonical
    assert parse_module(str(spec)) == spec


@pytest.mark.parametrize(
    "text, position, fragment",
    [
        ("poyl3", 0, "Unknown module term 'poyl3'"),
        ("2way+pol2", 5, "Unknown module term 'pol2'"),
        ("poly0", 0, "order >= 1"),
        ("0way", 0, "k >= 1"),
        ("poly3[both]", 0, "Unknown sharing mode 'both'"),
        ("mpoly3[convs]", 0, "mpoly terms share nothing"),
        ("2way+", 5, "Empty module term"),
    ],
)
def test_bad_modules_point_at_the_token(text, position, fragment):
    with pytest.raises(SpecSyntaxError) as info:
        parse_module(text)
    assert fragment in str(info.value)
    assert info.value.position == position
    # The caret line marks the token under the echoed text.
    lines = str(info.value).splitlines()
    assert lines[-2] == "  " + text
    assert lines[-1].index("^") == 2 + position
