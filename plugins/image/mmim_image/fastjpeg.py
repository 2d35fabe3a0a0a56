"""MAE's training crop of a JPEG in ``uint8``, decoded with libjpeg-turbo at reduced size when the crop allows.

The official MAE pipeline decodes the whole image with PIL, draws ``RandomResizedCrop`` parameters, resizes the
crop bicubically in PIL, flips, then converts to float and normalises. :func:`jpeg_crop` draws the same
parameters with the same torchvision function (``RandomResizedCrop.get_params``, torch's RNG) from the JPEG
header alone, then:

1. decodes with simplejpeg (libjpeg-turbo without PIL's per-image overhead), at ``1/2``, ``1/4`` or ``1/8``
   size in the DCT domain when the crop, so reduced, still has at least the output's pixels in both directions
   (``dct_scaling``; libjpeg-turbo's scaled IDCT, like PIL's ``Image.draft``);
2. cuts the crop from the decoded ``uint8`` array and resizes only that region (bicubic, antialiased: torch's
   vectorised ``uint8`` channels-last kernel at full size; PIL's resize, which takes the box in the reduced
   image's fractional coordinates, after DCT scaling) and flips it, still in ``uint8``.

Scaling and normalisation happen afterwards (on the device with ``normalize: device``). Pixel difference to a
full PIL decode through the torchvision pipeline (docs/images.md, ``tests/plugins/image/test_fastjpeg.py``):
without DCT scaling at most a few levels at crop edges (the same libjpeg-turbo decode; the box is the same);
with DCT scaling the reduced decode is an area average where the full path filters bicubically, a mean
difference of about one level.

Only plain baseline/progressive JPEGs in YCbCr or grey without an EXIF rotation take this path;
:func:`jpeg_crop` returns ``None`` for anything else (CMYK, rotated, not a JPEG) and the caller decodes as before.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmim.data import CorruptSampleError
from mmim.timm_compat import import_torchvision

DECODERS = ("simplejpeg", "pil")
RATIO = (3.0 / 4.0, 4.0 / 3.0)
STATS = {"fast": 0, "reduced": 0}  # this process: crops taken here, and of those decoded at reduced size


def available() -> bool:
    return importlib.util.find_spec("simplejpeg") is not None


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _rotated(data: bytes) -> bool:
    """Whether the JPEG carries an EXIF orientation other than upright (PIL reads the header only)."""
    if b"Exif" not in data[:65536]:
        return False
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.getexif().get(0x0112, 1) not in (1, None)


def reduction(crop_h: int, crop_w: int, out_h: int, out_w: int) -> int:
    """The largest DCT scaling ``r`` in 8, 4, 2, 1 that leaves the crop at least ``out_h x out_w`` pixels."""
    for r in (8, 4, 2):
        if crop_h / r >= out_h and crop_w / r >= out_w:
            return r
    return 1


def crop_params(height: int, width: int, scale: Sequence[float]) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of MAE's random resized crop of a ``height x width`` image: torchvision's
    ``RandomResizedCrop.get_params`` (area ``scale``, aspect 3/4-4/3), the function the official pipeline calls."""
    import_torchvision()
    from torchvision.transforms import RandomResizedCrop

    top, left, h, w = RandomResizedCrop.get_params(torch.empty(1).expand(1, height, width), list(scale), list(RATIO))
    return int(top), int(left), int(h), int(w)


def jpeg_crop(data: bytes, where: str, size: tuple[int, int], scale: Sequence[float], hflip: bool,
              dct_scaling: bool = True) -> Tensor | None:
    """A random resized crop ``(3, H, W)`` ``uint8`` of the JPEG ``data``, or ``None`` when the file is not
    a plain YCbCr/grey JPEG without EXIF rotation (then decode it the usual way).

    Raises:
        CorruptSampleError: the JPEG cannot be decoded (names ``where``).
    """
    import simplejpeg

    if not is_jpeg(data):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None  # let PIL say what is wrong with it
    if colorspace not in ("YCbCr", "Gray") or _rotated(data):
        return None
    top, left, crop_h, crop_w = crop_params(height, width, scale)
    flip = hflip and bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip's draw
    r = reduction(crop_h, crop_w, *size) if dct_scaling else 1
    try:
        array = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=math.ceil(height / r),
                                       min_width=math.ceil(width / r))
    except ValueError as err:
        raise CorruptSampleError(where, f"cannot decode JPEG ({err})") from None
    got_h, got_w = array.shape[:2]
    if (got_h, got_w) == (height, width):  # full size: the exact integer box, torch's uint8 kernel
        region = torch.from_numpy(array)[top:top + crop_h, left:left + crop_w].permute(2, 0, 1).unsqueeze(0)
        out = F.interpolate(region, size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    else:  # reduced: the same box in the reduced image's (fractional) coordinates, which PIL's resize takes
        from PIL import Image

        sy, sx = got_h / height, got_w / width
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        resized = Image.fromarray(array).resize((size[1], size[0]), Image.BICUBIC, box=box)
        out = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)
    STATS["fast"] += 1
    STATS["reduced"] += int(got_h < height)
    return out.flip(-1) if flip else out.contiguous()
