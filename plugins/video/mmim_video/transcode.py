"""Re-encoding videos at pack time (``mmim pack --encode ...``), so that a clip costs the frames it uses.

A web video has a keyframe every 250 frames or so: a 16-frame clip at stride 4 then decodes from the keyframe
before it, about 180 frames at random starts (``docs/data.md``). Packing can store each video instead as:

- **H.264 with short keyframe intervals** (``keyint``, and ``short_side`` to shrink it as VideoMAE's data
  preparation shrinks Kinetics to short side 320; ``crf`` the quality): a clip then decodes at most
  ``keyint - 1`` frames more than it spans;
- **frames as images** (``frames: jpeg`` or ``webp``, ``quality``, ``subsampling``, optional ``short_side``):
  every frame its own JPEG (or WebP) in one member (``.mjpeg``: the JPEGs back to back, a raw MJPEG stream; ``.webpseq``), the
  byte offsets in the record's JSON; a clip decodes exactly its frames (JPEG through libjpeg-turbo).

Frames come out upright (rotation metadata applied) and in RGB; the timing (frame rate) of H.264 output is the
source's. Which measures best is in docs/data.md ("Video at pack time").
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmim.data import CorruptSampleError

FRAME_FORMATS = {"jpeg": "mjpeg", "webp": "webpseq"}  # frames format -> record member extension


def target_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """``(h, w)`` with the short side brought down to ``short_side`` (never up), both even (4:2:0 video)."""
    if short_side is None or min(height, width) <= short_side:
        h, w = height, width
    else:
        scale = short_side / min(height, width)
        h, w = round(height * scale), round(width * scale)
    return max(2, h - h % 2), max(2, w - w % 2)


def _frames(path: str, short_side: int | None) -> tuple[list[np.ndarray], Any]:
    """Every frame of ``path``, upright RGB, resized to :func:`target_size`; and the stream's frame rate."""
    import av

    from mmim_video.reader import _rgb

    out = []
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or 30
            for frame in container.decode(stream):
                rgb = _rgb(frame)
                h, w = target_size(rgb.shape[0], rgb.shape[1], short_side)
                if (h, w) != rgb.shape[:2]:
                    rgb = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                        width=w, height=h, interpolation="AREA").to_ndarray(format="rgb24")
                out.append(rgb)
    except Exception as err:
        raise CorruptSampleError(path, f"cannot decode for re-encoding: {type(err).__name__}: {err}") from err
    if len(out) < 2:
        raise CorruptSampleError(path, f"{len(out)} decodable frames: not a video")
    return out, rate


def h264(path: str, short_side: int | None = None, keyint: int | None = None, crf: int = 23) -> bytes:
    """``path`` re-encoded as H.264 MP4 (libx264, yuv420p, ``crf``; a keyframe every ``keyint`` frames and no
    scene-cut keyframes when ``keyint`` is given)."""
    import av

    frames, rate = _frames(path, short_side)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(int(crf)), **({"g": str(int(keyint)), "sc_threshold": "0"} if keyint else {})}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


SUBSAMPLING = ("420", "422", "444")  # JPEG chroma subsampling


def frame_images(path: str, fmt: str = "jpeg", quality: int = 90, short_side: int | None = None,
                 subsampling: str = "420") -> tuple[bytes, dict[str, Any]]:
    """Every frame as a JPEG or WebP, back to back; and ``{"format", "offsets", "height", "width"}``.

    ``subsampling`` is the JPEG chroma subsampling. 4:2:0 is the default because the sources are 4:2:0 video
    (H.264 ``yuv420p``, as Kinetics and SSv2 are): full-resolution chroma (4:4:4) stores detail the source
    never had, and costs 1.6x the decode time (docs/data.md). Lossy WebP is always 4:2:0."""
    from PIL import Image

    if fmt not in FRAME_FORMATS:
        raise ValueError(f"frames must be one of {sorted(FRAME_FORMATS)}, got {fmt!r}")
    subsampling = str(subsampling).replace(":", "")
    if subsampling not in SUBSAMPLING:
        raise ValueError(f"subsampling must be one of {list(SUBSAMPLING)}, got {subsampling!r}")
    if fmt == "webp" and subsampling != "420":
        raise ValueError(f"frames=webp stores 4:2:0 chroma (lossy WebP); subsampling={subsampling} needs frames=jpeg")
    frames, _ = _frames(path, short_side)
    chunks, offsets = [], [0]
    for rgb in frames:
        if fmt == "jpeg":
            import simplejpeg

            data = simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=int(quality), colorspace="RGB",
                                          colorsubsampling=subsampling)
        else:
            buf = io.BytesIO()
            Image.fromarray(rgb).save(buf, format="WEBP", quality=int(quality))
            data = buf.getvalue()
        chunks.append(data)
        offsets.append(offsets[-1] + len(data))
    h, w = frames[0].shape[:2]
    return b"".join(chunks), {"format": fmt, "offsets": offsets, "height": h, "width": w}


def decode_frame_images(data: bytes, info: dict[str, Any], indices: Sequence[int], where: str) -> Tensor:
    """Frames ``indices`` of a frames member as ``(N, H, W, 3)`` uint8 (only those frames are decoded, each
    straight into its slot of the output: no per-frame arrays to stack)."""
    offsets = info.get("offsets")
    if not isinstance(offsets, list) or len(offsets) < 3 or offsets[-1] != len(data):
        raise CorruptSampleError(where, f"frame offsets do not match the {len(data)}-byte frames member")
    out: np.ndarray | None = None
    for slot, i in enumerate(indices):
        chunk = data[offsets[i]:offsets[i + 1]]
        try:
            if info.get("format") == "jpeg":
                import simplejpeg

                size = tuple(simplejpeg.decode_jpeg_header(chunk)[:2])
                if out is None:
                    out = np.empty((len(indices), *size, 3), np.uint8)
                if size != out.shape[1:3]:
                    raise ValueError(f"{size[0]}x{size[1]} pixels where frame {indices[0]} has "
                                     f"{out.shape[1]}x{out.shape[2]}")
                simplejpeg.decode_jpeg(chunk, colorspace="RGB", buffer=out[slot])
            else:
                from PIL import Image

                rgb = np.asarray(Image.open(io.BytesIO(chunk)).convert("RGB"))
                if out is None:
                    out = np.empty((len(indices), *rgb.shape), np.uint8)
                if rgb.shape != out.shape[1:]:
                    raise ValueError(f"{rgb.shape[0]}x{rgb.shape[1]} pixels where frame {indices[0]} has "
                                     f"{out.shape[1]}x{out.shape[2]}")
                out[slot] = rgb
        except Exception as err:
            raise CorruptSampleError(where, f"frame {i} does not decode ({type(err).__name__}: {err})") from None
    if out is None:
        raise CorruptSampleError(where, "no frame indices to decode")
    return torch.from_numpy(out)
