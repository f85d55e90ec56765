"""The one exception type for a bad input a person gave: a target spec, an option, a file, a prompt.

Its message names the input and says what is allowed, on one line; the command line prints it as
``next-token-spec: error: <message>`` and exits 2 (spec.cli). It is a ValueError, so code that
catches ValueError for a bad argument keeps working.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad input: the message names it and what is allowed."""


__all__ = ["InputError"]
