"""Errors that datasets raise for bad input; they always name the file."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset cannot be built: missing root, malformed list file, no samples, ..."""


class CorruptSampleError(DataError):
    """One sample cannot be read. With ``data.skip_corrupt=true`` the engine skips and counts it.

    Args:
        path: the file that failed.
        reason: what is wrong with it.
        line: line of a list file that named it, if any.
    """

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path, self.reason, self.line = str(path), reason, line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason, self.line))
