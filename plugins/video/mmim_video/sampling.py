"""What a video clip reads and how it is cut: VideoMAE's frame sampling (:func:`sample_indices`,
:func:`segment_indices`), its multi-scale crop (:func:`multiscale_crop`, :func:`fixed_offsets`), the uint8 crop and
the float evaluation view (:func:`crop_resize_uint8`, :func:`centre_float`), and a training item's
:class:`ClipPlan`, drawn before decoding so that the CPU (:mod:`mmim_video.dataset`) or the device
(:mod:`mmim_video.gpu`) can carry it out. Random draws use torch's global RNG (seeded per sample by the engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_indices(total: int, num_frames: int, rate: int, random_start: bool) -> list[int]:
    """``num_frames`` indices ``rate`` apart inside ``[0, total)``, clamped to the last frame.

    The random start is VideoMAE's pre-training draw (``kinetics.py`` ``VideoMAE._sample_train_indices``
    with one segment): uniform over ``[0, total - num_frames * rate]`` when the video has at least
    ``num_frames * rate`` frames, else 0. Without ``random_start`` the clip starts at frame 0.
    """
    span = num_frames * rate
    start = int(torch.randint(total - span + 1, ())) if random_start and total >= span else 0
    return [min(start + i * rate, total - 1) for i in range(num_frames)]


def segment_indices(total: int, num_segments: int, random: bool) -> list[int]:
    """One frame from each of ``num_segments`` equal segments of ``[0, total)`` (TSN sampling, as VideoMAE
    fine-tunes Something-Something V2: ``ssv2.py`` ``loadvideo_decord``).

    Training takes a random frame inside each segment; a video shorter than ``num_segments`` frames
    gets sorted random frames (with repeats), or frame 0 when it has at most ``num_segments`` frames
    and segments of no length, as the official code does. Evaluation takes each segment's middle frame
    (the official test view ``int(tick / 2 + tick * i)``, ``tick = total / num_segments``).
    """
    if not random:
        tick = total / num_segments
        return [min(int(tick / 2 + tick * i), total - 1) for i in range(num_segments)]
    length = total // num_segments
    if length > 0:
        offsets = torch.randint(length, (num_segments,))
        return [i * length + int(o) for i, o in enumerate(offsets)]
    if total > num_segments:
        return sorted(int(i) for i in torch.randint(total, (num_segments,)))
    return [0] * num_segments


def crop_resize(frames: Tensor, size: int, scale: float, random_place: bool) -> Tensor:
    """``(T, 3, H, W)`` -> ``(T, 3, size, size)``: a square of side ``scale * min(H, W)`` resized (bilinear)."""
    h, w = frames.shape[-2:]
    side = max(1, int(round(scale * min(h, w))))
    if random_place:
        top, left = int(torch.randint(h - side + 1, ())), int(torch.randint(w - side + 1, ()))
    else:
        top, left = (h - side) // 2, (w - side) // 2
    crop = frames[..., top:top + side, left:left + side]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@dataclass(frozen=True)
class Crop:
    """One augmented copy's crop of the decoded frames (pixels of the source frame), then an optional flip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool = False


def fixed_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int) -> list[tuple[int, int]]:
    """The 13 ``(left, top)`` places of VideoMAE's ``GroupMultiScaleCrop`` (``fix_crop``, ``more_fix_crop``):
    corners, centre, edge centres and quarter points of a 4 x 4 grid of the free space."""
    ws, hs = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)]
    return [(i * ws, j * hs) for i, j in grid]


def multiscale_crop(height: int, width: int, size: int, scales: Sequence[float], max_distort: int = 1,
                    fixed: bool = True) -> tuple[int, int, int, int]:
    """VideoMAE's pre-training crop (``transforms.py`` ``GroupMultiScaleCrop``) as ``(top, left, h, w)``.

    Side lengths are ``int(scale * short side)`` (within 3 px of ``size`` they snap to ``size``); the crop's
    width and height take scales at most ``max_distort`` steps apart in ``scales`` (so crops need not be
    square), chosen uniformly among the allowed pairs; the place is one of :func:`fixed_offsets`
    (``fixed``) or uniform. Draws from torch's global RNG. A side longer than the frame (a snapped size on a
    frame just under ``size``) is cut to the frame.
    """
    sides = [int(min(height, width) * s) for s in scales]
    sides = [size if abs(x - size) < 3 else x for x in sides]
    pairs = [(cw, ch) for i, ch in enumerate(sides) for j, cw in enumerate(sides) if abs(i - j) <= max_distort]
    crop_w, crop_h = pairs[int(torch.randint(len(pairs), ()))]
    crop_w, crop_h = max(1, min(crop_w, width)), max(1, min(crop_h, height))
    if fixed:
        places = fixed_offsets(width, height, crop_w, crop_h)
        left, top = places[int(torch.randint(len(places), ()))]
    else:
        left, top = int(torch.randint(width - crop_w + 1, ())), int(torch.randint(height - crop_h + 1, ()))
    return top, left, crop_h, crop_w


def crop_resize_uint8(frames: Tensor, crop: Crop, size: int) -> Tensor:
    """``(T, H, W, C)`` uint8 frames -> ``(C, T, size, size)`` uint8: ``crop`` cut, resized (bilinear,
    antialiased, as PIL's ``BILINEAR`` that VideoMAE uses: within 1 of it) and flipped, all in ``uint8`` on
    the cropped region only (torch's vectorised channels-last kernel)."""
    region = frames[:, crop.top:crop.top + crop.height, crop.left:crop.left + crop.width, :].permute(0, 3, 1, 2)
    out = F.interpolate(region, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if crop.flip:
        out = out.flip(-1)
    return out.permute(1, 0, 2, 3).contiguous()


def centre_float(frames: Tensor, size: int) -> Tensor:
    """``(T, H, W, C)`` uint8 -> ``(T, C, size, size)`` float in ``[0, 1]`` (not clamped): the evaluation view,
    the centred short-side square resized in float32, converted to float on that square only. The values equal
    those of :func:`crop_resize` at scale 1 on the whole frame converted to float (evaluation stays pixel-exact)."""
    h, w = frames.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    region = frames[:, top:top + side, left:left + side, :].permute(0, 3, 1, 2)
    region = region.to(torch.float32, memory_format=torch.channels_last) / 255.0
    return F.interpolate(region, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@dataclass(frozen=True)
class ClipPlan:
    """What one training item reads and how it is cut: the frame indices and one :class:`Crop` per copy.

    Drawn on the host before any decoding (:meth:`VideoClips.plan`), so the same plan can be carried out by
    the CPU (:func:`crop_resize_uint8`) or on the GPU (:mod:`mmim_video.gpu`)."""

    indices: tuple[int, ...]
    crops: tuple[Crop, ...]
