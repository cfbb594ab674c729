"""Architectures as data: stages of PolyInception modules, and their text form.

Grammar (whitespace is free; `A`, `B`, `C` are the stages, in this order, with
reductions A and B between them)::

    architecture := stage ("|" stage)*
    stage        := ("A" | "B" | "C") ":" sequence
    sequence     := item ("," item)*
    item         := (module | "(" sequence ")") ("*" COUNT)?
    module       := term ("+" term)*        # see polynet_tf.layers.module_spec

Examples::

    "A: 2way*10 | B: (poly3[convs], 2way)*10 | C: (poly3[convs], 2way)*5"
    "A: ir*6 | B: (3way, mpoly3, poly3)*4 | C: ir*6"
"""

import dataclasses
import re

from polynet_tf.layers.module_spec import ModuleSpec, SpecSyntaxError, parse_module

STAGE_NAMES = ("A", "B", "C")

_TOKEN = re.compile(
    r"\s*(?:(?P<word>[A-Za-z0-9][A-Za-z0-9_\-]*(?:\[[^\]]*\])?(?:\s*\+\s*"
    r"[A-Za-z0-9][A-Za-z0-9_\-]*(?:\[[^\]]*\])?)*)|(?P<punct>[|:,()*]))"
)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: the block type of its modules and the modules, bottom first."""

    name: str
    modules: tuple

    def __str__(self):
        return f"{self.name}: {_compress([str(m) for m in self.modules])}"


@dataclasses.dataclass(frozen=True)
class ArchitectureSpec:
    """A whole network body: stages A, B and C."""

    stages: tuple

    @property
    def modules(self):
        """Every (stage name, ModuleSpec), bottom to top."""
        return [(stage.name, m) for stage in self.stages for m in stage.modules]

    @property
    def num_modules(self):
        return sum(len(stage.modules) for stage in self.stages)

    def __str__(self):
        return " | ".join(str(stage) for stage in self.stages)


def parse_architecture(text):
    """Parses an architecture spec (grammar in the module docstring).

    Args:
        text: the spec text.

    Returns:
        An `ArchitectureSpec`.

    Raises:
        SpecSyntaxError: naming and pointing at the offending token.
    """
    if not isinstance(text, str):
        raise TypeError(f"An architecture spec must be a string. Received: {text!r}")
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text):
        self.text = text
        self.tokens = self._tokenize(text)
        self.index = 0

    def _tokenize(self, text):
        tokens = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if not match or match.end() == position:
                if text[position:].strip() == "":
                    break
                bad = position + len(text[position:]) - len(text[position:].lstrip())
                raise SpecSyntaxError(f"Unexpected character {text[bad]!r}", text, bad)
            kind = "word" if match["word"] else "punct"
            value = match[kind]
            tokens.append((kind, value, match.start(kind)))
            position = match.end()
        return tokens

    def _peek(self):
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _error(self, reason, token=None):
        if token is None:
            raise SpecSyntaxError(reason, self.text, len(self.text))
        raise SpecSyntaxError(reason, self.text, token[2], len(token[1]))

    def _expect(self, value, what):
        token = self._peek()
        if token is None or token[1] != value:
            self._error(f"Expected {what}", token)
        self.index += 1
        return token

    def parse(self):
        if not self.tokens:
            self._error("Empty architecture spec; expected e.g. 'A: ir*5 | B: ir*10 | C: ir*5'")
        stages = [self._stage()]
        while self._peek() is not None:
            self._expect("|", "'|' between stages")
            stages.append(self._stage())
        names = [stage.name for stage, _ in stages]
        if names == list(STAGE_NAMES[: len(names)]) and len(names) < len(STAGE_NAMES):
            missing = ", ".join(STAGE_NAMES[len(names):])
            self._error(f"Missing stage(s) {missing}: a network has stages A, B and C")
        if names != list(STAGE_NAMES):
            token = next(
                (tok for (stage, tok), want in zip(stages, STAGE_NAMES) if stage.name != want),
                stages[len(STAGE_NAMES)][1] if len(stages) > len(STAGE_NAMES) else None,
            )
            self._error(
                f"Stages must be exactly A, B, C in this order (got {', '.join(names)})",
                token,
            )
        return ArchitectureSpec(tuple(stage for stage, _ in stages))

    def _stage(self):
        token = self._peek()
        if token is None or token[0] != "word" or token[1].upper() not in STAGE_NAMES:
            self._error("Expected a stage name A, B or C", token)
        self.index += 1
        self._expect(":", f"':' after stage name {token[1]!r}")
        modules = self._sequence()
        return StageSpec(token[1].upper(), tuple(modules)), token

    def _sequence(self):
        modules = self._item()
        while self._peek() is not None and self._peek()[1] == ",":
            self.index += 1
            modules += self._item()
        return modules

    def _item(self):
        token = self._peek()
        if token is None:
            self._error("Expected a module or '(' here")
        if token[1] == "(":
            self.index += 1
            modules = self._sequence()
            self._expect(")", "')' to close the group")
        elif token[0] == "word":
            self.index += 1
            modules = [parse_module(token[1], self.text, token[2])]
        else:
            self._error("Expected a module or '(' here", token)
        if self._peek() is not None and self._peek()[1] == "*":
            self.index += 1
            count_token = self._peek()
            if count_token is None or not count_token[1].isdigit():
                self._error("Expected a repeat count after '*'", count_token)
            count = int(count_token[1])
            if count < 1:
                self._error("A repeat count must be at least 1", count_token)
            self.index += 1
            modules = modules * count
        return modules


def _compress(words):
    """Shortest 'x*n' / '(x, y)*n' rendering of a module list (for display)."""
    parts = []
    i = 0
    while i < len(words):
        best = (1, 1)  # (period, repeats)
        for period in range(1, min(4, len(words) - i) + 1):
            repeats = 1
            while words[i:i + period] == words[i + repeats * period:i + (repeats + 1) * period]:
                repeats += 1
            if repeats > 1 and period * repeats > best[0] * best[1]:
                best = (period, repeats)
        period, repeats = best
        group = words[i:i + period]
        body = group[0] if period == 1 else f"({', '.join(group)})"
        parts.append(body if repeats == 1 else f"{body}*{repeats}")
        i += period * repeats
    return ", ".join(parts)


__all__ = [
    "ArchitectureSpec",
    "ModuleSpec",
    "SpecSyntaxError",
    "StageSpec",
    "parse_architecture",
]
