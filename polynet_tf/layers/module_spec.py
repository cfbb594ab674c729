"""The PolyInception family as data: one module = identity + polynomial terms.

A module is a sum of terms, each a chain of Inception blocks that starts at the
module input (docs/design.md section 2, the paper's section 3.1):

| text            | polynomial                 | chains (order, sharing)      |
| --------------- | -------------------------- | ---------------------------- |
| `ir` = `1way`   | I + F                      | (1, none)                    |
| `2way`, `3way`  | I + F + G (+ H)            | k x (1, none)                |
| `poly3`         | I + F + F^2 + F^3          | (3, all): one shared block   |
| `poly3[convs]`  | as poly3, released variant | (3, convs): shared convs,    |
|                 |                            | own BNs and projection each  |
| `mpoly3`        | I + F + GF + HGF           | (3, none): three blocks      |
| `poly2+1way`    | I + F + F^2 + G            | (2, all), (1, none)          |

Every chain is computed in cascaded form, each block once per order: a chain of
order k contributes k terms (paths) and costs k block evaluations.
"""

import dataclasses
import re

SHARING_MODES = ("all", "convs")

_TERM_PATTERN = re.compile(
    r"^(?:(?P<ir>ir)|(?P<ways>\d+)-?way|(?P<m>m?)poly-?(?P<order>\d+)"
    r"(?:\[(?P<share>[^\]]*)\])?)$"
)
_TERM_HELP = (
    "a module is terms joined by '+', each one of: ir, Nway (e.g. 2way, 3way), "
    "polyN (e.g. poly3; poly3[convs] for the released shared-conv variant), "
    "mpolyN (e.g. mpoly2)"
)


class SpecSyntaxError(ValueError):
    """A module or architecture spec that does not parse; points at the token.

    Attributes:
        text: the whole spec text.
        position: index of the offending token in `text`.
        length: length of the offending token (at least 1).
        reason: what is wrong, without the location.
    """

    def __init__(self, reason, text, position, length=1):
        self.reason = reason
        self.text = text
        self.position = position
        self.length = max(1, length)
        caret = " " * position + "^" * self.length
        super().__init__(
            f"{reason} (column {position + 1}):\n  {text}\n  {caret}"
        )


@dataclasses.dataclass(frozen=True)
class Chain:
    """A cascade of `order` blocks from the module input.

    Attributes:
        order: number of blocks in the cascade (= number of paths it adds).
        sharing: "none" (distinct blocks), "all" (one block applied `order`
            times) or "convs" (one block whose convs are shared, with own
            BatchNorms and projection per application).
    """

    order: int
    sharing: str


@dataclasses.dataclass(frozen=True)
class ModuleTerm:
    """One term of a module: `kind` is "way", "poly" or "mpoly"."""

    kind: str
    order: int
    sharing: str = "all"

    def chains(self):
        if self.kind == "way":
            return [Chain(1, "none")] * self.order
        if self.kind == "mpoly" or self.order == 1:
            return [Chain(self.order, "none")]
        return [Chain(self.order, self.sharing)]

    def __str__(self):
        if self.kind == "way":
            return "ir" if self.order == 1 else f"{self.order}way"
        if self.kind == "mpoly":
            return f"mpoly{self.order}"
        suffix = "" if self.sharing == "all" else f"[{self.sharing}]"
        return f"poly{self.order}{suffix}"


@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    """A PolyInception module: identity plus the paths of its terms."""

    terms: tuple

    def chains(self):
        return [chain for term in self.terms for chain in term.chains()]

    @property
    def num_paths(self):
        """Non-identity paths (terms of the polynomial) = block evaluations."""
        return sum(chain.order for chain in self.chains())

    def __str__(self):
        return "+".join(str(term) for term in self.terms)


def parse_term(word, text=None, position=0):
    """Parses one term such as `2way`, `poly3[convs]` or `mpoly2`.

    Args:
        word: the term text.
        text: the whole spec the term comes from (for error messages).
        position: index of `word` in `text`.

    Returns:
        A `ModuleTerm`.

    Raises:
        SpecSyntaxError: the term is not part of the family.
    """
    text = word if text is None else text
    match = _TERM_PATTERN.match(word.strip().lower())
    if not match:
        raise SpecSyntaxError(f"Unknown module term {word!r}; {_TERM_HELP}", text,
                              position, len(word))
    if match["ir"]:
        return ModuleTerm("way", 1)
    if match["ways"]:
        ways = int(match["ways"])
        if ways < 1:
            raise SpecSyntaxError(f"A k-way term needs k >= 1, got {word!r}", text,
                                  position, len(word))
        return ModuleTerm("way", ways)
    order = int(match["order"])
    if order < 1:
        raise SpecSyntaxError(f"A poly term needs order >= 1, got {word!r}", text,
                              position, len(word))
    share = match["share"]
    if match["m"]:
        if share is not None:
            raise SpecSyntaxError(
                f"mpoly terms share nothing; remove the brackets in {word!r}",
                text, position, len(word))
        return ModuleTerm("mpoly", order, "none")
    share = "all" if share is None else share.strip()
    if share not in SHARING_MODES:
        raise SpecSyntaxError(
            f"Unknown sharing mode {share!r} in {word!r}; use one of {SHARING_MODES}",
            text, position, len(word))
    return ModuleTerm("poly", order, share)


def parse_module(text, whole_text=None, position=0):
    """Parses a module spec such as `poly3[convs]` or `poly2+1way`.

    Args:
        text: the module text.
        whole_text: the spec the module comes from (for error messages).
        position: index of `text` in `whole_text`.

    Returns:
        A `ModuleSpec`.

    Raises:
        SpecSyntaxError: with the offending term marked.
    """
    if isinstance(text, ModuleSpec):
        return text
    whole_text = text if whole_text is None else whole_text
    terms = []
    offset = 0
    for word in text.split("+"):
        start = position + offset + (len(word) - len(word.lstrip()))
        if not word.strip():
            raise SpecSyntaxError(f"Empty module term; {_TERM_HELP}", whole_text, start)
        terms.append(parse_term(word.strip(), whole_text, start))
        offset += len(word) + 1
    return ModuleSpec(tuple(terms))
