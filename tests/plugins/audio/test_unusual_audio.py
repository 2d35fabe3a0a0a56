"""The audio reader on a corpus of unusual and broken files generated here: sample formats (8-bit unsigned to
64-bit float), channel counts, containers (WAV/WAVEX/RF64/W64, FLAC, OGG Vorbis/Opus, MP3, AIFF, AU, CAF, and
M4A/MKV through PyAV), odd sample rates, and clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmim.data import CorruptSampleError
from mmim_audio.io import EXTENSIONS, load_audio, read_audio

sf = pytest.importorskip("soundfile")

RATE, SECONDS, FREQ, AMP = 16000, 0.5, 440.0, 0.5


def tone(rate: int = RATE, channels: int = 1, seconds: float = SECONDS) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = AMP * np.sin(2 * np.pi * FREQ * t)
    return np.stack([wave * (1 - 0.1 * c) for c in range(channels)], axis=1)


def peak_hz(waveform: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(waveform.double() * torch.hann_window(len(waveform), dtype=torch.float64)).abs()
    return float(spectrum.argmax()) * rate / len(waveform)


def check_tone(x: torch.Tensor, rate: int = RATE, amp: float = AMP, tol: float = 0.03) -> None:
    assert x.dtype == torch.float32 and x.dim() == 1
    assert abs(len(x) - rate * SECONDS) <= rate * 0.06  # lossy codecs pad a little
    assert abs(peak_hz(x, rate) - FREQ) < 5
    middle = x[len(x) // 4: 3 * len(x) // 4].double()  # lossy codecs ring at the abrupt start and end
    level = float(middle.pow(2).mean().sqrt()) * 2**0.5  # a sine's amplitude from its RMS
    assert abs(level - amp) < tol + 0.05 * amp  # scaled, not clipped nor shrunk


@pytest.mark.parametrize("fmt, subtype, ext", [
    ("WAV", "PCM_U8", "wav"), ("WAV", "PCM_16", "wav"), ("WAV", "PCM_24", "wav"), ("WAV", "PCM_32", "wav"),
    ("WAV", "FLOAT", "wav"), ("WAV", "DOUBLE", "wav"), ("WAV", "ULAW", "wav"), ("WAV", "MS_ADPCM", "wav"),
    ("WAVEX", "PCM_24", "wav"), ("RF64", "PCM_16", "wav"), ("W64", "FLOAT", "w64"), ("FLAC", "PCM_24", "flac"),
    ("FLAC", "PCM_S8", "flac"), ("OGG", "VORBIS", "ogg"), ("OGG", "OPUS", "opus"), ("MP3", "MPEG_LAYER_III", "mp3"),
    ("AIFF", "PCM_16", "aiff"), ("AU", "PCM_16", "au"), ("CAF", "ALAC_16", "caf"),
])
def test_sample_formats_and_containers_keep_the_signal(tmp_path, fmt, subtype, ext):
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    path = tmp_path / f"tone.{ext}"
    rate = 48000 if subtype == "OPUS" else RATE
    sf.write(path, tone(rate), rate, format=fmt, subtype=subtype)
    assert f".{ext}" in EXTENSIONS
    x = load_audio(path, RATE)
    check_tone(x, tol=0.03 if "PCM" in subtype or subtype in ("FLOAT", "DOUBLE") else 0.08)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 12345])
def test_odd_sample_rates_are_resampled_to_the_same_pitch(tmp_path, rate):
    sf.write(tmp_path / "t.wav", tone(rate), rate, subtype="PCM_16")
    x = load_audio(tmp_path / "t.wav", RATE)
    assert abs(len(x) - RATE * SECONDS) <= 1
    check_tone(x)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_mixed_to_mono(tmp_path, channels):
    data = tone(channels=channels)
    sf.write(tmp_path / "m.wav", data, RATE, subtype="PCM_24")
    samples, rate = read_audio(tmp_path / "m.wav")
    assert samples.shape == (channels, len(data)) and rate == RATE
    check_tone(load_audio(tmp_path / "m.wav", RATE), amp=float(np.abs(data.mean(1)).max()))


def test_loud_float_files_are_not_clipped(tmp_path):
    sf.write(tmp_path / "loud.wav", tone() * 3, RATE, subtype="FLOAT")  # float WAV may exceed 1
    assert float(load_audio(tmp_path / "loud.wav", RATE).abs().max()) == pytest.approx(3 * AMP, rel=1e-3)


def test_containers_libsndfile_cannot_read_go_through_pyav(tmp_path):
    av = pytest.importorskip("av")
    for codec, ext in [("aac", "m4a"), ("libopus", "mka"), ("mp3", "mka")]:
        if codec not in av.codecs_available:
            continue
        path = tmp_path / f"t_{codec}.{ext}"
        data = tone(48000)[:, 0].astype(np.float32)
        with av.open(str(path), "w") as c:
            s = c.add_stream(codec, rate=48000, layout="mono")
            step = s.codec_context.frame_size or 1024
            for start in range(0, len(data), step):
                frame = av.AudioFrame.from_ndarray(data[None, start:start + step], format="flt", layout="mono")
                frame.sample_rate, frame.pts = 48000, start
                for p in s.encode(frame):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        check_tone(load_audio(path, RATE), tol=0.08)
        assert torch.allclose(load_audio(path, RATE, backend="pyav"), load_audio(path, RATE))


def _video_without_audio(path):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for _ in range(3):
            for p in s.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.parametrize("case, reason", [
    ("empty", "empty file"), ("zero_length", "zero length"), ("nan", "non-finite"), ("garbage", "cannot decode"),
    ("truncated_flac", "cannot decode|zero length"), ("missing", "not found"), ("video_only", "no audio stream"),
])
def test_broken_files_name_the_file(tmp_path, case, reason):
    path = tmp_path / {"video_only": "clip.m4a", "truncated_flac": "t.flac"}.get(case, f"{case}.wav")
    if case == "empty":
        path.write_bytes(b"")
    elif case == "zero_length":
        sf.write(path, np.zeros((0, 1)), RATE, subtype="PCM_16")
    elif case == "nan":
        sf.write(path, np.array([[0.1], [np.nan], [0.2]]), RATE, subtype="FLOAT")
    elif case == "garbage":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    elif case == "truncated_flac":
        sf.write(tmp_path / "full.flac", tone(), RATE, subtype="PCM_16")
        path.write_bytes((tmp_path / "full.flac").read_bytes()[:60])
    elif case == "video_only":
        _video_without_audio(path)
    with pytest.raises(CorruptSampleError, match=reason) as info:
        load_audio(path, RATE)
    assert path.name in str(info.value)


def test_wav_data_under_another_extension_is_read_by_content(tmp_path):
    sf.write(tmp_path / "x.flac", tone(), RATE, format="WAV", subtype="PCM_16")
    check_tone(load_audio(tmp_path / "x.flac", RATE))
