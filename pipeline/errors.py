"""The project's own error types: what a stage's command shows as one line.

Every error that reports bad input, missing or stale artifacts or a refused setting derives from
:class:`InputError` (itself a ValueError, so library callers can keep catching ValueError). The
command line (pipeline.cli) prints these as ``error: <message>`` with exit code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input, a missing or stale artifact, or a refused combination of settings: a message for
    the user, naming the file, row, column, key or stage to run."""
