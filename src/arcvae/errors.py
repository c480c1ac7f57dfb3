"""Errors arcvae raises for bad input (data files, options, run folders)."""

from __future__ import annotations


class ArcvaeError(ValueError):
    """Bad input to arcvae: the message names the offending value and what was expected.

    The command line turns it, like :class:`classweights.ClassWeightError`, into
    one red line on stderr and exit code 1.
    """

    __module__ = "arcvae"
