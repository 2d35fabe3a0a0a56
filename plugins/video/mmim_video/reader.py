"""One frame-reader interface over the video decoding backends (decord, torchcodec, PyAV).

``read_clip(path, choose)`` opens a file once, counts its frames, asks ``choose(count)`` for the indices and
returns them as ``(N, H, W, 3)`` uint8 RGB, whichever backend decodes them (``read_frames`` and
``frame_count`` are the two halves for callers that know their indices). ``backend="auto"``
takes the first backend that imports, in the order of :data:`BACKENDS`: PyAV (demuxes the packets once, then
decodes from the keyframe before the first wanted frame to the last one, feeding the frames it does not
return with ``skip_frame=NONREF`` so that non-reference frames are parsed but not decoded: the fewest
frames of the three, and pixel-identical output), decord (VideoMAE's reader, ``get_batch(indices)``: every
frame from the keyframe on), then torchcodec (``VideoDecoder.get_frames_at``, exact seeking); the environment
variable ``MMIM_VIDEO_BACKEND`` overrides the choice of ``"auto"``. :data:`DECODE_STATS` counts the frames PyAV
decodes, and :func:`keyframe_span` the frames a decoder without skipping needs for the same indices.
Any failure to open or decode a file raises :class:`~mmim.data.CorruptSampleError` naming the file.

One behaviour for every backend (docs/video.md, "Unusual files"):

* rotation metadata (the display matrix phones write) is applied: frames come out upright, as a player
  shows them (decord and torchcodec do it themselves; the PyAV path rotates by ``VideoFrame.rotation``);
  mirroring flags in the matrix are not applied;
* what is not a video is refused: no video stream (an audio file in a video container), zero decodable
  frames, or a single frame (a still image under a video name, or an audio file's cover picture);
* counting frames never costs a decode of its own: ``read_clip`` counts and reads in one open (PyAV counts the
  demuxed packets; a file whose packets lack timestamps or keyframe flags is decoded whole and counted).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmim.data import CorruptSampleError

BACKENDS = ("pyav", "decord", "torchcodec")
_MODULES = {"decord": "decord", "torchcodec": "torchcodec", "pyav": "av"}
INSTALL_HINT = "pip install 'mmim[video]' (PyAV `av` and `decord`)"
_HINTS = {
    "decord": INSTALL_HINT,
    "pyav": INSTALL_HINT,
    "torchcodec": "pip install 'mmim[torchcodec]' (`torchcodec`; a CPU torch needs torchcodec 0.13 and the "
                  "system FFmpeg 4-7 libraries, e.g. apt-get install ffmpeg)",
}
ENV_VAR = "MMIM_VIDEO_BACKEND"
DECODE_STATS = {"clips": 0, "decoded": 0}  # this process: clips read, frames PyAV decoded for them
_USABLE: dict[str, bool] = {}


def _importable(backend: str) -> bool:
    """Whether ``backend``'s module imports (torchcodec can be installed yet fail to load its FFmpeg libraries)."""
    if backend not in _USABLE:
        if importlib.util.find_spec(_MODULES[backend]) is None:
            _USABLE[backend] = False
        else:
            try:
                if backend == "torchcodec":
                    from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads libtorchcodec + FFmpeg)
                _USABLE[backend] = True
            except Exception:  # OSError / RuntimeError: missing FFmpeg or CUDA libraries
                _USABLE[backend] = False
    return _USABLE[backend]


def available_backends() -> list[str]:
    """The backends that import, in preference order."""
    return [b for b in BACKENDS if _importable(b)]


def resolve_backend(backend: str = "auto") -> str:
    """``backend``, or for ``"auto"`` the ``MMIM_VIDEO_BACKEND`` environment variable if set, else the first
    available one; raises ImportError naming the extra to install."""
    if backend == "auto" and os.environ.get(ENV_VAR):
        backend = os.environ[ENV_VAR]
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choices: auto, {', '.join(BACKENDS)}")
    have = available_backends()
    if backend == "auto":
        if not have:
            raise ImportError(f"no video decoding backend is installed: {INSTALL_HINT}")
        return have[0]
    if backend not in have:
        why = "does not import" if importlib.util.find_spec(_MODULES[backend]) is not None else "is not installed"
        raise ImportError(f"video backend {backend!r}: the module {_MODULES[backend]!r} {why}: {_HINTS[backend]}")
    return backend


