"""Decoding and cropping training clips on the GPU (``decode: device``): NVDEC through torchcodec, crops on the device.

With ``decode: device`` a training item carries no pixels: the loader worker only opens the file's header
(frame count and size, one keyframe) and draws the item's :class:`~mmim_video.dataset.ClipPlan` (frame indices,
crops, flips) with the same draws in the same order as the CPU path; the item is
``{"video": plan as int64, "video_source": path or bytes, "label"}``. In the training process,
:class:`DeviceClips` (the dataset's ``device_transforms["video"]``, applied by :func:`mmim.data.device.to_device`
to the whole batch) decodes each plan's frames on the batch's device, cuts and resizes every crop there
(bilinear, antialiased, rounded to 8-bit levels like the CPU path), flips and normalises:
``(B, [num_sample,] C, T, S, S)`` float32.

The decoder is torchcodec's ``VideoDecoder(source, device="cuda")`` (NVDEC) on a CUDA device. On the CPU (tests,
or a machine without torchcodec) the frames come from :func:`mmim_video.reader.read_frames`, so every part but
NVDEC itself runs and is tested here; ``benchmarks/gpu.sh`` measures it where a GPU is lent.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmim.data import CorruptSampleError
from mmim_video.sampling import ClipPlan, Crop

FIELDS = 5  # top, left, height, width, flip per crop
SOURCE_KEY = "video_source"


def encode_plan(plan: ClipPlan) -> Tensor:
    """``plan`` as one int64 row: ``[T, n, indices..., (top, left, h, w, flip) x n]`` (collates to ``(B, L)``)."""
    values = [len(plan.indices), len(plan.crops), *plan.indices]
    for c in plan.crops:
        values += [c.top, c.left, c.height, c.width, int(c.flip)]
    return torch.tensor(values, dtype=torch.int64)


def decode_plan(row: Sequence[int]) -> ClipPlan:
    """The :class:`ClipPlan` of an :func:`encode_plan` row."""
    t, n = int(row[0]), int(row[1])
    indices = tuple(int(i) for i in row[2:2 + t])
    crops = []
    for k in range(n):
        top, left, h, w, flip = (int(v) for v in row[2 + t + FIELDS * k:2 + t + FIELDS * (k + 1)])
        crops.append(Crop(top, left, h, w, bool(flip)))
    return ClipPlan(indices, tuple(crops))


def torchcodec_cuda() -> bool:
    """Whether torchcodec imports (NVDEC decoding needs its CUDA build and a CUDA device)."""
    if importlib.util.find_spec("torchcodec") is None:
        return False
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception:  # OSError / RuntimeError: FFmpeg or CUDA libraries missing
        return False
    return True


def host_frames(source: str | bytes, indices: Sequence[int], device: torch.device) -> Tensor:
    """Frames ``indices`` of ``source`` decoded on the host (PyAV), as ``(T, C, H, W)`` uint8 on ``device``."""
    from mmim.data.records import spilled
    from mmim_video.reader import read_frames

    if isinstance(source, (bytes, bytearray)):
        with spilled("mp4", bytes(source)) as path:
            frames = read_frames(path, indices, "pyav")
    else:
        frames = read_frames(source, indices, "pyav")
    return frames.permute(0, 3, 1, 2).contiguous().to(device)


def nvdec_frames(source: str | bytes, indices: Sequence[int], device: torch.device) -> Tensor:
    """Frames ``indices`` decoded by torchcodec on ``device`` (NVDEC on CUDA), ``(T, C, H, W)`` uint8."""
    from torchcodec.decoders import VideoDecoder

    try:
        data = io.BytesIO(source).getvalue() if isinstance(source, (bytes, bytearray)) else source
        decoder = VideoDecoder(data, device=str(device), seek_mode="exact", dimension_order="NCHW")
        return decoder.get_frames_at(indices=list(indices)).data
    except Exception as err:
        where = source if isinstance(source, str) else "a shard member"
        raise CorruptSampleError(str(where), f"torchcodec cannot decode on {device}: {type(err).__name__}: {err}") from err


def crop_on_device(frames: Tensor, crop: Crop, size: int) -> Tensor:
    """``(T, C, H, W)`` uint8 -> ``(C, T, size, size)`` float32 in 8-bit levels: the crop resized (bilinear,
    antialiased) and rounded as the CPU path's ``uint8`` output is, then flipped."""
    region = frames[:, :, crop.top:crop.top + crop.height, crop.left:crop.left + crop.width].float()
    out = F.interpolate(region, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = out.round_().clamp_(0, 255)
    if crop.flip:
        out = out.flip(-1)
    return out.permute(1, 0, 2, 3)


class DeviceClips:
    """The device transform of ``decode: device``: a batch of plans and sources -> normalised clips.

    Args:
        img_size: output side ``S``.
        mean, std: per-channel normalisation of ``[0, 1]`` pixels (``channels`` of them are used).
        channels: channels the items keep.
        opener: ``(source, indices, device) -> (T, C, H, W) uint8`` frames; default: torchcodec (NVDEC) on a
            CUDA device, PyAV on the host otherwise.
    """

    takes_batch = True  # mmim.data.device.to_device hands it the whole batch (plans and sources)

    def __init__(self, img_size: int, mean: Sequence[float], std: Sequence[float], channels: int = 3,
                 opener: Callable[[Any, Sequence[int], torch.device], Tensor] | None = None) -> None:
        self.img_size, self.channels, self.opener = img_size, channels, opener
        self.mean, self.std = tuple(mean)[:channels], tuple(std)[:channels]

    def open(self, source: Any, indices: Sequence[int], device: torch.device) -> Tensor:
        if self.opener is not None:
            return self.opener(source, indices, device)
        if device.type == "cuda" and torchcodec_cuda():
            return nvdec_frames(source, indices, device)
        return host_frames(source, indices, device)

    def __call__(self, batch: dict[str, Any]) -> Tensor:
        plans, sources = batch["video"], batch[SOURCE_KEY]
        device = plans.device
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(-1, 1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(-1, 1, 1, 1)
        out = []
        for row, source in zip(plans.tolist(), sources):
            plan = decode_plan(row)
            frames = self.open(source, plan.indices, device)[:, :self.channels]
            clips = [(crop_on_device(frames, c, self.img_size).mul_(1.0 / 255).sub_(mean).div_(std))
                     for c in plan.crops]
            out.append(clips[0] if len(clips) == 1 else torch.stack(clips))
        return torch.stack(out)

    def __repr__(self) -> str:
        return f"DeviceClips(img_size={self.img_size}, channels={self.channels})"
