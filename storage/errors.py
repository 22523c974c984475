"""Errors raised by the storage layer. The CLI turns each into one clear line."""


class StorageError(Exception):
    """Base class of every storage error."""


class SchemaTooNew(StorageError):
    """The database was written by a newer prefsift (its schema version is unknown here)."""


class DatabaseLocked(StorageError):
    """Another process held the database file for longer than the retry budget."""


class NotFound(StorageError):
    """A named object (dataset, run, selection, model) does not exist."""


class AnnotationConflict(StorageError):
    """Someone else saved a pair's annotation after the page showed it; `current` holds theirs
    (flag, note, force, updated_at), or None if they cleared it."""

    def __init__(self, message: str, current: dict | None) -> None:
        super().__init__(message)
        self.current = current
