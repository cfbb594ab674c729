"""The one error growth raises, naming the first layer or weight it cannot map."""


class GrowthError(ValueError):
    """A source that cannot be grown into the target, found before any write.

    Attributes:
        name: the first target layer or weight (or the source file) that
            cannot be mapped.
        reason: why, and what to do about it.
    """

    def __init__(self, name, reason):
        self.name = name
        self.reason = reason
        super().__init__(f"Cannot grow into `{name}`: {reason}")
