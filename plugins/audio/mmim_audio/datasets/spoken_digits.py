"""Spoken digits: 480 embedded FLAC clips of "zero" ... "nine" in 16 synthetic voices (espeak-ng).

Built by ``plugins/audio/scripts/build_embedded_digits.py`` (see the data folder's README for
source and license). 12 voices form the ``train`` split (360 clips), 4 held-out voices the
``test`` split (120 clips): a probe on ``test`` measures recognising digits in unseen voices.
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_audio.datasets.clips import AudioClipDataset, check_split

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# fbank statistics of the embedded train split (128 mel bins, waveform padded to 64 frames)
NORM_STATS = (-9.146255, 6.120460)


def embedded_root() -> Path:
    """The folder of the clips shipped in ``mmim_audio/data/spoken_digits``."""
    return Path(str(resources.files("mmim_audio"))) / "data" / "spoken_digits"


class SpokenDigits(AudioClipDataset):
    """Spoken digit words, 10 classes, from an ``index.csv`` (``file,label,...,split``) and its clips.

    Args:
        split: ``"train"`` or ``"test"`` (``"val"`` reads ``"test"``).
        augment: training augmentation (see :class:`~mmim_audio.datasets.clips.AudioClipDataset`).
        root: folder with ``index.csv`` and the clips; ``None`` for the embedded set.
        target_frames: frames per clip (64 = 0.655 s holds 99% of the embedded clips whole; the
            rest lose their end).
        pad_waveform: pad clips with digital silence to ``target_frames`` (default here).
        cache: keep the fbanks in memory (default here; about 50 KB per clip at 128 mel bins).
        norm_mean, norm_std: default: the embedded train split's statistics.
        **options: further :class:`AudioClipDataset` options (``num_mel_bins``, ``roll``, ``freqm``, ...).

    Items: ``{"audio": (1, target_frames, num_mel_bins) float32, "label": int}``.
    """

    def __init__(self, split: str, augment: bool, root: str | None = None, target_frames: int = 64,
                 pad_waveform: bool = True, cache: bool = True, norm_mean: float = NORM_STATS[0],
                 norm_std: float = NORM_STATS[1],
                 **options: Any) -> None:
        self.split = check_split(split, ("train", "test"))
        self.root = embedded_root() if root is None else Path(root).expanduser()
        index = self.root / "index.csv"
        if not index.is_file():
            raise DataError(f"{self.root}: no index.csv (columns file,label,...,split)")
        with open(index, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = {"file", "label", "split"} - set(rows[0] if rows else {})
        if missing:
            raise DataError(f"{index}: missing columns {', '.join(sorted(missing))}")
        samples = []
        for line, row in enumerate(rows, start=2):
            if row["split"] != self.split:
                continue
            label = int(row["label"])
            if not 0 <= label < len(DIGITS):
                raise DataError(f"{index}:{line}: label {label} is not a digit 0-9")
            samples.append((str(self.root / row["file"]), label))
        super().__init__(samples, DIGITS, augment, target_frames=target_frames, pad_waveform=pad_waveform,
                         cache=cache, norm_mean=norm_mean, norm_std=norm_std, **options)
