"""Fashion-MNIST from its original IDX files, with an embedded class-balanced subset as the default."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from mmim.data import DataError
from mmim.data.records import main_member, meta_of, spilled
from mmim_image.datasets.common import check_split, image_device_transforms, on_device, subset_indices
from mmim_image.datasets.idx import read_idx
from mmim_image.datasets.image_folder import decode
from mmim_image.transforms import build_transform, channel_values

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
SPLIT_ALIASES = {"val": "test"}  # Fashion-MNIST has no validation split; evaluation uses the official test split
FULL_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs the full set


def embedded_root() -> Traversable:
    """The embedded subset shipped in ``mmim_image/data/fashion_mnist`` (6000 train / 1000 test images)."""
    return resources.files("mmim_image") / "data" / "fashion_mnist"


def _locate(root: Path | Traversable, stem: str) -> Path | Traversable:
    """The file ``stem.gz`` or ``stem`` in ``root`` (or in torchvision's ``root/FashionMNIST/raw``)."""
    folders = [root]
    if isinstance(root, Path):
        folders.append(root / "FashionMNIST" / "raw")
    for folder in folders:
        for name in (f"{stem}.gz", stem):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    raise DataError(f"{root}: no Fashion-MNIST file {stem}.gz (or {stem}) found")


def load_split(root: Path | Traversable, split: str) -> tuple[Tensor, Tensor]:
    """Read one split's images and labels from the IDX files in ``root``.

    Args:
        root: folder holding the (gzip'd) IDX files.
        split: ``"train"`` or ``"test"``.

    Returns:
        images ``(N, H, W)`` ``uint8`` and labels ``(N,)`` ``int64``.

    Raises:
        DataError: a file is missing or malformed, the counts differ or a label is not a class.
    """
    image_stem, label_stem = FILES[split]
    image_file, label_file = _locate(root, image_stem), _locate(root, label_stem)
    images = read_idx(image_file, ndim=3, dtype=torch.uint8)
    labels = read_idx(label_file, ndim=1, dtype=torch.uint8).long()
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{image_file} holds {images.shape[0]} images but {label_file} holds {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise DataError(f"{image_file}: no images")
    if labels.numel() and int(labels.max()) >= len(CLASSES):
        bad = int((labels >= len(CLASSES)).nonzero()[0, 0])
        raise DataError(f"{label_file}: label {int(labels[bad])} at index {bad} is not one of the {len(CLASSES)} classes")
    return images, labels


class FashionMNIST(Dataset):
    """Fashion-MNIST: 28x28 grey images of 10 clothing classes (Zalando, MIT license).

    Reads the original IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-...`` for the test split; uncompressed files and torchvision's
    ``root/FashionMNIST/raw`` folder also work). With ``root=None`` it reads the class-balanced
    subset embedded in the package (600 train / 100 test images per class); point ``root`` at
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``) for all 60k / 10k.

    Args:
        split: ``"train"`` or ``"test"`` (``"val"`` is read as ``"test"``).
        augment: MAE's pretraining augmentation (random resized crop, flip) or none.
        root: folder with the IDX files; ``None`` for the embedded subset.
        img_size: output side length (28 keeps the native resolution).
        crop_scale: area range of the random resized crop.
        hflip: random horizontal flips when augmenting.
        mean: mean of the ``[0, 1]`` pixels (Fashion-MNIST train set: 0.2860).
        std: standard deviation of the ``[0, 1]`` pixels (train set: 0.3530).
        max_samples: keep at most this many samples, evenly spread over the split.
        teacher_view: also return ``image_teacher``, a weak view of the same crop (the student's
            ``image`` gets photometric jitter), for teacher-based MIM; without ``augment`` both
            views are the plain image, so evaluation sees clean inputs.
        normalize: ``"host"`` (float32 items, normalised in the loader) or ``"device"``: ``uint8``
            items, a quarter of the bytes through the loader and the host-to-device copy, scaled
            and normalised on the device (``device_transforms``) to the same values.

    Attributes:
        classes: the 10 class names; ``num_classes``: 10.
        images: ``(N, H, W)`` ``uint8``; ``labels``: ``(N,)`` ``int64``.

    Items are ``{"image": (1, img_size, img_size) float32, "label": int}``.
    """

    classes: list[str] = CLASSES
    num_classes: int = len(CLASSES)

    def __init__(
        self,
        split: str,
        augment: bool,
        root: str | None = None,
        img_size: int = 28,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        hflip: bool = True,
        mean: float = 0.2860,
        std: float = 0.3530,
        max_samples: int | None = None,
        teacher_view: bool = False,
        normalize: str = "host",
    ) -> None:
        split = SPLIT_ALIASES.get(check_split(split), split)
        if split not in FILES:
            raise ValueError(f"Fashion-MNIST has splits 'train' and 'test' (or 'val' for test), got {split!r}")
        means, stds = channel_values(mean, 1, "mean"), channel_values(std, 1, "std")  # grey: one channel
        self.transform = build_transform(img_size, augment, crop_scale, hflip, means, stds,
                                         on_device=on_device(normalize))
        self.teacher_view = teacher_view
        if root is None:
            folder: Path | Traversable = embedded_root()
        else:
            folder = Path(root).expanduser()
            if not folder.is_dir():
                raise DataError(f"{folder}: Fashion-MNIST root folder does not exist")
        self.root, self.split, self.augment = str(folder), split, augment
        images, labels = load_split(folder, split)
        keep = subset_indices(images.shape[0], max_samples)
        self.images, self.labels = images[keep], labels[keep]
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device_transforms(self) -> dict[str, Any]:
        """With ``normalize="device"``: the scaling and normalisation of ``image`` (and ``image_teacher``)."""
        return image_device_transforms(self.transform, self.teacher_view)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample ``index``: ``{"image": (1, H, W) float32, "label": int}``."""
        return self._item(self.images[index].unsqueeze(0), int(self.labels[index]))

    def _item(self, image: Tensor, label: int) -> dict[str, Any]:
        if self.teacher_view and self.augment:
            student, teacher = self.transform.two_views(image)
            return {"image": student, "image_teacher": teacher, "label": label}
        plain = self.transform(image)
        extra = {"image_teacher": plain} if self.teacher_view else {}
        return {"image": plain, **extra, "label": label}

    # the shard protocol (mmim.data.records): each image as a lossless PNG, decoded by the image reader
    def shard_record(self, index: int) -> dict[str, Any]:
        buf = io.BytesIO()
        Image.fromarray(self.images[index].numpy(), mode="L").save(buf, format="PNG")
        return {"png": buf.getvalue(), "json": {"label": int(self.labels[index]), "class": CLASSES[int(self.labels[index])]}}

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        ext, data = main_member(record, where)
        with spilled(ext, data) as path:
            image = decode(path, "L")
        return self._item(image, int(meta_of(record, where)["label"]))

    def __repr__(self) -> str:
        return f"FashionMNIST(split={self.split!r}, root={self.root!r}, n={len(self)}, transform={self.transform!r})"
