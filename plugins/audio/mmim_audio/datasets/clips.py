"""The audio datasets' shared core: a list of ``(file, label)`` read through Audio-MAE's front end.

An item is ``{"audio": (1, T, F) float32 normalised log-mel fbank, "label": int}`` (plus
``"labels"``, a ``(num_classes,)`` multi-hot float vector, for multi-label data). Per item:
read the file (mono, resampled), optionally pad or crop the waveform to exactly
``target_frames`` (``pad_waveform``), with ``augment`` optionally roll it cyclically and change
its gain (``roll``), compute the Kaldi fbank, pad/crop to ``target_frames``, optionally apply SpecAugment
(``freqm``/``timem``, before normalisation as in the official code), normalise. Augmentation uses
torch's global RNG only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from mmim.data import DataError
from mmim_audio.augment import roll_and_scale, spec_augment
from mmim_audio.frontend import NORM_STATS, TARGET_FRAMES, AudioMAEFrontend
from mmim_audio.io import crop_or_pad, load_audio

SPLIT_ALIASES = {"val": "validation", "valid": "validation", "eval": "test"}


def check_split(split: str, choices: Sequence[str]) -> str:
    """``split`` (after aliases such as ``val`` -> ``validation``) if it is one of ``choices``."""
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a name such as 'train' or 'test', got {split!r}")
    name = SPLIT_ALIASES.get(split, split)
    if split in choices or name in choices:
        return split if split in choices else name
    if name == "validation" and "test" in choices:  # no validation split: evaluate on test
        return "test"
    raise ValueError(f"unknown split {split!r}; this dataset has {', '.join(choices)}")


def spread(n: int, max_samples: int | None) -> list[int]:
    """At most ``max_samples`` of ``range(n)``, evenly spread (keeps every class of a class-sorted list)."""
    if max_samples is None or max_samples >= n:
        return list(range(n))
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples <= 0:
        raise ValueError(f"max_samples must be a positive int or None, got {max_samples!r}")
    return [i * n // max_samples for i in range(max_samples)]


class AudioClipDataset(Dataset):
    """Audio files with class labels, as Audio-MAE feeds them.

    Args:
        samples: ``[(path, label or [labels])]``.
        classes: class names; labels index into it.
        augment: training augmentation (``roll``, ``freqm``, ``timem``); off for evaluation.
        sample_rate: rate files are resampled to (Hz).
        num_mel_bins: ``F``.
        target_frames: ``T`` (10 ms frames); shorter clips are padded with 0 frames at the end.
        norm_mean, norm_std: fbank statistics for ``(x - mean) / (2 std)``.
        pad_waveform: zero-pad (or cut, keeping the start) the waveform to exactly
            ``target_frames`` frames, so a short clip ends in digital silence (the fbank's log
            floor) instead of Audio-MAE's 0-valued padding frames; for short clips such as words.
        roll: with ``augment``, Audio-MAE's random cyclic roll and gain of the waveform (a random
            time shift of the word when combined with ``pad_waveform``).
        freqm, timem: with ``augment``, SpecAugment's largest frequency / time mask (0: off).
        max_samples: keep at most this many samples, evenly spread.
        backend: fbank backend (``auto``, ``torch``, ``torchaudio``).
        cache: keep each clip's fixed-length fbank in memory after the first read (not used when
            ``roll`` changes the waveform; SpecAugment still applies). For small datasets.

    Attributes:
        classes, num_classes, samples, frontend, multi_label.
    """

    def __init__(self, samples: Sequence[tuple[str, int | Sequence[int]]], classes: Sequence[str], augment: bool,
                 sample_rate: int = 16000, num_mel_bins: int = 128, target_frames: int = TARGET_FRAMES["audioset"],
                 norm_mean: float = NORM_STATS["audioset"][0], norm_std: float = NORM_STATS["audioset"][1],
                 pad_waveform: bool = False, roll: bool = False, freqm: int = 0, timem: int = 0,
                 max_samples: int | None = None, backend: str = "auto", cache: bool = False) -> None:
        if not samples:
            raise DataError(f"{type(self).__name__}: no audio files found")
        self.samples = [samples[i] for i in spread(len(samples), max_samples)]
        self.classes, self.num_classes = list(classes), len(classes)
        self.multi_label = any(not isinstance(label, int) for _, label in self.samples)
        self.augment, self.roll, self.freqm, self.timem = augment, roll, freqm, timem
        if pad_waveform and target_frames is None:
            raise ValueError("pad_waveform needs a target_frames")
        self.pad_waveform = pad_waveform
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.sample_rate = sample_rate
        self.frontend = AudioMAEFrontend(sample_rate, num_mel_bins, target_frames, mean=norm_mean, std=norm_std,
                                         backend=backend)

    def __len__(self) -> int:
        return len(self.samples)

    def raw_fbank(self, path: str) -> torch.Tensor:
        """Fixed-length un-normalised fbank ``(target_frames, F)`` of one file (rolled if ``augment`` and ``roll``)."""
        waveform = load_audio(path, self.sample_rate)
        if self.pad_waveform:
            waveform = crop_or_pad(waveform, self.frontend.samples_for_frames)
        if self.augment and self.roll:
            waveform = roll_and_scale(waveform)
        return self.frontend.fix_length(self.frontend.fbank(waveform))

    def features(self, index: int) -> torch.Tensor:
        """The model input ``(1, target_frames, num_mel_bins)`` of sample ``index`` (augmented if ``augment``)."""
        path = self.samples[index][0]
        cacheable = self.cache is not None and not (self.augment and self.roll)
        if cacheable and index in self.cache:
            fbank = self.cache[index]
        else:
            fbank = self.raw_fbank(path)
            if cacheable:
                self.cache[index] = fbank
        if self.augment and (self.freqm or self.timem):
            fbank = spec_augment(fbank, self.freqm, self.timem)
        return self.frontend.normalize(fbank)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"audio": (1, T, F) float32, "label": int}`` (+ ``"labels"`` multi-hot when multi-label)."""
        label = self.samples[index][1]
        item: dict[str, Any] = {"audio": self.features(index)}
        if self.multi_label:
            labels = [label] if isinstance(label, int) else list(label)
            item["label"] = labels[0] if labels else -1
            item["labels"] = torch.zeros(self.num_classes).index_fill_(0, torch.tensor(labels, dtype=torch.long), 1.0)
        else:
            item["label"] = label
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, classes={self.num_classes}, augment={self.augment}, "
                f"{self.frontend})")
