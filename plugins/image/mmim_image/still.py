"""Decoding still images as users have them: EXIF orientation, every Pillow mode, high bit depths.

:func:`load_still` returns what a player or viewer shows, as a tensor the transforms take:

* **orientation**: the EXIF ``Orientation`` tag (phone photos) is applied (``ImageOps.exif_transpose``'s table);
* **first frame**: multi-frame files (GIF, APNG, multi-page TIFF, ICO, MPO) give their first frame;
* **alpha** (``RGBA``, ``LA``, ``PA``, palette images with a transparent colour): composited over
  ``background`` (white by default), never dropped, so the colour under transparent pixels (often black
  or garbage) does not leak in;
* **palette, CMYK, YCbCr, LAB, HSV, 1-bit**: converted by Pillow (CMYK with an embedded ICC profile through
  that profile to sRGB);
* **high bit depth**: 16-bit grey (``I;16*``), 32-bit integer (``I``) and 32-bit float (``F``) images become
  ``float32`` in ``[0, 1]``, scaled, never clipped to 8 bits. With ``scaling="dtype"`` integers are divided by
  their type's range (16-bit by 65535; 32-bit TIFF by ``2**32 - 1`` unsigned or shifted from ``-2**31``
  signed, as the file's ``SampleFormat`` says; Pillow's ``I`` images from PGM/PNG hold 16-bit values and
  are divided by 65535); floats inside ``[0, 1]`` are kept, others are stretched from their min to their max.
  With ``scaling="image"`` every high-bit image is stretched from its own min to max. 16-bit RGB files are
  read by Pillow as 8-bit RGB (its high byte: scaled, not clipped); 32-bit float RGB TIFFs are not
  readable by Pillow and are refused naming the file.

8-bit results stay ``uint8`` ``(C, H, W)``; high-bit results are ``float32`` ``(C, H, W)`` in ``[0, 1]``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmim.data import CorruptSampleError

HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
SCALINGS = ("dtype", "image")
# Pillow formats it identifies but cannot decode without an outside program or a registered handler.
_UNDECODABLE = frozenset({"EPS", "MPEG", "WMF", "BUFR", "GRIB", "HDF5"})


def still_extensions() -> tuple[str, ...]:
    """Every file extension (lower case, with the dot) of a still format this Pillow decodes by itself."""
    Image.init()
    return tuple(sorted(ext.lower() for ext, fmt in Image.registered_extensions().items()
                        if fmt in Image.OPEN and fmt not in _UNDECODABLE))


# EXIF Orientation -> the transposition that makes the image upright (ImageOps.exif_transpose's table).
ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
               5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
               8: Image.Transpose.ROTATE_90}


def _tiff_sample_format(img: Image.Image) -> int:
    tags = getattr(img, "tag_v2", None)
    value = tags.get(339, 1) if tags is not None else 1  # TIFF default: unsigned integer
    return int(value[0] if isinstance(value, tuple) else value)


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF ``Orientation`` tag says (itself when there is none)."""
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF: leave the image as stored
        return img
    method = ORIENTATION.get(orientation)
    if method is None:
        return img
    turned = img.transpose(method)
    turned.info = dict(img.info)
    return turned


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def high_bit_to_unit(img: Image.Image, scaling: str = "dtype", fmt: str | None = None,
                     sample_format: int = 1) -> np.ndarray:
    """A high-bit grey image (mode in :data:`HIGH_BIT_MODES`) as ``float64`` ``(H, W)`` in ``[0, 1]``.

    ``fmt`` (Pillow's format name of the file) and ``sample_format`` (TIFF tag 339: 1 unsigned, 2 signed)
    say how 32-bit integers are stored.

    Raises:
        ValueError: non-finite values in a float image, or an unknown ``scaling``.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    raw = np.asarray(img)
    if img.mode == "F":
        values = raw.astype(np.float64)
        if not np.isfinite(values).all():
            raise ValueError(f"{int((~np.isfinite(values)).sum())} non-finite pixel values (NaN or inf)")
        inside = values.size and values.min() >= 0.0 and values.max() <= 1.0
        return values if scaling == "dtype" and inside else _stretch(values)
    if scaling == "image":
        return _stretch(raw.astype(np.float64))
    if img.mode.startswith("I;16"):
        return raw.astype(np.float64) / 65535.0
    if fmt == "TIFF":  # mode "I": 32-bit integers
        if sample_format == 2:
            return (raw.astype(np.float64) + 2.0**31) / (2.0**32 - 1)
        return raw.astype(np.int32).view(np.uint32).astype(np.float64) / (2.0**32 - 1)
    values = raw.astype(np.float64)  # PGM/PNG "I" images hold 16-bit values (Pillow rescales maxval)
    if values.size and values.min() >= 0 and values.max() <= 65535:
        return values / 65535.0
    return (values + 2.0**31) / (2.0**32 - 1)


def _composite(img: Image.Image, background: Sequence[int]) -> Image.Image:
    rgba = img.convert("RGBA")
    base = Image.new("RGBA", rgba.size, tuple(int(c) for c in background) + (255,))
    return Image.alpha_composite(base, rgba).convert("RGB")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    profile = img.info.get("icc_profile")
    if profile:
        try:
            import io

            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception:  # a broken profile: fall back to Pillow's plain conversion
            pass
    return img.convert("RGB")


def to_tensor(img: Image.Image, channels: int, scaling: str = "dtype", background: Sequence[int] = (255, 255, 255),
              fmt: str | None = None, sample_format: int = 1) -> Tensor:
    """An opened, upright Pillow image as ``(channels, H, W)``: ``uint8``, or ``float32`` in ``[0, 1]``
    for high-bit images (see the module docstring; ``fmt``, ``sample_format`` as in :func:`high_bit_to_unit`)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if img.mode in HIGH_BIT_MODES:
        unit = torch.from_numpy(high_bit_to_unit(img, scaling, fmt, sample_format).astype(np.float32))[None]
        return unit.expand(channels, -1, -1).contiguous()
    if img.mode in ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        img = _composite(img, background)
    elif img.mode == "CMYK":
        img = _cmyk_to_rgb(img)
    img = img.convert("L" if channels == 1 else "RGB")
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).reshape(img.height, img.width, -1).permute(2, 0, 1).contiguous()


def load_still(path: str, channels: int, scaling: str = "dtype", background: Sequence[int] = (255, 255, 255)) -> Tensor:
    """Decode the still image ``path`` (its first frame) upright, as :func:`to_tensor` returns it.

    Raises:
        CorruptSampleError: the file is empty, unreadable, truncated, not an image, or has non-finite pixels.
    """
    try:
        if os.path.getsize(path) == 0:
            raise CorruptSampleError(path, "empty file (0 bytes)")
        with Image.open(path) as img:
            img.seek(0)
            img.load()  # decode now, so truncated data fails here
            fmt, sample_format = img.format, _tiff_sample_format(img)
            return to_tensor(upright(img), channels, scaling, background, fmt, sample_format)
    except CorruptSampleError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise CorruptSampleError(path, f"cannot decode image ({type(err).__name__}: {err})") from err
