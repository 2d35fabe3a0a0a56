"""Structured spectrogram masking from Audio-MAE's ablations: whole time steps, whole mel bands, or both.

On the time-major ``(T', F')`` token grid (``token = t * F' + f``), a masker keeps
``int(T' * (1 - time_ratio))`` time columns and ``int(F' * (1 - freq_ratio))`` mel rows, each
chosen per sample as the lowest values of uniform noise ``rand(B, T')`` then ``rand(B, F')``
drawn from the generator; the visible tokens are their crossing, so every sample has the same
count. This is the official ``random_masking_2d`` (``mask_2d=True``, ``mask_t_prob``/``mask_f_prob``):
noise for both axes is always drawn (an axis at ratio 0 keeps everything), and visible and masked
tokens each come in increasing token order. Unstructured masking is the core ``random`` masker
(Audio-MAE's pre-training default, ratio 0.8).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmim.interfaces import Masker
from mmim.types import Layout, StreamMask


def _masked_positions(batch: int, length: int, ratio: float, generator: torch.Generator) -> Tensor:
    """``(B, length)`` bool, True at the ``length - int(length * (1 - ratio))`` highest-noise positions."""
    keep = int(length * (1 - ratio))
    noise = torch.rand(batch, length, generator=generator, device=generator.device)
    order = torch.argsort(noise, dim=1).cpu()
    return torch.ones(batch, length, dtype=torch.bool).scatter_(1, order[:, :keep], False)


def _check_ratio(name: str, ratio: float) -> float:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {ratio}")
    return float(ratio)


class TimeFrequencyMasker(Masker):
    """Mask whole time steps and whole mel bands of the token grid (Audio-MAE "time+frequency").

    Args:
        time_ratio: fraction of the ``T'`` time columns to mask (official ``mask_t_prob``, default 0.7).
        freq_ratio: fraction of the ``F'`` mel rows to mask (official ``mask_f_prob``, default 0.3).
            The masked share of the tokens is ``1 - (1 - time_ratio) (1 - freq_ratio)`` up to
            rounding (0.79 with the defaults; Audio-MAE fine-tunes with 0.2 / 0.2).
    """

    def __init__(self, time_ratio: float = 0.7, freq_ratio: float = 0.3) -> None:
        self.time_ratio = _check_ratio("time_ratio", time_ratio)
        self.freq_ratio = _check_ratio("freq_ratio", freq_ratio)
        if self.time_ratio == 0.0 and self.freq_ratio == 0.0:
            raise ValueError("time_ratio and freq_ratio are both 0: nothing would be masked")

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        if len(layout.grid) != 2:
            raise ValueError(f"{type(self).__name__} needs a 2-D (time, frequency) token grid, got grid {layout.grid}")
        batch, (time, freq) = layout.batch_size, layout.grid
        masked_time = _masked_positions(batch, time, self.time_ratio, generator)  # (B, T')
        masked_freq = _masked_positions(batch, freq, self.freq_ratio, generator)  # (B, F')
        hidden = masked_time.unsqueeze(2) | masked_freq.unsqueeze(1)  # (B, T', F')
        if hidden.all():
            raise ValueError(f"{type(self).__name__} with ratios ({self.time_ratio}, {self.freq_ratio}) masks "
                             f"every token of grid {layout.grid}")
        return StreamMask.from_bool(hidden.reshape(batch, -1)).to(layout.device)

    @classmethod
    def example_layout(cls) -> Layout:
        return Layout(batch_size=3, grid=(8, 6))


class TimeMasker(TimeFrequencyMasker):
    """Mask whole time steps: every mel band of a masked time column (Audio-MAE "time").

    Args:
        ratio: fraction of the ``T'`` time columns to mask.
    """

    def __init__(self, ratio: float = 0.8) -> None:
        super().__init__(time_ratio=ratio, freq_ratio=0.0)


class FrequencyMasker(TimeFrequencyMasker):
    """Mask whole mel bands: every time step of a masked mel row (Audio-MAE "frequency").

    Args:
        ratio: fraction of the ``F'`` mel rows to mask.
    """

    def __init__(self, ratio: float = 0.5) -> None:
        super().__init__(time_ratio=0.0, freq_ratio=ratio)
