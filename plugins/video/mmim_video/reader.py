"""One frame-reader interface over the video decoding backends (decord, PyAV).

``read_frames(path, indices)`` returns the requested frames as ``(N, H, W, 3)`` uint8 RGB, whichever
backend decodes them; ``frame_count(path)`` the number of decodable frames. ``backend="auto"``
takes decord when it imports (VideoMAE's reader, ``get_batch(indices)``), else PyAV. Any failure
to open or decode a file raises :class:`~mmim.data.CorruptSampleError` naming the file.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmim.data import CorruptSampleError

BACKENDS = ("decord", "pyav")
_MODULES = {"decord": "decord", "pyav": "av"}
INSTALL_HINT = "pip install 'mmim[video]' (PyAV `av` and `decord`)"


def available_backends() -> list[str]:
    """The backends whose module can be imported, in preference order."""
    return [b for b in BACKENDS if importlib.util.find_spec(_MODULES[b]) is not None]


def resolve_backend(backend: str = "auto") -> str:
    """``backend``, or the first available one for ``"auto"``; raises ImportError naming the extra to install."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; choices: auto, {', '.join(BACKENDS)}")
    have = available_backends()
    if backend == "auto":
        if not have:
            raise ImportError(f"no video decoding backend is installed: {INSTALL_HINT}")
        return have[0]
    if backend not in have:
        raise ImportError(f"video backend {backend!r} needs the module {_MODULES[backend]!r}: {INSTALL_HINT}")
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


def frame_count(path: str | Path, backend: str = "auto") -> int:
    """Number of frames ``path`` decodes to."""
    path, backend = Path(path), resolve_backend(backend)
    _check_file(path)
    count = len(_decord_reader(path)) if backend == "decord" else len(_pyav_frames(path))
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
