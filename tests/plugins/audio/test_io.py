"""Reading audio: formats, mixdown, resampling, crop/pad and every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from mmim.data import CorruptSampleError
from mmim_audio.io import crop_or_pad, load_audio, read_audio, resample, to_mono


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype,ext", [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"),
                                             ("OGG", "VORBIS", "ogg"), ("WAV", "FLOAT", "wav")])
def test_formats_decode_to_float(tmp_path, fmt, subtype, ext):
    path = tmp_path / f"tone.{ext}"
    tone = _tone(440, 16000, 0.5)
    soundfile.write(path, tone, 16000, format=fmt, subtype=subtype)
    samples, rate = read_audio(path)
    assert rate == 16000 and samples.dtype == torch.float32 and samples.shape[0] == 1
    assert abs(samples.shape[1] - tone.shape[0]) <= 1024  # Vorbis may add/drop a few samples
    n = min(samples.shape[1], tone.shape[0])
    tol = 0.05 if subtype == "VORBIS" else 1e-4
    assert np.abs(samples[0, :n].numpy() - tone[:n]).max() < tol


def test_stereo_mixdown(tmp_path):
    left, right = _tone(300, 16000, 0.25), _tone(500, 16000, 0.25, amp=0.25)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], 1), 16000, subtype="FLOAT")
    wave = load_audio(path, 16000)
    assert wave.shape == (4000,)
    np.testing.assert_allclose(wave.numpy(), (left + right) / 2, atol=1e-6)
    assert torch.equal(to_mono(torch.ones(1, 5)), torch.ones(5))


def test_resampling_keeps_frequency_and_length(tmp_path):
    path = tmp_path / "22k.wav"
    soundfile.write(path, _tone(1000, 22050, 1.0), 22050, subtype="FLOAT")
    wave = load_audio(path, 16000)
    assert wave.shape == (16000,) and wave.dtype == torch.float32
    spectrum = torch.fft.rfft(wave * torch.hann_window(16000)).abs()
    assert int(spectrum.argmax()) == 1000  # 1 Hz per bin for a 1 s clip
    ref = torch.from_numpy(_tone(1000, 16000, 1.0))
    assert (wave[200:-200] - ref[200:-200]).abs().max() < 1e-2
    assert resample(torch.zeros(8000), 8000, 16000).shape == (16000,)
    same = torch.randn(10)
    assert resample(same, 16000, 16000) is same


def test_crop_or_pad():
    x = torch.arange(10.0)
    assert torch.equal(crop_or_pad(x, 4), x[:4])
    assert torch.equal(crop_or_pad(x, 12), torch.cat([x, torch.zeros(2)]))
    torch.manual_seed(0)
    starts = {int(crop_or_pad(x, 3, random_crop=True)[0]) for _ in range(50)}
    assert starts <= set(range(8)) and len(starts) > 3
    torch.manual_seed(1)
    a = crop_or_pad(x, 3, random_crop=True)
    torch.manual_seed(1)
    assert torch.equal(a, crop_or_pad(x, 3, random_crop=True))  # randomness only from torch's global RNG


def test_silent_and_clipped_files_are_valid(tmp_path):
    silent, clipped = tmp_path / "silent.flac", tmp_path / "clipped.wav"
    soundfile.write(silent, np.zeros(8000, np.int16), 16000)
    soundfile.write(clipped, np.clip(_tone(200, 16000, 0.5, amp=3.0), -1.5, 1.5), 16000, subtype="FLOAT")
    assert torch.equal(load_audio(silent), torch.zeros(8000))
    assert load_audio(clipped).abs().max() == pytest.approx(1.5)


def test_bad_files_raise_corrupt_sample_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"this is not audio at all" * 20)
    no_samples = tmp_path / "no_samples.wav"
    soundfile.write(no_samples, np.zeros(0, np.float32), 16000)
    nan = tmp_path / "nan.wav"
    data = _tone(300, 16000, 0.1)
    data[10] = np.nan
    soundfile.write(nan, data, 16000, subtype="FLOAT")
    truncated = tmp_path / "truncated.flac"
    soundfile.write(truncated, _tone(300, 16000, 1.0), 16000)
    truncated.write_bytes(truncated.read_bytes()[:60])  # cut inside the first frame
    cases = {empty: "empty file", garbage: "cannot decode", no_samples: "zero length", nan: "non-finite",
             tmp_path / "missing.wav": "not found", truncated: "cannot decode"}
    for path, reason in cases.items():
        with pytest.raises(CorruptSampleError, match=reason) as err:
            load_audio(path)
        assert err.value.path == str(path) and str(path) in str(err.value)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown audio read backend"):
        read_audio("x.wav", backend="ffmpeg")
