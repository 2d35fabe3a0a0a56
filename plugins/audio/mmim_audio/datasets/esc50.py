"""ESC-50 (Piczak 2015): 2,000 five-second environmental sounds in 50 classes and 5 folds.

Layout of the official release (``ESC-50-master``)::

    root/meta/esc50.csv        filename,fold,target,category,esc10,src_file,take
    root/audio/<filename>      44.1 kHz mono WAV

The test split is one fold and the train split the four others (5-fold cross-validation).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_audio.datasets.clips import AudioClipDataset, check_split
from mmim_audio.frontend import NORM_STATS, TARGET_FRAMES

# Audio-MAE's ESC-50 settings: 512 frames (5.12 s), dataset statistics
ESC50_FRAMES, ESC50_STATS = TARGET_FRAMES["esc50"], NORM_STATS["esc50"]


class ESC50(AudioClipDataset):
    """ESC-50 read from its official folder layout.

    Args:
        split: ``"train"`` (the folds other than ``fold``) or ``"test"`` (``fold``; ``"val"`` too).
        augment: training augmentation.
        root: the ``ESC-50-master`` folder.
        fold: held-out fold, 1-5.
        esc10: only the 10-class ESC-10 subset (labels re-indexed 0-9).
        **options: :class:`AudioClipDataset` options (defaults: 512 frames, ESC-50 statistics).
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_audio.datasets.examples import esc50_example

        return esc50_example(root)

    # defaults it gives the AudioClipDataset options (read by the visualizer for audio files)
    option_defaults = {"target_frames": ESC50_FRAMES, "norm_mean": ESC50_STATS[0], "norm_std": ESC50_STATS[1]}

    def __init__(self, split: str, augment: bool, root: str, fold: int = 1, esc10: bool = False,
                 **options: Any) -> None:
        self.split = check_split(split, ("train", "test"))
        if fold not in range(1, 6):
            raise ValueError(f"ESC-50 folds are 1-5, got {fold!r}")
        self.root, self.fold = Path(root).expanduser(), fold
        meta = self.root / "meta" / "esc50.csv"
        if not meta.is_file():
            raise DataError(f"{self.root}: no meta/esc50.csv (expected the ESC-50-master layout)")
        try:
            with open(meta, newline="") as f:
                rows = list(csv.DictReader(f))
        except UnicodeDecodeError as err:
            raise DataError(f"{meta}: not a UTF-8 CSV ({err.reason} at byte {err.start})") from None
        missing = [c for c in ("filename", "fold", "target", "category") if rows and c not in rows[0]]
        if not rows or missing:
            raise DataError(f"{meta}: expected the columns filename,fold,target,category,esc10 (missing {missing or 'all rows'})")
        if esc10:
            rows = [r for r in rows if r.get("esc10", "").strip().lower() == "true"]
        names: dict[int, str] = {}
        for line, row in enumerate(rows, start=2):
            try:
                target, _ = int(row["target"]), int(row["fold"])
            except (TypeError, ValueError):
                raise DataError(f"{meta}:{line}: target {row['target']!r} or fold {row['fold']!r} is not an integer") from None
            if names.setdefault(target, row["category"]) != row["category"]:
                raise DataError(f"{meta}:{line}: target {target} is both {names[target]!r} and {row['category']!r}")
        targets = sorted(names)
        index = {t: i for i, t in enumerate(targets)}
        keep = (lambda r: int(r["fold"]) == fold) if self.split == "test" else (lambda r: int(r["fold"]) != fold)
        samples = [(str(self.root / "audio" / r["filename"]), index[int(r["target"])]) for r in rows if keep(r)]
        for key, value in self.option_defaults.items():
            options.setdefault(key, value)
        super().__init__(samples, [names[t] for t in targets], augment, **options)
