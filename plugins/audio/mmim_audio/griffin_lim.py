"""Log-mel fbank -> waveform, so a reconstruction can be listened to.

The inverse of :func:`mmim_audio.fbank.kaldi_fbank` (and of Audio-MAE's normalisation), as far as
it goes - the phase and what the mel filters average away are lost, so this is an estimate:

1. undo the normalisation ``x * 2 std + mean`` and the log: mel energies ``E`` ``(T, F)``;
2. mel -> linear power spectrum ``P >= 0`` ``(T, K)`` with ``E ~ P @ B^T`` (``B`` the Kaldi mel
   filters the front end builds): non-negative least squares by multiplicative updates, started
   from the clamped pseudo-inverse solution;
3. undo the pre-emphasis (divide the magnitude by ``|1 - 0.97 e^{-iw}|``);
4. Griffin-Lim with momentum ("fast Griffin-Lim", Perraudin et al. 2013) on Kaldi's framing:
   ``window``-sample Hann frames every ``shift`` samples, zero-padded at the end to the FFT size,
   least-squares overlap-add for the inverse. A fixed number of iterations and a seeded random
   initial phase make it deterministic.

Shapes: ``(T, F)`` fbank in, ``(N,)`` waveform out with ``N = window + (T - 1) * shift``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmim_audio.fbank import frame_sizes, frame_window, mel_banks


def mel_to_power(energies: Tensor, banks: Tensor, iterations: int = 100) -> Tensor:
    """Non-negative ``P`` ``(T, K)`` minimising ``||P @ banks^T - energies||`` (mel energies ``(T, F)``,
    filters ``banks`` ``(F, K)``); FFT bins no filter covers stay 0."""
    banks = banks.double()
    energies = energies.double().clamp_min(0.0)
    covered = banks.sum(0) > 0  # (K,)
    start = energies @ torch.linalg.pinv(banks.T)  # (T, K), least squares, may be negative
    power = torch.where(covered, start.clamp_min(1e-12 * float(energies.max().clamp_min(1e-30))), 0.0)
    numerator = energies @ banks  # (T, K)
    gram = banks.T @ banks  # (K, K)
    for _ in range(iterations):  # Lee-Seung multiplicative updates keep P >= 0
        power = power * numerator / (power @ gram).clamp_min(1e-30)
    return power.float()


def _stft(x: Tensor, window: Tensor, shift: int, fft_size: int) -> Tensor:
    """Kaldi-aligned STFT: frame ``t`` is ``x[t * shift : t * shift + len(window)]`` -> ``(T, fft_size // 2 + 1)``."""
    return torch.fft.rfft(x.unfold(-1, window.shape[0], shift) * window, n=fft_size)


def _istft(spec: Tensor, window: Tensor, shift: int, fft_size: int) -> Tensor:
    """Least-squares overlap-add inverse of :func:`_stft` ``(T, K) -> (N,)``.

    The squared-window envelope is floored at 10% of its peak, so the first and last few samples,
    which only the windows' near-zero tails reach, fade out instead of being amplified.
    """
    size, frames = window.shape[0], spec.shape[0]
    length = size + (frames - 1) * shift
    chunks = torch.fft.irfft(spec, n=fft_size)[:, :size] * window  # (T, window)

    def overlap_add(values: Tensor) -> Tensor:
        return F.fold(values.T.unsqueeze(0), (1, length), (1, size), stride=(1, shift)).flatten()

    envelope = overlap_add(window.pow(2).expand(frames, size))
    return overlap_add(chunks) / envelope.clamp_min(0.1 * float(envelope.max()))


def griffin_lim(magnitude: Tensor, window: Tensor, shift: int, fft_size: int, iterations: int = 64,
                momentum: float = 0.99, generator: torch.Generator | None = None) -> Tensor:
    """Waveform ``(N,)`` whose Kaldi-framed STFT magnitude approximates ``magnitude`` ``(T, fft_size // 2 + 1)``.

    Args:
        window: analysis window ``(window_samples,)``.
        iterations: Griffin-Lim iterations (0: the random initial phase only).
        momentum: fast Griffin-Lim's momentum (0: the original algorithm).
        generator: for the random initial phase (default: seed 0).
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    magnitude = magnitude.float()
    phase = torch.polar(torch.ones_like(magnitude), 2 * torch.pi * torch.rand(magnitude.shape, generator=generator))
    previous = torch.zeros_like(phase)
    for _ in range(iterations):
        rebuilt = _stft(_istft(magnitude * phase, window, shift, fft_size), window, shift, fft_size)
        phase = rebuilt - (momentum / (1.0 + momentum)) * previous
        phase = phase / (phase.abs() + 1e-16)
        previous = rebuilt
    return _istft(magnitude * phase, window, shift, fft_size)


def fbank_to_waveform(fbank: Tensor, sample_rate: int = 16000, mean: float | None = None, std: float | None = None,
                      frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, window: str = "hanning",
                      preemphasis: float = 0.97, iterations: int = 64, momentum: float = 0.99,
                      nnls_iterations: int = 100, generator: torch.Generator | None = None) -> Tensor:
    """Estimate the waveform of a Kaldi log-mel fbank.

    Args:
        fbank: ``(T, F)`` log mel energies, or model inputs normalised as ``(x - mean) / (2 std)``
            when ``mean``/``std`` are given (Audio-MAE's scale; NaN is not allowed).
        sample_rate, frame_length_ms, frame_shift_ms, window, preemphasis: the front end's settings.
        iterations, momentum, generator: Griffin-Lim's (see :func:`griffin_lim`).
        nnls_iterations: multiplicative updates of the mel inversion.

    Returns:
        ``(N,)`` float32 waveform at ``sample_rate``, ``N = window + (T - 1) * shift`` samples.
    """
    if fbank.dim() != 2:
        raise ValueError(f"expected a (T, F) fbank, got {tuple(fbank.shape)}")
    if not torch.isfinite(fbank).all():
        raise ValueError("the fbank holds NaN or inf values")
    log_mel = fbank.float() if std is None else fbank.float() * (2.0 * std) + (mean or 0.0)
    size, shift, fft_size = frame_sizes(sample_rate, frame_length_ms, frame_shift_ms)
    banks = F.pad(mel_banks(fbank.shape[1], fft_size, float(sample_rate)), (0, 1))  # + the Nyquist bin
    power = mel_to_power(log_mel.clamp(max=80.0).exp(), banks, nnls_iterations)
    freqs = torch.arange(fft_size // 2 + 1, dtype=torch.float64) * (2 * torch.pi / fft_size)
    emphasis = (1 - preemphasis * torch.exp(-1j * freqs)).abs().float()  # the pre-emphasis filter's gain
    magnitude = power.sqrt() / emphasis.clamp_min(1e-3)
    return griffin_lim(magnitude, frame_window(window, size), shift, fft_size, iterations, momentum, generator)


def spectral_convergence(estimate: Tensor, reference: Tensor) -> float:
    """``||estimate - reference||_F / ||reference||_F`` of two magnitude spectrograms of the same shape."""
    return float(torch.linalg.norm(estimate - reference) / torch.linalg.norm(reference).clamp_min(1e-12))
