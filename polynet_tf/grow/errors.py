"""The one error growth raises, naming the first layer or weight it cannot map."""


class GrowthError(ValueError):
    """A source that cannot be grown into the target, found before any write.

    Attributes:
        name: the first target layer or weight that cannot be mapped, or the
            source checkpoint (or source weight) that cannot be read.
        reason: why, and what to do about it.
        in_source: whether `name` belongs to the source (a checkpoint that does
            not fit the source architecture) rather than the target.
    """

    def __init__(self, name, reason, in_source=False):
        self.name = name
        self.reason = reason
        self.in_source = in_source
        preposition = "from" if in_source else "into"
        super().__init__(f"Cannot grow {preposition} `{name}`: {reason}")
