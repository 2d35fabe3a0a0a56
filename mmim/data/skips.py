"""Skipped corrupt samples: a marker that names them, and the cap ``data.max_skip_fraction``."""

from __future__ import annotations

from dataclasses import dataclass

from mmim.data.errors import DataError

SKIPPED_WHERE_KEY = "_skipped_where"


@dataclass(frozen=True)
class Skipped:
    """A sample the loader skipped (``data.skip_corrupt``); ``reason`` names its file or shard and member."""

    reason: str


class TooManySkippedError(DataError):
    """More than ``data.max_skip_fraction`` of the samples read so far were corrupt."""


class SkipBudget:
    """Counts samples read and skipped by this process and stops the run past the cap.

    Args:
        max_fraction: largest allowed ``skipped / read`` (``None``: no cap).
    """

    def __init__(self, max_fraction: float | None) -> None:
        if max_fraction is not None and not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"data.max_skip_fraction must be in [0, 1], got {max_fraction!r}")
        self.max_fraction = max_fraction
        self.read, self.skipped, self.last = 0, 0, ""

    def update(self, read: int, skipped: int, where: list[str] | None = None) -> None:
        """Add one batch: ``read`` samples asked for, ``skipped`` of them corrupt (``where``: their names).

        Raises:
            TooManySkippedError: the skipped fraction passed the cap; names the last corrupt sample.
        """
        self.read, self.skipped = self.read + read, self.skipped + skipped
        if where:
            self.last = where[-1]
        if self.max_fraction is not None and self.skipped > self.max_fraction * self.read:
            raise TooManySkippedError(
                f"{self.skipped} of {self.read} samples read were corrupt ({self.skipped / self.read:.2%}), more than "
                f"data.max_skip_fraction={self.max_fraction}; last: {self.last or 'unnamed'}. Fix or remove the "
                f"bad files (or repack the shards), or raise the cap"
            )
