"""The image datasets' transforms: MAE's pretraining augmentation, or a plain resize, then normalisation.

Everything runs on ``uint8`` tensors ``(C, H, W)`` (or ``float32`` in ``[0, 1]``: high-bit-depth images,
:mod:`mmim_image.still`) through ``torchvision.transforms.v2``; every random choice draws from torch's global
RNG, which the engine seeds per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from mmim.data.device import DeviceNormalize
from mmim.timm_compat import import_torchvision


def tv2() -> ModuleType:
    """``torchvision.transforms.v2``, imported through :func:`mmim.timm_compat.import_torchvision`."""
    import_torchvision()
    from torchvision.transforms import v2

    return v2


def to_pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``img_size`` as ``(H, W)``; an int means a square. Raises ValueError for non-positive sizes."""
    pair = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) <= 0:
        raise ValueError(f"img_size must be a positive int or a pair (H, W) of positive ints, got {size!r}")
    return pair  # type: ignore[return-value]


def channel_values(value: float | Sequence[float], channels: int, name: str) -> tuple[float, ...]:
    """``mean``/``std`` as one float per channel; a single value is repeated for every channel.

    Raises:
        ValueError: ``value`` has neither 1 nor ``channels`` entries.
    """
    values = (float(value),) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values {values} but the images have {channels} channel(s)")
    return values


def check_image(image: Tensor) -> None:
    """Raise ValueError unless ``image`` is ``(C, H, W)`` ``uint8`` or floating point (``[0, 1]``)."""
    if image.dim() != 3 or not (image.dtype == torch.uint8 or image.dtype.is_floating_point):
        raise ValueError(f"expected a uint8 or [0, 1] float image (C, H, W), got {image.dtype} {tuple(image.shape)}")


class ToUnit:
    """``uint8`` -> ``float32`` / 255; a float image -> ``float32`` clamped to ``[0, 1]`` (bicubic resizing
    overshoots a little; ``uint8`` saturates the same way)."""

    def __call__(self, image: Tensor) -> Tensor:
        if image.dtype == torch.uint8:
            return tv2().functional.to_dtype(image, torch.float32, scale=True)
        return image.float().clamp(0.0, 1.0)

    def __repr__(self) -> str:
        return "ToUnit()"


