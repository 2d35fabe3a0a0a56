"""Audio-MAE's per-clip augmentation: waveform roll + gain, and SpecAugment.

Audio-MAE's fine-tuning mixup (AudioSet) mixes waveforms inside the dataset (the ``mixup`` option of
:class:`~mmim_audio.datasets.clips.AudioClipDataset`); the engine's batch mixup (``finetune.mixup``,
timm's ``Mixup``) is another, image-style choice.

All randomness comes from torch's global RNG, which the engine seeds per sample and per step, so
augmentation is reproducible and resumable.
"""

from __future__ import annotations

import torch
from torch import Tensor


def roll_and_scale(waveform: Tensor) -> Tensor:
    """Audio-MAE's ``roll_mag_aug``: roll ``(N,)`` cyclically by a random offset and scale it by
    ``Beta(10, 10) + 0.5`` (a gain between 0.5 and 1.5, centred on 1)."""
    shift = int(torch.randint(0, waveform.shape[-1], ()))
    gain = torch.distributions.Beta(10.0, 10.0).sample() + 0.5
    return torch.roll(waveform, shift, dims=-1) * gain


def mask_band(x: Tensor, max_width: int, dim: int) -> Tensor:
    """Zero one random band of width ``U[0, max_width)`` along ``dim`` (torchaudio's masking rule)."""
    size = x.shape[dim]
    width = int(torch.rand(()) * min(max_width, size))
    start = int(torch.rand(()) * (size - width))
    if width == 0:
        return x
    index = torch.arange(start, start + width, device=x.device)
    return x.index_fill(dim, index, 0.0)


def spec_augment(fbank: Tensor, freqm: int = 0, timem: int = 0) -> Tensor:
    """SpecAugment as Audio-MAE applies it: one frequency band of up to ``freqm`` mel bins and one time
    span of up to ``timem`` frames set to 0, on the *un-normalised* fbank ``(T, F)``."""
    if freqm > 0:
        fbank = mask_band(fbank, freqm, dim=-1)
    if timem > 0:
        fbank = mask_band(fbank, timem, dim=-2)
    return fbank
