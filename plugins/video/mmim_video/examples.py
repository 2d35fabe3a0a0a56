"""Tiny on-disk datasets for the conformance kit (``example_options`` hooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def video_folder_example(root: Path) -> dict[str, Any]:
    """Two classes of two 8-frame 16x16 H.264 clips under ``root`` (written with PyAV); options of a ``video_folder``."""
    import av

    for c, cls in enumerate(("left", "right")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            with av.open(str(root / cls / f"{c}{i}.mp4"), "w") as container:
                stream = container.add_stream("libx264", rate=8)
                stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
                for t in range(8):
                    img = np.full((16, 16, 3), 40, np.uint8)
                    x = (t + 3 * i) % 12 if c == 0 else 11 - (t + 3 * i) % 12
                    img[4:10, x:x + 4] = 220
                    for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
    return {"root": str(root), "num_frames": 4, "sampling_rate": 1, "img_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}


def video_list_example(root: Path) -> dict[str, Any]:
    """The clips of :func:`video_folder_example` named by a ``path label`` list file; options of a ``video_list``."""
    options = video_folder_example(root)
    lines = [f"{p.relative_to(root).as_posix()} {c}" for c, cls in enumerate(("left", "right"))
             for p in sorted((root / cls).glob("*.mp4"))]
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    return {**options, "list_file": str(root / "list.txt")}


def kinetics_csv_example(root: Path) -> dict[str, Any]:
    """The clips of :func:`video_folder_example` under Kinetics names in class folders, and the
    official ``label,youtube_id,time_start,time_end,split`` CSV; options of a ``kinetics_csv``."""
    options = video_folder_example(root)
    rows = ["label,youtube_id,time_start,time_end,split"]
    for cls in ("left", "right"):
        for n, clip in enumerate(sorted((root / cls).glob("*.mp4"))):
            youtube_id = f"{cls}{n}xxxxxxx"[:11]
            clip.rename(clip.with_name(f"{youtube_id}_{0:06d}_{10:06d}.mp4"))
            rows.append(f"{cls},{youtube_id},0,10,train")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return {**options, "csv_file": str(root / "{split}.csv")}
