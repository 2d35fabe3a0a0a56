"""Reading audio files: decode (soundfile, or torchaudio), mono mixdown, resampling, crop/pad.

Every defect of a file raises :class:`mmim.data.CorruptSampleError` naming it: missing, empty
(0 bytes or 0 samples), undecodable, no audio stream, or holding NaN/inf samples. Silent and clipped
audio are valid input. libsndfile (``soundfile``) reads WAV (8/16/24/32-bit PCM, float, double, u-law,
ADPCM, WAVEX, RF64), FLAC, OGG Vorbis/Opus, MP3, AIFF, AU, CAF, W64; what it cannot read (AAC in M4A/MP4,
the audio track of MKV/WebM, WMA) is decoded with PyAV when it is installed (``mmim[video]``). Resampling uses SciPy's polyphase filter (``scipy.signal.resample_poly``, Kaiser
window), imported only when a file's rate differs from the one asked for.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmim.data import CorruptSampleError

READ_BACKENDS = ("soundfile", "torchaudio", "pyav")
EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64",
              ".m4a", ".aac", ".mka", ".wma")


def _read_soundfile(path: str) -> tuple[Tensor, int]:
    import soundfile

    data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (N, C), PCM scaled to [-1, 1)
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(rate)


def _read_torchaudio(path: str) -> tuple[Tensor, int]:
    import torchaudio

    data, rate = torchaudio.load(path)
    return data.to(torch.float32), int(rate)


def _read_pyav(path: str) -> tuple[Tensor, int]:
    """The first audio stream of any container FFmpeg reads, as float ``(C, N)`` and its rate."""
    import av

    with av.open(path) as container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["no"]
            raise CorruptSampleError(path, f"no audio stream ({', '.join(kinds)} streams only)")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate)
        planar = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=rate)
        chunks = [f.to_ndarray() for frame in container.decode(stream) for f in planar.resample(frame)]
        chunks += [f.to_ndarray() for f in planar.resample(None)]
    data = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), rate


def _pyav_usable() -> bool:
    import importlib.util

    return importlib.util.find_spec("av") is not None


def read_audio(path: str | Path, backend: str = "soundfile") -> tuple[Tensor, int]:
    """Decode an audio file as it is stored.

    Args:
        path: WAV, FLAC, OGG/Vorbis (anything libsndfile reads; MP3 with libsndfile >= 1.1).
        backend: ``"soundfile"`` (default, no system libraries needed; files libsndfile cannot read fall
            back to PyAV when it is installed), ``"torchaudio"`` or ``"pyav"``.

    Returns:
        samples ``(C, N)`` float32 in ``[-1, 1]`` for PCM files, and the sample rate in Hz.

    Raises:
        CorruptSampleError: the file is missing, empty, undecodable or contains NaN/inf.
    """
    if backend not in READ_BACKENDS:
        raise ValueError(f"unknown audio read backend {backend!r}; choices: {', '.join(READ_BACKENDS)}")
    path = str(path)
    if not os.path.isfile(path):
        raise CorruptSampleError(path, "audio file not found")
    if os.path.getsize(path) == 0:
        raise CorruptSampleError(path, "empty file (0 bytes)")
    readers = {"soundfile": _read_soundfile, "torchaudio": _read_torchaudio, "pyav": _read_pyav}
    try:
        data, rate = readers[backend](path)
    except ImportError:  # the backend itself is missing: a set-up problem, not a bad file
        raise
    except CorruptSampleError:
        raise
    except Exception as err:  # soundfile.LibsndfileError, RuntimeError, ValueError, av.error.*, ...
        reason = f"cannot decode audio ({type(err).__name__}: {err})"
        if backend != "soundfile" or not _pyav_usable():
            raise CorruptSampleError(path, reason) from err
        try:  # a container libsndfile does not read (M4A/AAC, MKV, WebM, WMA)
            data, rate = _read_pyav(path)
        except CorruptSampleError:
            raise
        except Exception as err2:
            raise CorruptSampleError(path, f"{reason}; PyAV: {type(err2).__name__}: {err2}") from err2
        if data.shape[-1] == 0:  # FFmpeg probes almost anything; no samples means it is not audio either
            raise CorruptSampleError(path, f"{reason}; PyAV decoded no samples") from err
    if data.shape[-1] == 0:
        raise CorruptSampleError(path, "no audio samples (zero length)")
    if not torch.isfinite(data).all():
        bad = int((~torch.isfinite(data)).sum())
        raise CorruptSampleError(path, f"{bad} non-finite (NaN/inf) samples")
    return data, rate


def to_mono(samples: Tensor) -> Tensor:
    """``(C, N)`` -> ``(N,)`` by averaging the channels."""
    return samples.mean(dim=0) if samples.shape[0] > 1 else samples[0]


def resample(waveform: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Polyphase resampling ``(..., N)`` -> ``(..., ceil(N * new / orig))`` float32 (SciPy ``resample_poly``)."""
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return waveform
    try:
        from scipy.signal import resample_poly
    except ImportError as err:
        raise ImportError(f"resampling {orig_rate} Hz audio to {new_rate} Hz needs SciPy: "
                          "pip install 'mmim[audio]'") from err

    g = math.gcd(int(orig_rate), int(new_rate))
    out = resample_poly(waveform.detach().cpu().double().numpy(), new_rate // g, orig_rate // g, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(out)).to(torch.float32)


def crop_or_pad(waveform: Tensor, num_samples: int, random_crop: bool = False) -> Tensor:
    """Fix the length of ``(..., N)`` to ``num_samples``: zero-pad at the end, or crop.

    Args:
        waveform: ``(..., N)``.
        num_samples: output length.
        random_crop: take a random window (torch's global RNG) instead of the start.
    """
    n = waveform.shape[-1]
    if n < num_samples:
        return torch.nn.functional.pad(waveform, (0, num_samples - n))
    start = int(torch.randint(0, n - num_samples + 1, ())) if random_crop and n > num_samples else 0
    return waveform[..., start:start + num_samples]


def load_audio(path: str | Path, sample_rate: int = 16000, num_samples: int | None = None, random_crop: bool = False,
               backend: str = "soundfile") -> Tensor:
    """Read ``path`` as a mono waveform at ``sample_rate``.

    Args:
        path: audio file.
        sample_rate: output rate; files at another rate are resampled.
        num_samples: crop or zero-pad to this length (``None`` keeps the whole file).
        random_crop: crop at a random offset (torch's global RNG) rather than the start.
        backend: see :func:`read_audio`.

    Returns:
        ``(N,)`` float32 waveform.

    Raises:
        CorruptSampleError: see :func:`read_audio`.
    """
    samples, rate = read_audio(path, backend)
    waveform = resample(to_mono(samples), rate, sample_rate)
    if num_samples is not None:
        waveform = crop_or_pad(waveform, num_samples, random_crop)
    return waveform
