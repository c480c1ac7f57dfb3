"""The one exception type every ``classweights`` function raises for bad input."""

from __future__ import annotations


class ClassWeightError(ValueError):
    """Raised for invalid labels, counts, weights, files or parameters.

    It subclasses :class:`ValueError`, so ``except ValueError`` keeps working.
    Every message names the offending value and what was expected.
    """

    __module__ = "classweights"
