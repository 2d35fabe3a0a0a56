"""One frame-reader interface over the video decoding backends (decord, torchcodec, PyAV).

``read_frames(path, indices)`` returns the requested frames as ``(N, H, W, 3)`` uint8 RGB, whichever
backend decodes them; ``frame_count(path)`` the number of decodable frames. ``backend="auto"``
takes the first backend that imports, in the order of :data:`BACKENDS`: decord (VideoMAE's reader,
``get_batch(indices)``), torchcodec (``VideoDecoder.get_frames_at``, exact seeking), then PyAV (decodes
the whole stream); the environment variable ``MMIM_VIDEO_BACKEND`` overrides the choice of ``"auto"``.
Any failure to open or decode a file raises :class:`~mmim.data.CorruptSampleError` naming the file.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmim.data import CorruptSampleError

BACKENDS = ("decord", "torchcodec", "pyav")
_MODULES = {"decord": "decord", "torchcodec": "torchcodec", "pyav": "av"}
INSTALL_HINT = "pip install 'mmim[video]' (PyAV `av` and `decord`)"
_HINTS = {
    "decord": INSTALL_HINT,
    "pyav": INSTALL_HINT,
    "torchcodec": "pip install 'mmim[torchcodec]' (`torchcodec`; a CPU torch needs torchcodec 0.13 and the "
                  "system FFmpeg 4-7 libraries, e.g. apt-get install ffmpeg)",
}
ENV_VAR = "MMIM_VIDEO_BACKEND"
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


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CorruptSampleError(str(path), "file not found")
    if path.stat().st_size == 0:
        raise CorruptSampleError(str(path), "zero-length file")


def _pyav_frames(path: Path) -> list[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CorruptSampleError(str(path), "no video stream (audio-only or not a video)")
            stream = container.streams.video[0]
            return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    except CorruptSampleError:
        raise
    except Exception as err:  # av.error.* and friends
        raise CorruptSampleError(str(path), f"cannot decode with PyAV: {type(err).__name__}: {err}") from err


def _decord_reader(path: Path):
    import decord

    try:
        return decord.VideoReader(str(path), num_threads=1, ctx=decord.cpu(0))
    except Exception as err:
        raise CorruptSampleError(str(path), f"cannot open with decord: {type(err).__name__}: {err}") from err


def _torchcodec_decoder(path: Path):
    from torchcodec.decoders import VideoDecoder

    try:
        return VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="exact")
    except Exception as err:  # ValueError / RuntimeError from FFmpeg
        reason = "no video stream (audio-only or not a video)" if "video stream" in str(err).lower() else \
            f"cannot open with torchcodec: {type(err).__name__}: {err}"
        raise CorruptSampleError(str(path), reason) from err


def _torchcodec_frames(path: Path, idx: list[int]) -> Tensor:
    decoder = _torchcodec_decoder(path)
    total = len(decoder)
    if idx and (min(idx) < 0 or max(idx) >= total):
        raise CorruptSampleError(str(path), f"frame index {max(idx)} outside the {total} frames")
    try:
        return decoder.get_frames_at(indices=idx).data.contiguous()
    except Exception as err:
        raise CorruptSampleError(str(path), f"torchcodec cannot decode frames: {type(err).__name__}: {err}") from err


def frame_count(path: str | Path, backend: str = "auto") -> int:
    """Number of frames ``path`` decodes to."""
    path, backend = Path(path), resolve_backend(backend)
    _check_file(path)
    if backend == "decord":
        count = len(_decord_reader(path))
    elif backend == "torchcodec":
        count = len(_torchcodec_decoder(path))
    else:
        count = len(_pyav_frames(path))
    if count == 0:
        raise CorruptSampleError(str(path), "no decodable frames")
    return count


def read_frames(path: str | Path, indices: Sequence[int], backend: str = "auto") -> Tensor:
    """Frames ``indices`` of ``path`` -> ``(N, H, W, 3)`` uint8 RGB (indices may repeat, in any order).

    Raises:
        CorruptSampleError: missing, empty, unreadable or audio-only file, or an index past its last frame.
    """
    path, backend = Path(path), resolve_backend(backend)
    _check_file(path)
    idx = [int(i) for i in indices]
    if backend == "torchcodec":
        return _torchcodec_frames(path, idx)
    if backend == "decord":
        reader = _decord_reader(path)
        total = len(reader)
        if idx and (min(idx) < 0 or max(idx) >= total):
            raise CorruptSampleError(str(path), f"frame index {max(idx)} outside the {total} frames")
        try:
            return torch.from_numpy(np.ascontiguousarray(reader.get_batch(idx).asnumpy()))
        except Exception as err:  # decord 0.6 fails on some frame widths (e.g. 48 px); PyAV reads them
            if "pyav" not in available_backends():
                raise CorruptSampleError(str(path), f"decord cannot decode frames: {type(err).__name__}: {err}") from err
    decoded = _pyav_frames(path)
    if idx and (min(idx) < 0 or max(idx) >= len(decoded)):
        raise CorruptSampleError(str(path), f"frame index {max(idx)} outside the {len(decoded)} frames")
    return torch.from_numpy(np.stack([decoded[i] for i in idx]))