class ResizeCover:
    """Resize (bicubic, antialiased) so the image covers ``size``, then centre-crop to exactly ``size``.

    Keeps the aspect ratio; an image already of ``size`` is returned unchanged.

    Args:
        size: target ``(H, W)``.
    """

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = size

    def __call__(self, image: Tensor) -> Tensor:
        """``image`` ``(C, H0, W0)`` -> ``(C, H, W)``, same dtype."""
        v2 = tv2()
        (h, w), (h0, w0) = self.size, image.shape[-2:]
        if (h0, w0) == (h, w):
            return image
        scale = max(h / h0, w / w0)
        new = [max(h, round(h0 * scale)), max(w, round(w0 * scale))]
        image = v2.functional.resize(image, new, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        return v2.functional.center_crop(image, [h, w])

    def __repr__(self) -> str:
        return f"ResizeCover(size={self.size})"


class ImageTransform:
    """A built transform: ``uint8`` (or ``[0, 1]`` float) ``(C, H0, W0)`` -> normalised ``float32`` ``(C, H, W)``.

    It pickles as its settings and rebuilds its torchvision pipeline when unpickled, so DataLoader
    workers started with ``spawn``/``forkserver`` import torchvision through
    :func:`~mmim.timm_compat.import_torchvision` rather than through pickle.

    Args:
        size: output ``(H, W)``.
        augment: random resized crop (+ flip) or :class:`ResizeCover`.
        scale: area range of the random crop.
        hflip: random horizontal flips when augmenting.
        mean: one value per channel (or a single value for all).
        std: same form as ``mean``.
        on_device: stop before scaling and normalising: the output stays ``uint8`` (the same pixels
            the host path would scale), and :meth:`device_transform` finishes it on the device.
    """

    def __init__(self, size: tuple[int, int], augment: bool, scale: tuple[float, float], hflip: bool,
                 mean: tuple[float, ...], std: tuple[float, ...], jitter: float = 0.0, on_device: bool = False) -> None:
        self.size, self.augment, self.scale, self.hflip, self.mean, self.std = size, augment, scale, hflip, mean, std
        self.jitter, self.on_device = jitter, on_device
        self.ops = self._build()

    def device_transform(self) -> DeviceNormalize:
        """The scaling and normalisation this transform leaves to the device (``on_device``)."""
        return DeviceNormalize(self.mean, self.std)

    def _finish(self, image: Tensor) -> Tensor:
        """The last step of the host path: scale and normalise, or (``on_device``) check the pixels stay 8-bit."""
        if self.on_device:
            if image.dtype != torch.uint8:
                raise ValueError(f"normalize: device transfers 8-bit pixels, but this image has more than 8 bits per "
                                 f"sample ({image.dtype}); use normalize: host for high-bit-depth images")
            return image
        return self.normalize(ToUnit()(image))

    def two_views(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """A strong (student) and a weak (teacher) view of one crop: ``(C, H, W)`` each.

        Both share the random crop and flip, so their tokens stay aligned; only the student's view
        gets photometric jitter (brightness and contrast by up to ``jitter``, then a random Gaussian
        blur with probability 0.5).
        """
        check_image(image)
        v2 = tv2()
        crop = self.ops(image)
        strong = v2.ColorJitter(brightness=self.jitter, contrast=self.jitter)(crop)
        strong = v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.5)(strong)
        return (self._finish(strong).as_subclass(Tensor).contiguous(),
                self._finish(crop).as_subclass(Tensor).contiguous())

    def _build(self) -> Callable[[Tensor], Tensor]:
        v2 = tv2()
        self.normalize = v2.Normalize(mean=list(self.mean), std=list(self.std))
        if self.augment:
            ops: list[Callable[[Tensor], Tensor]] = [
                v2.RandomResizedCrop(self.size, scale=self.scale, interpolation=v2.InterpolationMode.BICUBIC,
                                     antialias=True)
            ]
            if self.hflip:
                ops.append(v2.RandomHorizontalFlip())
        else:
            ops = [ResizeCover(self.size)]
        return v2.Compose(ops)  # the geometric part; _finish scales and normalises (or leaves it to the device)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("ops", "normalize")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.ops = self._build()

    def __call__(self, image: Tensor) -> Tensor:
        """``image`` ``(C, H0, W0)`` ``uint8`` (or float in ``[0, 1]``) -> ``(C, H, W)`` ``float32``."""
        check_image(image)
        out = self._finish(self.ops(image))
        return out.as_subclass(Tensor).contiguous()

    def __repr__(self) -> str:
        return f"ImageTransform({self.ops!r})"


def build_transform(
    img_size: int | Sequence[int],
    augment: bool,
    crop_scale: Sequence[float] = (0.2, 1.0),
    hflip: bool = True,
    mean: float | Sequence[float] = (0.485, 0.456, 0.406),
    std: float | Sequence[float] = (0.229, 0.224, 0.225),
    jitter: float = 0.4,
    on_device: bool = False,
) -> ImageTransform:
    """The transform for one split.

    ``augment=True`` is MAE's pretraining augmentation: ``RandomResizedCrop(img_size,
    scale=crop_scale, ratio=(3/4, 4/3), bicubic, antialias)``, then a horizontal flip with
    probability 0.5 if ``hflip``. ``augment=False`` only brings the image to ``img_size``
    (:class:`ResizeCover`: aspect-preserving bicubic resize and centre crop; a no-op at the right
    size). Both then scale to ``[0, 1]`` and normalise with ``mean``/``std``.

    Args:
        img_size: output ``H`` or ``(H, W)``.
        augment: apply the random augmentation (training) or not.
        crop_scale: ``(min, max)`` fraction of the image area the random crop keeps.
        hflip: random horizontal flips when augmenting.
        mean: per-channel mean (one value or one per channel) of the ``[0, 1]`` pixels.
        std: per-channel standard deviation, same form as ``mean``.
        jitter: photometric strength of the student's view in :meth:`ImageTransform.two_views`.
        on_device: leave scaling and normalisation to the device (``uint8`` out; see
            :class:`mmim.data.device.DeviceNormalize`).

    Returns:
        a callable mapping ``uint8`` ``(C, H0, W0)`` to ``float32`` ``(C, H, W)``.

    Raises:
        ValueError: a size, scale or statistic is out of range.
    """
    size = to_pair(img_size)
    scale = tuple(float(s) for s in crop_scale)
    if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {crop_scale!r}")
    means = channel_values(mean, len(mean) if isinstance(mean, Sequence) else 1, "mean")
    stds = channel_values(std, len(means), "std")
    if min(stds) <= 0:
        raise ValueError(f"std must be positive, got {stds}")
    return ImageTransform(size, augment, scale, hflip, means, stds, jitter, on_device)  # type: ignore[arg-type]
