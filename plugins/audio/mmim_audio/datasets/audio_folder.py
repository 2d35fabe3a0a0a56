"""Audio files in class folders: ``root/<split>/<class>/<file>`` or ``root/<class>/<file>``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_audio.datasets.clips import AudioClipDataset
from mmim_audio.io import EXTENSIONS

SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "test"})


def class_folders(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


class AudioFolder(AudioClipDataset):
    """Audio files found recursively under class folders; classes are the sorted folder names.

    If ``root/<split>`` does not exist and ``root`` holds no split folder (``train``, ``val``,
    ``valid``, ``validation``, ``test``), the subfolders of ``root`` are the classes and every
    split reads the same files.

    Args:
        split: split folder name.
        augment: training augmentation.
        root: dataset folder.
        extensions: file name endings that count as audio (case-insensitive).
        **options: :class:`AudioClipDataset` options.
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_audio.datasets.examples import audio_folder_example

        return audio_folder_example(root)

    def __init__(self, split: str, augment: bool, root: str, extensions: Sequence[str] = EXTENSIONS,
                 **options: Any) -> None:
        self.split, self.root = split, Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: audio folder root does not exist")
        folder = self.root / split
        if not folder.is_dir():
            splits = sorted(p.name for p in class_folders(self.root) if p.name.lower() in SPLIT_NAMES)
            if splits:
                raise DataError(f"{self.root}: no split folder {split!r} (found {', '.join(splits)})")
            folder = self.root
        self.folder = folder
        exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        classes = [p.name for p in class_folders(folder)]
        if not classes:
            raise DataError(f"{folder}: no class folders (expected <root>/<split>/<class>/<file>)")
        samples = []
        for label, name in enumerate(classes):
            for dirpath, dirnames, files in os.walk(folder / name, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                samples += [(os.path.join(dirpath, f), label) for f in sorted(files)
                            if not f.startswith(".") and f.lower().endswith(exts)]
        if not samples:
            raise DataError(f"{folder}: no files ending in {', '.join(exts)} in its {len(classes)} class folders")
        super().__init__(samples, classes, augment, **options)

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, **options: Any) -> AudioFolder:
        """Decodes shard records without the audio folder."""
        return cls._shard_decoder(augment, options, ("root", "extensions"))
