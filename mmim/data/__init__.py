"""Data plumbing shared by every modality: errors, seeded sampling, collation with skips."""

from mmim.data.errors import CorruptSampleError, DataError

__all__ = ["CorruptSampleError", "DataError"]