STILL = "a single frame: a still image (or an audio file's cover picture), not a video"


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CorruptSampleError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise CorruptSampleError(str(path), "zero-length file")


def _check_count(path: Path, count: int) -> None:
    if count == 0:
        raise CorruptSampleError(str(path), "no decodable frames")
    if count == 1:
        raise CorruptSampleError(str(path), STILL)


def _container_reason(container) -> str | None:
    """Why an open PyAV ``container`` is not a video (from its streams, no decoding), or None."""
    import av

    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no"]
        return f"no video stream ({', '.join(kinds)} streams only: an audio file or not a video)"
    if container.format.name == "image2" or container.format.name.endswith("_pipe"):
        return f"a still image ({container.format.name} data), not a video"
    if container.streams.video[0].disposition & av.stream.Disposition.attached_pic:
        return "only a cover picture (attached_pic), not a video"
    return None


def _pyav_reason(path: Path) -> str | None:
    """Why ``path`` is not a video according to PyAV's demuxer, or None (also when PyAV is missing)."""
    if not _importable("pyav"):
        return None
    import av

    try:
        with av.open(str(path)) as container:
            return _container_reason(container)
    except Exception:
        return None


@dataclass
class _Opened:
    """A file opened by one backend: its frame count and a way to fetch frames by index."""

    count: int
    get: Callable[[list[int]], Tensor]
    decoded: int | None = None  # frames decoded for every request (a whole-stream decode), or None: counted by get
    close: Callable[[], None] | None = None


def _open_failure(path: Path, backend: str, err: Exception) -> CorruptSampleError:
    reason = _pyav_reason(path) or f"cannot open with {backend}: {type(err).__name__}: {err}"
    return CorruptSampleError(str(path), reason)


def _pyav_decode_all(path: Path) -> list[np.ndarray]:
    """Every frame of the first video stream, upright (rotation metadata applied), decoded once."""
    import av

    try:
        with av.open(str(path)) as container:
            reason = _container_reason(container)
            if reason:
                raise CorruptSampleError(str(path), reason)
            return [_rgb(frame) for frame in container.decode(container.streams.video[0])]
    except CorruptSampleError:
        raise
    except Exception as err:  # av.error.* and friends
        raise CorruptSampleError(str(path), f"cannot decode with PyAV: {type(err).__name__}: {err}") from err


