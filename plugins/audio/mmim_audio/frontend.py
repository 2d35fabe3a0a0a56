"""Audio-MAE's input pipeline: waveform -> Kaldi log-mel fbank -> fixed length -> dataset normalisation.

Audio-MAE (``dataset.py``) subtracts the clip mean from the waveform, computes the Kaldi fbank
(16 kHz, 128 mel bins, 25 ms Hann frames every 10 ms), appends frames of **0.0** at the end (or
keeps the first ``target_frames``) and normalises with ``(x - mean) / (2 * std)`` - note the
factor 2 - using per-dataset statistics (:data:`NORM_STATS`). The model input is ``(1, T, F)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmim_audio.fbank import WINDOWS, frame_sizes, kaldi_fbank, torchaudio_fbank, torchaudio_kaldi

# (mean, std) of the log-mel fbank per dataset, from Audio-MAE's ``norm_stats``.
NORM_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),
    "esc50": (-6.6268077, 5.358466),
    "speechcommands": (-6.845978, 5.5654526),
}
# Frames Audio-MAE feeds per dataset (10 ms each).
TARGET_FRAMES: dict[str, int] = {"audioset": 1024, "esc50": 512, "speechcommands": 128}
BACKENDS = ("auto", "torch", "torchaudio")


def pad_or_crop(fbank: Tensor, target_frames: int) -> Tensor:
    """Append zero frames at the end, or keep the first ``target_frames`` (``(..., T, F)`` -> ``(..., target, F)``)."""
    missing = target_frames - fbank.shape[-2]
    if missing > 0:
        pad = fbank.new_zeros(*fbank.shape[:-2], missing, fbank.shape[-1])
        return torch.cat([fbank, pad], dim=-2)
    return fbank[..., :target_frames, :]


def normalize(fbank: Tensor, mean: float, std: float) -> Tensor:
    """Audio-MAE's normalisation ``(x - mean) / (2 * std)`` (the factor 2 is the official code's)."""
    return (fbank - mean) / (std * 2)


class AudioMAEFrontend:
    """Waveform ``(N,)`` at ``sample_rate`` -> normalised fbank ``(1, target_frames, num_mel_bins)``.

    Args:
        sample_rate: rate of the waveforms it is given (Hz).
        num_mel_bins: ``F``.
        target_frames: ``T`` (1024 for AudioSet, 512 ESC-50, 128 Speech Commands); ``None`` keeps
            every frame.
        frame_length_ms, frame_shift_ms, window: Kaldi frame settings.
        mean, std: normalisation statistics (default: Audio-MAE's AudioSet values); ``std=None``
            disables normalisation.
        backend: ``"torch"`` (built in), ``"torchaudio"`` (``torchaudio.compliance.kaldi``) or
            ``"auto"`` (torchaudio when it imports, else torch); both give the same features.
    """

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 128, target_frames: int | None = 1024,
                 frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, window: str = "hanning",
                 mean: float = NORM_STATS["audioset"][0], std: float | None = NORM_STATS["audioset"][1],
                 backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown fbank backend {backend!r}; choices: {', '.join(BACKENDS)}")
        if window not in WINDOWS:
            raise ValueError(f"unknown window {window!r}; choices: {', '.join(WINDOWS)}")
        if target_frames is not None and target_frames < 1:
            raise ValueError(f"target_frames must be positive or None, got {target_frames}")
        if std is not None and std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        if backend == "torchaudio" and torchaudio_kaldi() is None:
            raise ModuleNotFoundError("fbank backend 'torchaudio' asked for, but torchaudio does not import")
        self.sample_rate, self.num_mel_bins, self.target_frames = sample_rate, num_mel_bins, target_frames
        self.frame_length_ms, self.frame_shift_ms, self.window = frame_length_ms, frame_shift_ms, window
        self.mean, self.std = mean, std
        self.window_samples, self.shift_samples, _ = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
        self.backend = backend if backend != "auto" else ("torchaudio" if torchaudio_kaldi() is not None else "torch")

    @property
    def samples_for_frames(self) -> int | None:
        """Waveform length that gives exactly ``target_frames`` frames (``None`` without a target)."""
        if self.target_frames is None:
            return None
        return self.window_samples + (self.target_frames - 1) * self.shift_samples

    def fbank(self, waveform: Tensor) -> Tensor:
        """Raw log-mel fbank ``(T, F)`` of ``waveform`` ``(N,)`` after removing the clip mean.

        A waveform shorter than one frame is zero-padded to one frame (Kaldi would refuse it).
        """
        if waveform.dim() != 1:
            raise ValueError(f"expected a mono waveform (N,), got {tuple(waveform.shape)}")
        w = waveform - waveform.mean()
        if w.shape[0] < self.window_samples:
            w = F.pad(w, (0, self.window_samples - w.shape[0]))
        compute = torchaudio_fbank if self.backend == "torchaudio" else kaldi_fbank
        return compute(w, self.sample_rate, self.num_mel_bins, self.frame_length_ms, self.frame_shift_ms, self.window)

    def fix_length(self, fbank: Tensor) -> Tensor:
        """Pad with 0.0 frames at the end or keep the first ``target_frames``: ``(T, F)`` -> ``(target_frames, F)``."""
        return pad_or_crop(fbank, self.target_frames) if self.target_frames is not None else fbank

    def normalize(self, fbank: Tensor) -> Tensor:
        """Normalise ``(T, F)`` (unless ``std`` is None) and add the channel: ``(1, T, F)``."""
        return (normalize(fbank, self.mean, self.std) if self.std is not None else fbank).unsqueeze(0)

    def finish(self, fbank: Tensor) -> Tensor:
        """Fix the length and normalise a raw fbank ``(T, F)`` -> ``(1, target_frames, F)``."""
        return self.normalize(self.fix_length(fbank))

    def __call__(self, waveform: Tensor) -> Tensor:
        """``(N,)`` waveform -> ``(1, target_frames, F)`` float32 model input."""
        return self.finish(self.fbank(waveform))

    def __repr__(self) -> str:
        return (f"AudioMAEFrontend(sample_rate={self.sample_rate}, num_mel_bins={self.num_mel_bins}, "
                f"target_frames={self.target_frames}, mean={self.mean}, std={self.std}, backend={self.backend!r})")
