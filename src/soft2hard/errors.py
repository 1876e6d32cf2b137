"""User-facing errors.

Everything a user can cause (bad file, unknown name, width mismatch, ...) raises :class:`Soft2HardError`
(a ``ValueError``) with a one-line message naming the thing and the problem. The CLI prints that line and exits
with status 2; internal invariants use ``assert`` instead.
"""


class Soft2HardError(ValueError):
    """An error caused by user input; its message is a single actionable line."""
