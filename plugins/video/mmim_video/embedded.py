"""Moving Fashion-MNIST: the video plugin's embedded default data set.

800 real H.264 clips (``mmim_video/data/moving_fashion``, built by
``plugins/video/scripts/build_embedded_moving_mnist.py``): one Fashion-MNIST garment (resized to 22 x 22)
moving in a straight line over a black ``32 x 32`` frame for 16 frames (0.4-0.6 px per frame, 6-9 px in all,
sub-pixel), right, left, down or up; the garment covers about half of the frame. Every clip has two labels,
the garment class (10) and the motion (4); ``label`` picks the one items carry. Train clips are made from
train-split images and test clips from test-split images of the image plugin's embedded subset.

Clips are read and augmented by :class:`~mmim_video.dataset.VideoClips` (VideoMAE sampling, multi-scale
crop); the frames are grey, so items keep one channel unless ``in_chans=3``.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from torch import Tensor

from mmim.data import DataError
from mmim_video.dataset import VideoClips

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MOTIONS = ["right", "left", "down", "up"]
LABELS = {"class": CLASSES, "motion": MOTIONS}
SPLITS = ("train", "test")
SPLIT_ALIASES = {"val": "test"}
MEAN, STD = 0.1369, 0.2679  # of the train clips' [0, 1] pixels (printed by the build script)


def embedded_root() -> Path:
    """The folder of the embedded clips and their ``index.csv``."""
    return Path(str(resources.files("mmim_video") / "data" / "moving_fashion"))


def read_index(root: Path) -> list[dict[str, str]]:
    """Rows of ``root/index.csv`` (``file,class,motion,split,...``)."""
    path = root / "index.csv"
    if not path.is_file():
        raise DataError(f"{path}: Moving Fashion-MNIST index not found")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = {"file", "class", "motion", "split"} - set(rows[0] if rows else {})
    if missing:
        raise DataError(f"{path}: missing columns {sorted(missing)}")
    return rows


class MovingFashion(VideoClips):
    """Moving Fashion-MNIST clips (embedded; 600 train / 200 test, 16 frames of 32 x 32 grey).

    Args:
        split: ``"train"`` or ``"test"`` (``"val"`` reads ``"test"``) (injected).
        augment: multi-scale crop (and flips when ``hflip``) for pre-training (injected).
        label: ``"class"`` (garment, 10 classes) or ``"motion"`` (direction, 4 classes).
        num_frames: ``T`` (the clips have 16 frames; more repeat the last one).
        sampling_rate: frame stride.
        img_size: output side ``S`` (frames are resized from 32).
        crop_scales: multi-scale crop scales when augmenting.
        hflip: random horizontal flips when augmenting; off by default because a flip turns
            "right" into "left" (not allowed with ``label="motion"``).
        in_chans: 1 (the grey frame) or 3 (the decoded RGB, all three equal).
        mean, std: normalisation of the ``[0, 1]`` pixels (one value, used for every channel).
        root: folder with ``index.csv`` and the clips; ``None`` for the embedded ones.
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
        max_samples: keep the first this many clips.
        num_sample: repeated augmentation (see :class:`~mmim_video.dataset.VideoClips`).
        normalize: ``"host"`` or ``"device"`` (``uint8`` training items, see :class:`~mmim_video.dataset.VideoClips`).
        decode: ``"host"`` or ``"device"`` (training clips decoded and cropped on the device, :mod:`mmim_video.gpu`).

    Attributes:
        classes: names of the ``label`` classes; ``num_classes``: their number.
        labels: ``{"class": [...], "motion": [...]}`` both labels of every clip.

    Items are ``{"video": (in_chans, T, S, S) float32, "label": int}``.
    """

    def __init__(self, split: str, augment: bool, label: str = "class", num_frames: int = 16,
                 sampling_rate: int = 1, img_size: int = 32, crop_scales: Sequence[float] = (1.0, 0.875, 0.75),
                 hflip: bool = False, in_chans: int = 1, mean: float = MEAN, std: float = STD,
                 root: str | None = None, backend: str = "auto", max_samples: int | None = None,
                 num_sample: int = 1, normalize: str = "host", decode: str = "host") -> None:
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise ValueError(f"Moving Fashion-MNIST has splits 'train' and 'test' (or 'val'), got {split!r}")
        if label not in LABELS:
            raise ValueError(f"label must be one of {sorted(LABELS)}, got {label!r}")
        if hflip and label == "motion":
            raise ValueError("hflip swaps the 'right' and 'left' motions; turn it off with label='motion'")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        folder = embedded_root() if root is None else Path(root).expanduser()
        rows = [r for r in read_index(folder) if r["split"] == split]
        self.labels = {"class": [int(r["class"]) for r in rows], "motion": [int(r["motion"]) for r in rows]}
        samples = [(str(folder / r["file"]), self.labels[label][i], i + 2) for i, r in enumerate(rows)]
        self.classes, self.label_kind, self.split, self.in_chans = list(LABELS[label]), label, split, in_chans
        super().__init__(samples, str(folder / "index.csv"), augment, num_frames=num_frames,
                         sampling_rate=sampling_rate, img_size=img_size, crop_scales=crop_scales, hflip=hflip,
                         backend=backend, mean=(mean,) * 3, std=(std,) * 3, max_samples=max_samples,
                         num_classes=len(self.classes), num_sample=num_sample, normalize=normalize,
                         decode=decode)
        self.channels = in_chans  # items keep in_chans channels (device normalisation too)
        if max_samples is not None:
            self.labels = {k: v[:max_samples] for k, v in self.labels.items()}

    def clip(self, index: int) -> Tensor:
        """The model input ``(in_chans, T, S, S)`` of clip ``index`` (``(num_sample, in_chans, T, S, S)``
        when augmenting with ``num_sample > 1``)."""
        x = super().clip(index)
        return x.narrow(-4, 0, 1) if self.in_chans == 1 else x  # the channel axis, also with num_sample > 1
