"""File helpers every layer may use."""

from __future__ import annotations

import os
from pathlib import Path


def usual_mode(path: str | Path) -> Path:
    """Give ``path`` the mode of any other new file (0644 under the usual umask): safetensors creates its
    files 0600, private to their owner."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return Path(path)
