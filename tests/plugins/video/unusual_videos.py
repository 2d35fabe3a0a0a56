"""A corpus of unusual and broken video files, written with PyAV in the tests (nothing committed).

Every file is small (a few frames of 32-64 px). ``GOOD`` files must decode; ``BAD`` files must be
refused by every backend with a :class:`~mmim.data.CorruptSampleError` naming the file and the reason
(the ``match`` pattern).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

H, W, FRAMES = 32, 64, 8


def frame(i: int, h: int = H, w: int = W) -> np.ndarray:
    """Frame ``i``: black with a white bar at the left edge (rows 0..h/4 brighter) and a moving dot,
    so orientation and order are both visible."""
    f = np.zeros((h, w, 3), np.uint8)
    f[:, : w // 6] = 255
    f[: h // 4, :, 1] = 120
    f[h // 2, (3 * i) % w] = (255, 0, 0)
    return f


def write_video(path: Path, codec: str = "libx264", frames: int = FRAMES, h: int = H, w: int = W,
                pix_fmt: str = "yuv420p", rotation: int | None = None, rate: int = 10) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(frame(i, h, w), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_audio(path: Path, codec: str = "aac", seconds: float = 0.5, cover: bool = False) -> Path:
    """An audio-only file (optionally with a one-frame MJPEG cover picture, as music files carry)."""
    rate = 16000
    with av.open(str(path), "w") as c:
        a = c.add_stream(codec, rate=rate, layout="mono")
        if cover:
            v = c.add_stream("mjpeg", rate=1)
            v.width, v.height, v.pix_fmt = W, H, "yuvj420p"
            for p in v.encode(av.VideoFrame.from_ndarray(frame(0), format="rgb24").reformat(format="yuvj420p")):
                c.mux(p)
            for p in v.encode():
                c.mux(p)
        t = np.arange(int(rate * seconds)) / rate
        samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        step = a.codec_context.frame_size or 1024
        for start in range(0, len(samples), step):
            chunk = samples[start:start + step]
            f = av.AudioFrame.from_ndarray(chunk[None], format="flt", layout="mono")
            f.sample_rate, f.pts = rate, start
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    return path


def write_still(path: Path, fmt: str = "PNG") -> Path:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame(0)).save(buf, format=fmt)
    path.write_bytes(buf.getvalue())
    return path


def write_zero_frames(path: Path) -> Path:
    """A container with a video stream and no frames at all."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    return path


def good_corpus(root: Path) -> dict[str, Path]:
    """Videos that must decode: several codecs and containers, odd sizes, rotation metadata."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "h264.mp4": dict(),
        "h264_odd_width.mkv": dict(w=50, h=30),
        "h264_yuv444.mp4": dict(pix_fmt="yuv444p"),
        "mpeg4.avi": dict(codec="mpeg4"),
        "mjpeg.avi": dict(codec="mjpeg", pix_fmt="yuvj420p"),
        "vp9.webm": dict(codec="libvpx-vp9"),
        "ffv1.mkv": dict(codec="ffv1", pix_fmt="yuv444p"),
        "h264_rot90.mp4": dict(rotation=90),
        "h264_rot180.mp4": dict(rotation=180),
        "h264_rot270.mp4": dict(rotation=270),
    }
    out = {}
    for name, kw in files.items():
        if kw.get("codec", "libx264") not in av.codecs_available:
            continue
        out[name] = write_video(root / name, **kw)
    return out


def bad_corpus(root: Path) -> dict[str, tuple[Path, str]]:
    """Files that are not videos, each with the reason pattern the error must state."""
    root.mkdir(parents=True, exist_ok=True)
    good = write_video(root / "source.mp4")
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "garbage.mp4").write_bytes(b"\x00\x01not a video at all" * 50)
    (root / "empty.mp4").write_bytes(b"")
    out = {
        "png_as_mp4": (write_still(root / "still_png.mp4"), "still image|no video stream|cannot|no decodable"),
        "jpeg_as_avi": (write_still(root / "still_jpeg.avi", "JPEG"), "still image|no video stream|cannot|no decodable"),
        "one_frame": (write_video(root / "one_frame.mp4", frames=1), "still image"),
        "audio_only_m4a": (write_audio(root / "audio.mp4"), "no video stream|cannot|no decodable"),
        "audio_only_ogg": (write_audio(root / "audio.ogg", codec="libopus"), "no video stream|cannot|no decodable"),
        "audio_with_cover": (write_audio(root / "song.mkv", cover=True), "still image|no video stream|cover"),
        "zero_frames": (write_zero_frames(root / "zero.mp4"), "no decodable|no video stream|cannot|zero"),
        "truncated": (root / "truncated.mp4", "cannot|no decodable|still image|truncated"),
        "garbage": (root / "garbage.mp4", "cannot|no video stream|no decodable"),
        "empty": (root / "empty.mp4", "zero-length"),
        "missing": (root / "missing.mp4", "not found"),
    }
    return out