def _rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as upright ``(H, W, 3)`` uint8 RGB (rotation metadata applied)."""
    turns = int(round(getattr(frame, "rotation", 0) or 0) / 90) % 4  # counter-clockwise
    array = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(np.rot90(array, turns)) if turns else array


def _open_pyav_full(path: Path) -> _Opened:
    decoded = _pyav_decode_all(path)
    return _Opened(len(decoded), lambda idx: torch.from_numpy(np.stack([decoded[i] for i in idx])), len(decoded))


class _PacketIndex:
    """The video packets of a file in decode order, demuxed once without decoding.

    ``pts_order[i]`` is the presentation time of frame ``i`` (display order); a frame ``i`` is decoded
    by feeding packets from the last keyframe (in decode order) at or before it. Frames not asked for
    are fed with ``skip_frame = NONREF``: a frame no other frame references is then only parsed, not
    decoded (the wanted frames are unchanged: nothing depends on a non-reference frame).
    """

    def __init__(self, container, stream) -> None:
        self.container, self.stream = container, stream
        self.packets = [p for p in container.demux(stream) if p.size]
        self.usable = bool(self.packets) and all(p.pts is not None for p in self.packets) and \
            any(p.is_keyframe for p in self.packets) and len({p.pts for p in self.packets}) == len(self.packets)
        self.pts_order = sorted(p.pts for p in self.packets) if self.usable else []

    def first_packet(self, pts: int) -> int:
        """Decode-order position of the last keyframe whose time is at or before ``pts`` (else the first)."""
        best = 0
        for j, p in enumerate(self.packets):
            if p.is_keyframe and p.pts <= pts:
                best = j
        return best

    def decode(self, indices: Sequence[int], skip: bool = True) -> tuple[dict[int, np.ndarray], int]:
        """``{pts: RGB frame}`` of the frames ``indices`` and the number of frames decoded."""
        want = {self.pts_order[i] for i in indices}
        context = self.stream.codec_context
        got: dict[int, np.ndarray] = {}
        decoded = 0

        def take(frames) -> None:
            nonlocal decoded
            for frame in frames:
                decoded += 1
                if frame.pts in want and frame.pts not in got:
                    got[frame.pts] = _rgb(frame)

        for packet in self.packets[self.first_packet(min(want)):]:
            if skip:
                context.skip_frame = "DEFAULT" if packet.pts in want else "NONREF"
            take(context.decode(packet))
            if len(got) == len(want):
                break
        else:
            context.skip_frame = "DEFAULT"
            take(context.decode(None))
        return got, decoded


def _open_pyav(path: Path) -> _Opened:
    """PyAV with exact seeking: decode from the keyframe before the first wanted frame to the last one,
    skipping non-reference frames that are not wanted. Files whose packets lack timestamps or keyframe
    flags (some AVI and raw streams) are decoded whole, as before."""
    import av

    try:
        container = av.open(str(path))
    except Exception as err:
        raise CorruptSampleError(str(path), _pyav_reason(path) or
                                 f"cannot open with PyAV: {type(err).__name__}: {err}") from err
    try:
        reason = _container_reason(container)
        if reason:
            raise CorruptSampleError(str(path), reason)
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = "NONE", 1  # one core per loader worker
        index = _PacketIndex(container, stream)
    except CorruptSampleError:
        container.close()
        raise
    except Exception as err:
        container.close()
        raise CorruptSampleError(str(path), f"cannot demux with PyAV: {type(err).__name__}: {err}") from err
    if not index.usable:
        container.close()
        return _open_pyav_full(path)

    def get(idx: list[int]) -> Tensor:
        try:
            got, decoded = index.decode(idx)
        except Exception as err:  # av.error.* on a damaged packet
            raise CorruptSampleError(str(path), f"cannot decode with PyAV: {type(err).__name__}: {err}") from err
        finally:
            container.close()
        DECODE_STATS["decoded"] += decoded
        missing = sorted(i for i in set(idx) if index.pts_order[i] not in got)
        if missing:  # a cut file: the packets are listed but do not decode
            raise CorruptSampleError(str(path), f"frames {missing[:4]} of {len(index.pts_order)} do not decode "
                                                f"(truncated or damaged stream)")
        return torch.from_numpy(np.stack([got[index.pts_order[i]] for i in idx]))

    return _Opened(len(index.packets), get, None, container.close)


def _open_decord(path: Path) -> _Opened:
    import decord

    try:
        reader = decord.VideoReader(str(path), num_threads=1, ctx=decord.cpu(0))
    except Exception as err:
        raise _open_failure(path, "decord", err) from err

    def get(idx: list[int]) -> Tensor:
        try:
            return torch.from_numpy(np.ascontiguousarray(reader.get_batch(idx).asnumpy()))
        except Exception as err:  # decord 0.6 fails on some frame widths (e.g. 48 px); PyAV reads them
            if not _importable("pyav"):
                raise CorruptSampleError(str(path), f"decord cannot decode frames: {type(err).__name__}: {err}") from err
            return _open_pyav(path).get(idx)

    return _Opened(len(reader), get)


def _open_torchcodec(path: Path) -> _Opened:
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact")
    except Exception as err:  # ValueError / RuntimeError from FFmpeg
        raise _open_failure(path, "torchcodec", err) from err

    def get(idx: list[int]) -> Tensor:
        try:
            return decoder.get_frames_at(indices=idx).data.contiguous()
        except Exception as err:
            raise CorruptSampleError(str(path), f"torchcodec cannot decode frames: {type(err).__name__}: {err}") from err

    return _Opened(len(decoder), get)


_OPENERS = {"decord": _open_decord, "torchcodec": _open_torchcodec, "pyav": _open_pyav}


def _open(path: Path, backend: str) -> _Opened:
    _check_file(path)
    opened = _OPENERS[backend](path)
    try:
        _check_count(path, opened.count)
    except CorruptSampleError:
        if opened.close:
            opened.close()
        raise
    return opened


def read_clip(path: str | Path, choose: Callable[[int], Sequence[int]], backend: str = "auto") -> Tensor:
    """Open ``path`` once, pick frames by ``choose(frame_count)`` and decode them: ``(N, H, W, 3)`` uint8 RGB.

    :data:`DECODE_STATS` counts the clips read and, for PyAV, the frames actually decoded.

    Raises:
        CorruptSampleError: missing, empty, unreadable or not a video (see the module docstring), or
            ``choose`` gave an index past the last frame.
    """
    path = Path(path)
    opened = _open(path, resolve_backend(backend))
    try:
        idx = [int(i) for i in choose(opened.count)]
        if idx and (min(idx) < 0 or max(idx) >= opened.count):
            bad = max(idx) if max(idx) >= opened.count else min(idx)
            raise CorruptSampleError(str(path), f"frame index {bad} outside the {opened.count} frames")
        frames = opened.get(idx)
    finally:
        if opened.close:
            opened.close()
    DECODE_STATS["clips"] += 1
    if opened.decoded is not None:
        DECODE_STATS["decoded"] += opened.decoded
    return frames


def frame_count(path: str | Path, backend: str = "auto") -> int:
    """Number of frames ``path`` decodes to (at least 2; fewer is refused as not a video)."""
    path = Path(path)
    opened = _open(path, resolve_backend(backend))
    if opened.close:
        opened.close()
    return opened.count


def video_info(path: str | Path) -> tuple[int, int, int]:
    """``(frames, height, width)`` of ``path`` as :func:`read_clip` returns them (upright), from PyAV's packet
    index and the first decoded frame: what a plan needs without decoding the clip (``decode: device``)."""
    import av

    path = Path(path)
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            reason = _container_reason(container)
            if reason:
                raise CorruptSampleError(str(path), reason)
            stream = container.streams.video[0]
            stream.thread_type, stream.codec_context.thread_count = "NONE", 1
            index = _PacketIndex(container, stream)
            container.seek(0)
            first = _rgb(next(container.decode(stream)))
    except CorruptSampleError:
        raise
    except Exception as err:
        raise CorruptSampleError(str(path), f"cannot read with PyAV: {type(err).__name__}: {err}") from err
    count = len(index.packets) if index.usable else len(_pyav_decode_all(path))
    _check_count(path, count)
    return count, first.shape[0], first.shape[1]


def keyframe_span(path: str | Path, indices: Sequence[int]) -> int:
    """Frames a decoder without skipping decodes to return ``indices`` (decord, and VideoMAE through it):
    every packet from the keyframe before the first index to the last index, in decode order."""
    import av

    with av.open(str(path)) as container:
        index = _PacketIndex(container, container.streams.video[0])
        if not index.usable:
            return len(index.packets)
        first = index.first_packet(index.pts_order[min(indices)])
        last_pts = index.pts_order[max(indices)]
        last = max(j for j, p in enumerate(index.packets) if p.pts == last_pts)
        # B-frames: the last wanted frame may need later packets (its references) to be output
        return max(last, max(j for j, p in enumerate(index.packets) if p.pts <= last_pts)) - first + 1


def read_frames(path: str | Path, indices: Sequence[int], backend: str = "auto") -> Tensor:
    """Frames ``indices`` of ``path`` -> ``(N, H, W, 3)`` uint8 RGB (indices may repeat, in any order).

    Raises:
        CorruptSampleError: as :func:`read_clip`.
    """
    return read_clip(path, lambda _: indices, backend)
