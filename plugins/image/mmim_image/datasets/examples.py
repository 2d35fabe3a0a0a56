"""Tiny on-disk datasets for the conformance kit (``example_options`` hooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def image_folder_example(root: Path) -> dict[str, Any]:
    """Two classes of two 20x20 RGB PNGs under ``root``; options of an ``image_folder`` reading them at 16x16."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / cls / f"{c}{i}.png")
    return {"root": str(root), "img_size": 16}
