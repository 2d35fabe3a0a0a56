"""Tiny on-disk datasets for the conformance kit (``example_options`` hooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def point_folder_example(root: Path) -> dict[str, Any]:
    """Two classes of two 96-point clouds as ``.xyz`` text under ``root``; options of a ``point_folder``."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("ball", "box")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            pts = rng.normal(size=(96, 3))
            pts = pts / np.linalg.norm(pts, axis=1, keepdims=True) if c == 0 else rng.uniform(-1, 1, (96, 3))
            np.savetxt(root / cls / f"{c}{i}.xyz", pts, fmt="%.6f")
    return {"root": str(root), "num_points": 64, "min_points": 32}
