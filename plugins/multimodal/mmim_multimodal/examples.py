"""Tiny on-disk datasets for the conformance kit (``example_options`` hooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def multitask_folder_example(root: Path) -> dict[str, Any]:
    """``train/{rgb,depth,semseg}/<class>/<name>.png`` for two classes of two 16x16 samples (depth
    as 16-bit PNG, semseg as class indices); options of a ``multitask_folder``."""
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        for i in range(2):
            for task, array in (("rgb", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)),
                                ("depth", rng.integers(1000, 60000, (16, 16), dtype=np.uint16)),
                                ("semseg", rng.integers(0, 4, (16, 16), dtype=np.uint8))):
                folder = root / "train" / task / cls
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(folder / f"{cls}{i}.png")
    return {"root": str(root), "input_size": 16, "semseg_stride": 4}
