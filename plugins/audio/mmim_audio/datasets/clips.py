"""The audio datasets' shared core: a list of ``(file, label)`` read through Audio-MAE's front end.

An item is ``{"audio": (1, T, F) float32 normalised log-mel fbank, "label": int}``; for
multi-label data, or when ``mixup`` is on, ``"label"`` is instead a ``(num_classes,)`` float32
vector (multi-hot, or the mixed soft target), which batches to ``(B, num_classes)`` for a BCE loss
(``finetune.multilabel: true``). Per item: read the file (mono, resampled), optionally pad or crop
the waveform to exactly ``target_frames`` (``pad_waveform``), remove its mean, with ``augment``
optionally roll it cyclically and change its gain (``roll``) and mix it with another clip
(``mixup``), compute the Kaldi fbank, pad/crop to ``target_frames``, optionally apply SpecAugment
(``freqm``/``timem``, before normalisation as in the official code), normalise. Augmentation uses
torch's global RNG only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from mmim.data import DataError
from mmim.data.records import file_record, main_member, meta_of, spilled
from mmim_audio.augment import roll_and_scale, spec_augment
from mmim_audio.frontend import NORM_STATS, TARGET_FRAMES, AudioMAEFrontend
from mmim_audio.io import crop_or_pad, load_audio

SPLIT_ALIASES = {"val": "validation", "valid": "validation", "eval": "test"}
MIXUP_BETA = 10.0  # Audio-MAE (after AST) draws the mixing weight from Beta(10, 10)


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
        mixup: with ``augment``, the probability of mixing a clip with a uniformly drawn other clip
            of the dataset (Audio-MAE's AudioSet fine-tuning: 0.5): waveforms (each mean-removed and
            rolled) mixed as ``l * a + (1 - l) * b`` with ``l ~ Beta(10, 10)``, the second cut or
            zero-padded to the first's length, and the targets mixed alike (a label both clips carry
            stays 1). Turns ``"label"`` into a float vector for every item (mixed or not).
        max_samples: keep at most this many samples, evenly spread.
        backend: fbank backend (``auto``, ``torch``, ``torchaudio``).
        cache: keep each clip's fixed-length fbank in memory after the first read (not used when
            ``roll`` changes the waveform; SpecAugment still applies). For small datasets.

    Attributes:
        classes, num_classes, samples, frontend, multi_label, multi_hot (``"label"`` is a vector).
    """

    def __init__(self, samples: Sequence[tuple[str, int | Sequence[int]]], classes: Sequence[str], augment: bool,
                 sample_rate: int = 16000, num_mel_bins: int = 128, target_frames: int = TARGET_FRAMES["audioset"],
                 norm_mean: float = NORM_STATS["audioset"][0], norm_std: float = NORM_STATS["audioset"][1],
                 pad_waveform: bool = False, roll: bool = False, freqm: int = 0, timem: int = 0,
                 mixup: float = 0.0, max_samples: int | None = None, backend: str = "auto",
                 cache: bool = False) -> None:
        if not samples:
            raise DataError(f"{type(self).__name__}: no audio files found")
        self.samples = [samples[i] for i in spread(len(samples), max_samples)]
        self.classes, self.num_classes = list(classes), len(classes)
        self.multi_label = any(not isinstance(label, int) for _, label in self.samples)
        self.augment, self.roll, self.freqm, self.timem = augment, roll, freqm, timem
        if not 0.0 <= mixup <= 1.0:
            raise ValueError(f"mixup is a probability in [0, 1], got {mixup!r}")
        self.mixup = float(mixup)
        self.multi_hot = self.multi_label or self.mixup > 0
        bad = next(((p, lab) for p, lab in self.samples
                    if any(not 0 <= i < self.num_classes for i in ([lab] if isinstance(lab, int) else lab))), None)
        if bad is not None:
            raise DataError(f"{bad[0]}: label {bad[1]} outside 0..{self.num_classes - 1}")
        if pad_waveform and target_frames is None:
            raise ValueError("pad_waveform needs a target_frames")
        self.pad_waveform = pad_waveform
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None
        self.sample_rate = sample_rate
        self.frontend = AudioMAEFrontend(sample_rate, num_mel_bins, target_frames, mean=norm_mean, std=norm_std,
                                         backend=backend)

    def __len__(self) -> int:
        return len(self.samples)

    def waveform(self, path: str) -> torch.Tensor:
        """Mono ``(N,)`` waveform of one file, mean removed (padded/cut, rolled if configured)."""
        waveform = load_audio(path, self.sample_rate)
        if self.pad_waveform:
            waveform = crop_or_pad(waveform, self.frontend.samples_for_frames)
        waveform = waveform - waveform.mean()
        if self.augment and self.roll:
            waveform = roll_and_scale(waveform)
        return waveform

    def raw_fbank(self, path: str) -> torch.Tensor:
        """Fixed-length un-normalised fbank ``(target_frames, F)`` of one file (rolled if ``augment`` and ``roll``)."""
        return self.frontend.fix_length(self.frontend.fbank(self.waveform(path)))

    def mixed_fbank(self, first: int, second: int, lam: float) -> torch.Tensor:
        """Fixed-length un-normalised fbank of ``lam * clip[first] + (1 - lam) * clip[second]`` (waveforms)."""
        a, b = self.waveform(self.samples[first][0]), self.waveform(self.samples[second][0])
        b = b[: a.shape[0]] if b.shape[0] >= a.shape[0] else torch.nn.functional.pad(b, (0, a.shape[0] - b.shape[0]))
        return self.frontend.fix_length(self.frontend.fbank(lam * a + (1.0 - lam) * b))

    def target(self, index: int) -> torch.Tensor:
        """Multi-hot float32 ``(num_classes,)`` target of sample ``index``."""
        label = self.samples[index][1]
        labels = torch.tensor([label] if isinstance(label, int) else list(label), dtype=torch.long)
        return torch.zeros(self.num_classes).index_fill_(0, labels, 1.0)

    def sample_weights(self) -> torch.Tensor:
        """Per-sample weights for class-balanced sampling, ``(N,)`` float64 (Audio-MAE's AudioSet rule).

        A class seen ``n_c`` times weighs ``1000 / (n_c + 0.01)``; a sample weighs the sum over its
        labels (the official ``gen_weight.py``, after AST). For a ``WeightedRandomSampler``: the
        paper draws 200,000 clips per AS-2M fine-tuning epoch without replacement.
        """
        targets = torch.stack([self.target(i) for i in range(len(self))]).double()
        class_weight = 1000.0 / (targets.sum(0) + 0.01)
        return targets @ class_weight

    def features(self, index: int) -> torch.Tensor:
        """The model input ``(1, target_frames, num_mel_bins)`` of sample ``index`` (augmented if ``augment``)."""
        return self._finish(self._fbank(index))

    def _fbank(self, index: int) -> torch.Tensor:
        path = self.samples[index][0]
        cacheable = self.cache is not None and not (self.augment and self.roll)
        if cacheable and index in self.cache:
            return self.cache[index]
        fbank = self.raw_fbank(path)
        if cacheable:
            self.cache[index] = fbank
        return fbank

    def _finish(self, fbank: torch.Tensor) -> torch.Tensor:
        if self.augment and (self.freqm or self.timem):
            fbank = spec_augment(fbank, self.freqm, self.timem)
        return self.frontend.normalize(fbank)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"audio": (1, T, F) float32, "label": int}``, or ``"label"`` ``(num_classes,)`` float32 when
        :attr:`multi_hot` (multi-label data or ``mixup``)."""
        if self.augment and self.mixup > 0 and float(torch.rand(())) < self.mixup:
            other = int(torch.randint(len(self), ()))
            lam = float(torch.distributions.Beta(MIXUP_BETA, MIXUP_BETA).sample())
            fbank = self.mixed_fbank(index, other, lam)
            return {"audio": self._finish(fbank), "label": lam * self.target(index) + (1.0 - lam) * self.target(other)}
        audio = self.features(index)
        return {"audio": audio, "label": self.target(index) if self.multi_hot else self.samples[index][1]}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n={len(self)}, classes={self.num_classes}, augment={self.augment}, "
                f"{self.frontend})")

    # the shard protocol (mmim.data.records): the original audio file, read by the same front end.
    # With mixup the partner clip is the sample itself: a stream has no random access to others.
    def shard_record(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        return file_record(path, {"label": label if isinstance(label, int) else list(label),
                                  "num_classes": self.num_classes, "multi_label": self.multi_label})

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        ext, data = main_member(record, where)
        meta = meta_of(record, where)
        label = meta["label"]
        with spilled(ext, data) as path:
            view = copy.copy(self)
            view.samples, view.cache = [(path, label if isinstance(label, int) else tuple(label))], None
            if "num_classes" in meta:  # a shard_decoder has no class list of its own
                view.num_classes, view.multi_label = int(meta["num_classes"]), bool(meta["multi_label"])
                view.multi_hot = view.multi_label or view.mixup > 0
            return view[0]

    @classmethod
    def _shard_decoder(cls, augment: bool, options: dict[str, Any], file_options: Sequence[str]) -> AudioClipDataset:
        """An instance of ``cls`` that only decodes shard records (classes come with each record):
        the :class:`AudioClipDataset` options without ``file_options``, no samples."""
        self = cls.__new__(cls)
        AudioClipDataset.__init__(self, [("", 0)], ["?"], augment,
                                  **{k: v for k, v in options.items() if k not in file_options})
        self.samples = []
        return self
