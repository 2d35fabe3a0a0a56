"""Images in class folders (the ImageNet layout), decoded with PIL."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from mmim import registry
from mmim.data import CorruptSampleError, DataError
from mmim.data.records import file_record, main_member, meta_of, spilled
from mmim_image import fastjpeg
from mmim_image.datasets.common import check_split, image_device_transforms, on_device, subset_indices
from mmim_image.still import SCALINGS, load_still, still_extensions
from mmim_image.transforms import build_transform, channel_values

# Folder names that mark ``root`` as holding splits rather than classes.
SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "test"})
MODES = {1: "L", 3: "RGB"}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def split_folder(root: Path, split: str) -> Path:
    """The folder whose subfolders are the classes of ``split``: ``root/split``, else ``root`` itself.

    Raises:
        DataError: ``root`` is missing, or it holds other splits but not ``split``.
    """
    if not root.is_dir():
        raise DataError(f"{root}: image folder root does not exist")
    if (root / split).is_dir():
        return root / split
    splits = sorted(p.name for p in _visible_dirs(root) if p.name.lower() in SPLIT_NAMES)
    if splits:
        raise DataError(f"{root}: no split folder {split!r} (found split folders: {', '.join(splits)})")
    return root


def scan(folder: Path, extensions: Sequence[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes (sorted subfolder names) and ``(path, label)`` of every image below them.

    Images are found recursively, in sorted order, by a case-insensitive extension match; hidden
    files and folders are ignored. A class folder without images still counts as a class, so the
    labels of the splits agree.

    Raises:
        DataError: no class folders, or no images in any of them.
    """
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    classes = [p.name for p in _visible_dirs(folder)]
    if not classes:
        raise DataError(f"{folder}: no class folders (expected <root>/<split>/<class>/<image> or <root>/<class>/<image>)")
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(folder / name, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for file in sorted(filenames):
                if not file.startswith(".") and file.lower().endswith(exts):
                    samples.append((os.path.join(dirpath, file), label))
    if not samples:
        raise DataError(f"{folder}: no images with extensions {', '.join(exts)} in its {len(classes)} class folders")
    return classes, samples


def decode(path: str, mode: str, scaling: str = "dtype", background: Sequence[int] = (255, 255, 255)) -> Tensor:
    """Decode the image file ``path`` upright into ``(C, H, W)`` (``C`` = 3 for ``"RGB"``, 1 for ``"L"``):
    ``uint8``, or ``float32`` in ``[0, 1]`` for high-bit-depth images (:func:`mmim_image.still.load_still`).

    Raises:
        CorruptSampleError: the file is empty, unreadable, truncated or not an image.
    """
    return load_still(path, 1 if mode == "L" else 3, scaling, background)


class ImageFolder(Dataset):
    """Images in class folders: ``root/<split>/<class>/<image>`` (ImageNet's layout).

    If ``root/<split>`` does not exist and ``root`` holds no split folder (``train``, ``val``,
    ``valid``, ``validation``, ``test``), the subfolders of ``root`` itself are the classes and
    every split reads the same images. Classes are the sorted folder names. Files are decoded
    with PIL when read; one that cannot be decoded raises :class:`~mmim.data.CorruptSampleError`.

    Args:
        split: split folder name, e.g. ``"train"`` or ``"val"``.
        augment: MAE's pretraining augmentation (random resized crop, flip) or a resize and centre crop.
        root: dataset folder.
        img_size: output ``H`` or ``(H, W)``.
        in_chans: 3 (decoded as RGB) or 1 (decoded as grey, "L").
        crop_scale: area range of the random resized crop.
        hflip: random horizontal flips when augmenting.
        mean: per-channel mean of the ``[0, 1]`` pixels (one value or ``in_chans`` values).
        std: per-channel standard deviation (one value or ``in_chans`` values).
        extensions: file extensions that count as images (case-insensitive); default: every still format
            Pillow decodes by itself (:func:`mmim_image.still.still_extensions`: JPEG, PNG, GIF, TIFF, WebP,
            BMP, PPM/PGM, TGA, ICO, JPEG 2000, ...). Multi-frame files give their first frame.
        scaling: how high-bit-depth images (16-bit, 32-bit integer and float) reach ``[0, 1]``: ``"dtype"``
            (by their type's range; floats outside ``[0, 1]`` stretched min-max) or ``"image"`` (each image
            stretched from its min to its max); see :mod:`mmim_image.still`.
        background: RGB colour transparent pixels are composited over (alpha and palette transparency).
        normalize: ``"host"`` (float32 items, normalised in the loader) or ``"device"``: ``uint8``
            items (a quarter of the bytes through the loader and the host-to-device copy), scaled
            and normalised on the device (``device_transforms``) to the same values; refused for
            images of more than 8 bits per sample.
        jpeg_decoder: ``"simplejpeg"``: training crops of plain JPEGs are decoded by libjpeg-turbo through
            simplejpeg, cut and resized in ``uint8`` on the crop only (:mod:`mmim_image.fastjpeg`); ``"pil"``:
            every file through PIL and the torchvision pipeline. Evaluation and teacher views always use PIL.
        dct_scaling: let such a crop decode at 1/2, 1/4 or 1/8 size in the DCT domain when it still has at
            least the output's pixels (large images, small outputs).
        max_samples: keep at most this many images, evenly spread over the (class-sorted) list.
        teacher_view: also return ``image_teacher``, a weak view of the same crop (the student's
            ``image`` gets photometric jitter), for teacher-based MIM; without ``augment`` both
            views are the plain image, so evaluation sees clean inputs.

    Attributes:
        classes, num_classes, samples (``[(path, label)]``), folder (the folder that was scanned).

    Items are ``{"image": (in_chans, H, W) float32, "label": int}``.
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_image.datasets.examples import image_folder_example

        return image_folder_example(root)

    def __init__(
        self,
        split: str,
        augment: bool,
        root: str,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        mean: float | Sequence[float] = (0.485, 0.456, 0.406),
        std: float | Sequence[float] = (0.229, 0.224, 0.225),
        extensions: Sequence[str] | None = None,
        max_samples: int | None = None,
        teacher_view: bool = False,
        scaling: str = "dtype",
        background: Sequence[int] = (255, 255, 255),
        normalize: str = "host",
        jpeg_decoder: str = "simplejpeg",
        dct_scaling: bool = True,
    ) -> None:
        if jpeg_decoder not in fastjpeg.DECODERS:
            raise ValueError(f"jpeg_decoder must be one of {fastjpeg.DECODERS}, got {jpeg_decoder!r}")
        if jpeg_decoder == "simplejpeg" and not fastjpeg.available():
            raise ImportError("jpeg_decoder: simplejpeg needs the simplejpeg package: pip install simplejpeg "
                              "(or set jpeg_decoder: pil)")
        self.jpeg_decoder, self.dct_scaling = jpeg_decoder, bool(dct_scaling)
        if in_chans not in MODES:
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans!r}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        if len(background) != 3 or not all(0 <= int(c) <= 255 for c in background):
            raise ValueError(f"background must be an RGB triple of 0-255 values, got {background!r}")
        self.scaling, self.background = scaling, tuple(int(c) for c in background)
        extensions = still_extensions() if extensions is None else extensions
        mean, std = channel_values(mean, in_chans, "mean"), channel_values(std, in_chans, "std")
        self.split, self.augment, self.in_chans, self.mode = check_split(split), augment, in_chans, MODES[in_chans]
        self.root = Path(root).expanduser()
        self.folder = split_folder(self.root, split)
        self.classes, samples = scan(self.folder, extensions)
        self.num_classes = len(self.classes)
        self.samples = [samples[i] for i in subset_indices(len(samples), max_samples).tolist()]
        self.transform = build_transform(img_size, augment, crop_scale, hflip, mean, std, on_device=on_device(normalize))
        self.teacher_view = teacher_view

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def device_transforms(self) -> dict[str, Any]:
        """With ``normalize="device"``: the scaling and normalisation of ``image`` (and ``image_teacher``)."""
        return image_device_transforms(self.transform, self.teacher_view)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index``: ``{"image": (in_chans, H, W) float32, "label": int}``.

        Raises:
            CorruptSampleError: the image file cannot be decoded.
        """
        path, label = self.samples[index]
        if self._fast:
            try:
                data = Path(path).read_bytes()
            except OSError as err:
                raise CorruptSampleError(path, f"cannot read ({type(err).__name__}: {err})") from None
            item = self._fast_item(data, path, label)
            if item is not None:
                return item
        return self._item(decode(path, self.mode, self.scaling, self.background), label)

    @property
    def _fast(self) -> bool:
        """Training crops of JPEGs go through :func:`mmim_image.fastjpeg.jpeg_crop` (one plain RGB view)."""
        return self.jpeg_decoder == "simplejpeg" and self.augment and not self.teacher_view and self.in_chans == 3

    def _fast_item(self, data: bytes, where: str, label: int) -> dict[str, Any] | None:
        t = self.transform
        crop = fastjpeg.jpeg_crop(data, where, t.size, t.scale, t.hflip, self.dct_scaling)
        return None if crop is None else {"image": t._finish(crop).as_subclass(Tensor).contiguous(), "label": label}

    def _item(self, image: Tensor, label: int) -> dict[str, Any]:
        """The item of a decoded image ``(C, H, W)`` (uint8, or float in [0, 1] for high bit depths):
        augmented / resized views and the label."""
        if self.teacher_view and self.augment:
            student, teacher = self.transform.two_views(image)
            return {"image": student, "image_teacher": teacher, "label": label}
        plain = self.transform(image)
        extra = {"image_teacher": plain} if self.teacher_view else {}
        return {"image": plain, **extra, "label": label}

    # the shard protocol (mmim.data.records): the original file bytes, decoded by the same reader
    def shard_record(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        return file_record(path, {"label": label, "class": self.classes[label]})

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        ext, data = main_member(record, where)
        if self._fast:
            item = self._fast_item(data, where, int(meta_of(record, where)["label"]))
            if item is not None:
                return item
        with spilled(ext, data) as path:
            image = decode(path, self.mode, self.scaling, self.background)
        return self._item(image, int(meta_of(record, where)["label"]))

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, **options: Any) -> ImageFolder:
        """An ImageFolder that only decodes shard records (``root`` is not read, not even needed)."""
        o = {**registry.constructor_defaults(cls), **options}
        if o["in_chans"] not in MODES:
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {o['in_chans']!r}")
        self = cls.__new__(cls)
        mean, std = channel_values(o["mean"], o["in_chans"], "mean"), channel_values(o["std"], o["in_chans"], "std")
        self.split, self.augment, self.in_chans, self.mode = check_split(split), augment, o["in_chans"], MODES[o["in_chans"]]
        self.root = self.folder = Path(str(o.get("root") or "shards"))
        self.classes, self.num_classes, self.samples = [], 0, []
        self.transform = build_transform(o["img_size"], augment, o["crop_scale"], o["hflip"], mean, std,
                                         on_device=on_device(o["normalize"]))
        self.teacher_view = o["teacher_view"]
        self.scaling, self.background = o["scaling"], tuple(int(c) for c in o["background"])
        if o["jpeg_decoder"] not in fastjpeg.DECODERS:
            raise ValueError(f"jpeg_decoder must be one of {fastjpeg.DECODERS}, got {o['jpeg_decoder']!r}")
        self.jpeg_decoder, self.dct_scaling = o["jpeg_decoder"], bool(o["dct_scaling"])
        return self

    def __repr__(self) -> str:
        return (f"ImageFolder(split={self.split!r}, folder={str(self.folder)!r}, n={len(self)}, "
                f"classes={self.num_classes}, transform={self.transform!r})")
