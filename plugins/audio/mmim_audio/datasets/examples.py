"""Tiny on-disk datasets for the conformance kit (``example_options`` hooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def audio_folder_example(root: Path) -> dict[str, Any]:
    """Two classes of two 0.3 s 16 kHz tones (WAV) under ``root``; options of an ``audio_folder``."""
    import soundfile

    t = np.arange(4800) / 16000
    for c, cls in enumerate(("low", "high")):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            soundfile.write(root / cls / f"{c}{i}.wav", 0.3 * np.sin(2 * np.pi * (300 + 500 * c + 50 * i) * t), 16000)
    return {"root": str(root), "target_frames": 32, "num_mel_bins": 32}


def audio_list_example(root: Path) -> dict[str, Any]:
    """The tones of :func:`audio_folder_example` listed in a ``path,label`` CSV; options of an ``audio_list``."""
    options = audio_folder_example(root)
    rows = [f"{p.relative_to(root).as_posix()},{p.parent.name}" for p in sorted(root.rglob("*.wav"))]
    (root / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    return {**{k: v for k, v in options.items() if k != "root"}, "data_file": str(root / "list.csv"),
            "classes": ["low", "high"]}


def speech_commands_example(root: Path) -> dict[str, Any]:
    """The tones of :func:`audio_folder_example` as word folders, one file each held out in the
    official ``validation_list.txt`` / ``testing_list.txt``; options of a ``speech_commands``."""
    options = audio_folder_example(root)
    (root / "validation_list.txt").write_text("low/01.wav\n")
    (root / "testing_list.txt").write_text("high/11.wav\n")
    return options


def esc50_example(root: Path) -> dict[str, Any]:
    """The ``ESC-50-master`` layout: ``meta/esc50.csv`` and ``audio/`` holding four tones of two
    classes in folds 1 and 2; options of an ``esc50`` (fold 1 held out)."""
    import soundfile

    t = np.arange(4800) / 16000
    (root / "audio").mkdir()
    (root / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i, (fold, target, category) in enumerate([(1, 0, "dog"), (2, 0, "dog"), (1, 1, "rain"), (2, 1, "rain")]):
        name = f"{fold}-{100 + i}-A-{target}.wav"
        soundfile.write(root / "audio" / name, 0.3 * np.sin(2 * np.pi * (300 + 400 * target) * t), 16000)
        rows.append(f"{name},{fold},{target},{category},True,{100 + i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    return {"root": str(root), "target_frames": 32, "num_mel_bins": 32}
