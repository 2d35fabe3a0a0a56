"""Kaldi-compatible log-mel filterbank in plain torch (``torchaudio.compliance.kaldi.fbank``'s maths).

Only the settings a log-mel front end needs are exposed; the rest are Kaldi's defaults as
Audio-MAE leaves them: ``snip_edges=True`` (frames fully inside the signal), ``dither=0``,
``use_energy=False``, ``use_power=True``, ``use_log_fbank=True``, ``vtln_warp=1``. With those,
``htk_compat`` and the energy options have no effect. Per frame of ``window`` samples, taken
every ``shift`` samples:

1. subtract the frame's own mean (``remove_dc_offset``);
2. pre-emphasis ``y[j] = x[j] - 0.97 x[j-1]`` with ``x[-1] := x[0]``;
3. multiply by the window (``hanning`` = symmetric Hann);
4. zero-pad to the FFT size (next power of two) and take ``|rfft|**2``;
5. triangular mel filters, ``mel(f) = 1127 ln(1 + f/700)``, edges equally spaced in mel
   between ``low_freq`` and ``high_freq`` (``<= 0`` means Nyquist plus that offset);
6. ``log(max(E, float32 eps))``: digital silence gives -15.942385, never ``-inf``.

All of it is float32, in the same order of operations as Kaldi's torch port, so results agree
with torchaudio to float rounding (see ``tests/plugins/audio/test_fbank.py``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

WINDOWS = ("hanning", "hamming", "povey", "rectangular")
LOG_FLOOR = torch.finfo(torch.float32).eps  # Kaldi floors the mel energy at float32 eps


def mel_scale(freq: float | Tensor) -> float | Tensor:
    """HTK mel scale ``1127 ln(1 + f / 700)`` of a frequency in Hz (scalar or tensor)."""
    if isinstance(freq, Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@lru_cache(maxsize=16)
def mel_banks(num_bins: int, fft_size: int, sample_rate: float, low_freq: float = 20.0,
              high_freq: float = 0.0) -> Tensor:
    """Kaldi's triangular mel filters over the first ``fft_size // 2`` FFT bins (Nyquist excluded).

    Args:
        num_bins: number of mel filters ``F``.
        fft_size: padded frame length (FFT size), e.g. 512.
        sample_rate: Hz.
        low_freq: lowest filter edge in Hz.
        high_freq: highest edge in Hz; ``<= 0`` means ``nyquist + high_freq``.

    Returns:
        ``(F, fft_size // 2)`` float32 weights ``max(0, min(up, down))``. With few FFT bins per
        filter some low filters can be empty (128 bins at 16 kHz / 512: filter 3).
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= nyquist, got {low_freq}, {high_freq}, {nyquist}")
    mel_low, mel_high = mel_scale(low_freq), mel_scale(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)  # (F, 1)
    left = mel_low + index * delta  # float32, as Kaldi's port computes it
    center = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    mel = mel_scale((sample_rate / fft_size) * torch.arange(fft_size // 2)).unsqueeze(0)  # (1, K)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0)


@lru_cache(maxsize=16)
def frame_window(kind: str, size: int) -> Tensor:
    """The ``(size,)`` float32 analysis window Kaldi names ``kind`` (symmetric, not periodic)."""
    if kind == "hanning":
        return torch.hann_window(size, periodic=False)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if kind == "povey":
        return torch.hann_window(size, periodic=False).pow(0.85)
    if kind == "rectangular":
        return torch.ones(size)
    raise ValueError(f"unknown window {kind!r}; choices: {', '.join(WINDOWS)}")


def frame_sizes(sample_rate: float, frame_length_ms: float, frame_shift_ms: float) -> tuple[int, int, int]:
    """``(window, shift, fft_size)`` in samples, truncated as Kaldi does (16 kHz, 25/10 ms -> 400, 160, 512)."""
    window = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if window < 2 or shift < 1:
        raise ValueError(f"frames of {frame_length_ms} ms every {frame_shift_ms} ms at {sample_rate} Hz are too short")
    return window, shift, 1 << (window - 1).bit_length()


def num_frames(num_samples: int, window: int = 400, shift: int = 160) -> int:
    """Frames with ``snip_edges=True``: ``1 + (N - window) // shift`` (0 when ``N < window``)."""
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


def kaldi_fbank(waveform: Tensor, sample_rate: float = 16000.0, num_mel_bins: int = 128, frame_length_ms: float = 25.0,
                frame_shift_ms: float = 10.0, window: str = "hanning", preemphasis: float = 0.97,
                remove_dc_offset: bool = True, low_freq: float = 20.0, high_freq: float = 0.0) -> Tensor:
    """Log-mel filterbank of one or several waveforms (Kaldi ``fbank`` with ``snip_edges=True``).

    The waveform is used as given (Audio-MAE subtracts the clip mean first, see
    :class:`mmim_audio.frontend.AudioMAEFrontend`), at the float scale ``[-1, 1]``.

    Args:
        waveform: ``(N,)`` or ``(B, N)`` float samples; ``N`` must be at least one window.
        sample_rate: Hz.
        num_mel_bins: ``F``.
        frame_length_ms, frame_shift_ms: window and hop.
        window: one of ``hanning``, ``hamming``, ``povey``, ``rectangular``.
        preemphasis: coefficient (0 disables it).
        remove_dc_offset: subtract each frame's mean.
        low_freq, high_freq: filter range in Hz (``high_freq <= 0``: relative to Nyquist).

    Returns:
        ``(T, F)`` or ``(B, T, F)`` float32 log mel energies, ``T = 1 + (N - window) // shift``.
    """
    if waveform.dim() not in (1, 2):
        raise ValueError(f"waveform must be (N,) or (B, N), got {tuple(waveform.shape)}")
    size, shift, fft_size = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    if waveform.shape[-1] < size:
        raise ValueError(f"a waveform of {waveform.shape[-1]} samples is shorter than one {size}-sample frame")
    x = waveform.to(torch.float32)
    frames = x.unfold(-1, size, shift)  # (..., T, window)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if preemphasis != 0.0:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - preemphasis * previous
    frames = frames * frame_window(window, size).to(x.device)
    power = torch.fft.rfft(frames, n=fft_size).abs().pow(2.0)  # (..., T, fft_size/2 + 1)
    banks = mel_banks(num_mel_bins, fft_size, float(sample_rate), float(low_freq), float(high_freq)).to(x.device)
    banks = torch.nn.functional.pad(banks, (0, 1))  # the Nyquist bin has weight 0
    energies = power @ banks.T
    return torch.clamp(energies, min=LOG_FLOOR).log()


def torchaudio_kaldi() -> object | None:
    """``torchaudio.compliance.kaldi`` when torchaudio imports, else ``None``."""
    try:
        from torchaudio.compliance import kaldi
    except Exception:  # ImportError, or an OSError/RuntimeError from a build that does not match torch
        return None
    return kaldi


def torchaudio_fbank(waveform: Tensor, sample_rate: float = 16000.0, num_mel_bins: int = 128,
                     frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, window: str = "hanning",
                     preemphasis: float = 0.97, remove_dc_offset: bool = True, low_freq: float = 20.0,
                     high_freq: float = 0.0) -> Tensor:
    """The same features through ``torchaudio.compliance.kaldi.fbank`` (``(N,)`` -> ``(T, F)``).

    Raises:
        ModuleNotFoundError: torchaudio cannot be imported.
    """
    kaldi = torchaudio_kaldi()
    if kaldi is None:
        raise ModuleNotFoundError("torchaudio is not importable; use backend='torch'")
    if waveform.dim() == 2:
        return torch.stack([torchaudio_fbank(w, sample_rate, num_mel_bins, frame_length_ms, frame_shift_ms, window,
                                             preemphasis, remove_dc_offset, low_freq, high_freq) for w in waveform])
    return kaldi.fbank(waveform[None].to(torch.float32), htk_compat=True, sample_frequency=sample_rate,
                       use_energy=False, window_type=window, num_mel_bins=num_mel_bins, dither=0.0,
                       frame_length=frame_length_ms, frame_shift=frame_shift_ms, preemphasis_coefficient=preemphasis,
                       remove_dc_offset=remove_dc_offset, low_freq=low_freq, high_freq=high_freq)
