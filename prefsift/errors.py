"""Errors of the application layer. The CLI prints `prefsift: error: <message>` and exits 2."""


class UserError(Exception):
    """A mistake the user can fix (bad argument, missing file, empty selection...)."""
