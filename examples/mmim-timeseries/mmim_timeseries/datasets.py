"""A procedural labelled dataset of multichannel signals: no files, no download, fully deterministic."""

from __future__ import annotations

import numpy as np
import torch
from mmim.data.errors import DataError
from torch import Tensor
from torch.utils.data import Dataset

SPLITS = {"train": 0, "val": 1, "test": 2}


def _sine(rng: np.random.Generator, t: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """Channels are phase-lagged copies of one sine (a travelling wave)."""
    freq, phase, lag = rng.uniform(2.0, 6.0), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.2)
    return np.sin(2 * np.pi * freq * t + phase - lag * ch)


def _square(rng: np.random.Generator, t: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """Channels are the same in-phase square wave with different gains."""
    freq, phase = rng.uniform(2.0, 6.0), rng.uniform(0, 2 * np.pi)
    gains = rng.uniform(0.4, 1.2, size=ch.shape)
    return gains * np.sign(np.sin(2 * np.pi * freq * t + phase))


def _sawtooth(rng: np.random.Generator, t: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """Channels alternate between a rising and a falling sawtooth (anti-correlated)."""
    freq, offset = rng.uniform(2.0, 6.0), rng.uniform(0.0, 1.0)
    ramp = 2.0 * np.mod(freq * t + offset, 1.0) - 1.0
    return np.where(ch % 2 == 0, 1.0, -1.0) * ramp


def _chirp(rng: np.random.Generator, t: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """A linear frequency sweep; channel ``c`` sees it delayed by ``c`` steps of a random delay."""
    f0, f1, delay = rng.uniform(1.0, 3.0), rng.uniform(6.0, 10.0), rng.uniform(0.02, 0.08)
    tc = t - delay * ch
    return np.sin(2 * np.pi * (f0 * tc + 0.5 * (f1 - f0) * tc**2) + rng.uniform(0, 2 * np.pi))


def _damped(rng: np.random.Generator, t: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """One oscillation decaying at an independent rate in every channel."""
    freq, phase = rng.uniform(2.0, 6.0), rng.uniform(0, 2 * np.pi)
    decay = rng.uniform(1.5, 6.0, size=ch.shape)
    return 1.5 * np.exp(-decay * t) * np.sin(2 * np.pi * freq * t + phase)


def _ar1(rng: np.random.Generator, t: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """AR(1) noise per channel whose innovations share a common component (correlation ``rho``)."""
    phi, rho = rng.uniform(0.8, 0.97), rng.uniform(0.5, 0.95)
    shared = rng.standard_normal(t.shape[-1])
    innov = rho * shared + np.sqrt(1 - rho**2) * rng.standard_normal((ch.shape[0], t.shape[-1]))
    out = np.empty_like(innov)
    out[:, 0] = innov[:, 0]
    for i in range(1, out.shape[1]):
        out[:, i] = phi * out[:, i - 1] + np.sqrt(1 - phi**2) * innov[:, i]  # unit stationary variance
    return out


GENERATORS = {"sine": _sine, "square": _square, "sawtooth": _sawtooth, "chirp": _chirp,
              "damped_oscillation": _damped, "ar1_noise": _ar1}


class SyntheticSignals(Dataset):
    """Procedurally generated multichannel signals in six classes; nothing is read from disk.

    Sample ``i`` of a split is generated from a NumPy generator seeded with
    ``(seed, split, i)``, so it is the same every time and in every worker, and the splits
    differ. Its label is ``i % num_classes`` (balanced classes). Each class couples its channels
    differently: phase-lagged sines, in-phase square waves with per-channel gains, alternating
    rising/falling sawtooths, time-delayed chirps, oscillations with per-channel decay, and AR(1)
    noise with correlated innovations. Frequency, phase, amplitude and noise level are random
    per sample; frequencies are in cycles per window.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        augment: random amplitude scaling (0.8-1.2) and Gaussian jitter (std 0.02), drawn from
            torch's global RNG (so DataLoader workers get their own streams).
        num_samples: samples per split.
        channels: channels ``C`` of every series.
        length: time steps ``T`` of every series.
        seed: dataset seed.

    Items are ``{"series": float32 tensor (C, T), "label": int}``.
    """

    classes: tuple[str, ...] = tuple(GENERATORS)
    num_classes: int = len(GENERATORS)

    def __init__(self, split: str, augment: bool, num_samples: int = 2000, channels: int = 3, length: int = 96,
                 seed: int = 0) -> None:
        if split not in SPLITS:
            raise DataError(f"synthetic_signals: unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if num_samples <= 0 or channels <= 0 or length <= 1:
            raise DataError(f"synthetic_signals: need num_samples > 0, channels > 0 and length > 1, "
                            f"got {num_samples}, {channels}, {length}")
        self.split, self.augment = split, augment
        self.num_samples, self.channels, self.length, self.seed = num_samples, channels, length, seed

    def __len__(self) -> int:
        return self.num_samples

    def generate(self, index: int) -> tuple[np.ndarray, int]:
        """The clean series ``(C, T)`` float64 and label of sample ``index`` (no augmentation)."""
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        label = index % self.num_classes
        t = np.arange(self.length, dtype=np.float64) / self.length
        ch = np.arange(self.channels, dtype=np.float64)[:, None]
        signal = GENERATORS[self.classes[label]](rng, t, ch) * np.ones((self.channels, 1))
        amplitude, offset, noise = rng.uniform(0.5, 1.5), rng.uniform(-0.3, 0.3), rng.uniform(0.02, 0.15)
        series = amplitude * signal + offset + noise * rng.standard_normal(signal.shape)
        return series, label

    def __getitem__(self, index: int) -> dict[str, Tensor | int]:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"synthetic_signals: index {index} out of range for {self.num_samples} samples")
        series, label = self.generate(index % self.num_samples)
        return self._item(series, label)

    def _item(self, series: np.ndarray, label: int) -> dict[str, Tensor | int]:
        x = torch.from_numpy(series).to(torch.float32)
        if self.augment:
            x = x * (0.8 + 0.4 * torch.rand(())) + 0.02 * torch.randn_like(x)
        return {"series": x, "label": label}

    # mmim's shard protocol (mmim pack / data.shards): the clean series as .npy plus its label
    def shard_record(self, index: int) -> dict[str, object]:
        from mmim.data.records import npy_bytes

        series, label = self.generate(index)
        return {"npy": npy_bytes(series), "json": {"label": label}}

    def decode_record(self, record: dict[str, object], where: str) -> dict[str, Tensor | int]:
        from mmim.data.records import main_member, meta_of, read_npy

        _, data = main_member(record, where)
        return self._item(read_npy(data, where), int(meta_of(record, where)["label"]))
