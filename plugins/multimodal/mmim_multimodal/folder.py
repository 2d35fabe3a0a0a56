"""MultiMAE's pseudo-labelled image folders: ``root/<split>/<task>/<class>/<name>.<ext>``.

MultiMAE pre-trains on ImageNet with a depth map (DPT) and a COCO semantic map (Mask2Former)
per image, stored as parallel folders: ``rgb`` (JPEG/PNG), ``depth`` (16-bit PNG, metres / 2^16
scale as their script writes) and ``semseg`` (8-bit class-id PNG). Files of one sample share
``<class>/<name>`` across the task folders.

Augmentation as ``DataAugmentationForMultiMAE``: one random resized crop (scale 0.2-1, ratio
3/4-4/3) and one horizontal flip shared by all tasks; rgb normalised (ImageNet mean/std);
depth / 2^16, then (``standardize_depth``) the truncated per-image standardisation of the
pre-training loop; semseg resized to ``1/semseg_stride`` with nearest neighbours.
"""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mmim import registry
from mmim.data import CorruptSampleError, DataError
from mmim.data.records import meta_of, spilled
from mmim_multimodal.derived import truncated_standardize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def crop_params(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """A random resized crop's ``(top, left, h, w)`` drawn from torch's RNG (torchvision's rule)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(()).uniform_(scale[0], scale[1]))
        aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio)))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, ()))
            left = int(torch.randint(0, width - w + 1, ()))
            return top, left, h, w
    side = min(height, width)  # fall back to a central crop
    return (height - side) // 2, (width - side) // 2, side, side


class MultiTaskFolder(torch.utils.data.Dataset):
    """Aligned image / depth / semantic-map folders (MultiMAE's pre-training data).

    Args:
        split: sub-folder of ``root`` (``train``, ``val``).
        augment: shared random resized crop + flip; otherwise resize + center crop.
        root: the data root.
        tasks: task folders to read (``rgb``, ``depth``, ``semseg``).
        input_size: output side length (224).
        semseg_stride: semantic-map resolution divisor (4).
        crop_scale, crop_ratio, hflip: augmentation (MultiMAE: (0.2, 1), (3/4, 4/3), 0.5).
        standardize_depth: MultiMAE's per-image truncated standardisation of depth.
        mean, std: rgb normalisation.
        rgb_key: the item key of the rgb image (``"image"`` lets the same model fine-tune on
            ``image_folder`` data, whose items say ``image``).

    Items: ``{"rgb": (3, S, S), "depth": (1, S, S), "semseg": (S/4, S/4) int64, "label": int}``.
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_multimodal.examples import multitask_folder_example

        return multitask_folder_example(root)

    def __init__(self, split: str, augment: bool, root: str, tasks: tuple[str, ...] = ("rgb", "depth", "semseg"),
                 input_size: int = 224, semseg_stride: int = 4, crop_scale: tuple[float, float] = (0.2, 1.0),
                 crop_ratio: tuple[float, float] = (0.75, 1.3333), hflip: float = 0.5, standardize_depth: bool = True,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 rgb_key: str = "rgb") -> None:
        unknown = set(tasks) - {"rgb", "depth", "semseg"}
        if unknown:
            raise ValueError(f"multitask_folder: unknown tasks {sorted(unknown)}; known: rgb, depth, semseg")
        if input_size % semseg_stride:
            raise ValueError(f"input_size {input_size} is not divisible by semseg_stride {semseg_stride}")
        self.root = Path(root).expanduser() / split
        self.tasks, self.augment, self.input_size, self.semseg_stride = tuple(tasks), augment, input_size, semseg_stride
        self.crop_scale, self.crop_ratio, self.hflip, self.standardize_depth = crop_scale, crop_ratio, hflip, standardize_depth
        self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
        self.rgb_key = rgb_key
        anchor = self.root / self.tasks[0]
        if not anchor.is_dir():
            raise DataError(f"{anchor}: no such folder (expected {self.root}/<task>/<class>/<files> for tasks {list(tasks)})")
        self.classes = sorted(d.name for d in anchor.iterdir() if d.is_dir())
        if not self.classes:
            raise DataError(f"{anchor}: no class folders")
        self.num_classes = len(self.classes)
        index = {c: i for i, c in enumerate(self.classes)}
        found: dict[str, dict[str, Path]] = {}
        for task in self.tasks:
            folder = self.root / task
            if not folder.is_dir():
                raise DataError(f"{folder}: task folder missing")
            found[task] = {str(p.relative_to(folder).with_suffix("")): p for p in sorted(folder.glob("*/*"))
                           if p.suffix.lower() in IMAGE_EXTENSIONS}
        keys = sorted(found[self.tasks[0]])
        for task in self.tasks[1:]:
            missing = [k for k in keys if k not in found[task]]
            if missing:
                raise DataError(f"{self.root / task}: {len(missing)} samples of {self.tasks[0]!r} have no {task} file, "
                                f"e.g. {missing[0]} (looked for {self.root / task / missing[0]}.*)")
        if not keys:
            raise DataError(f"{anchor}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        self.samples = [({t: found[t][k] for t in self.tasks}, index[k.split("/")[0]]) for k in keys]
        self.labels = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def _open(self, path: Path, task: str) -> Image.Image:
        try:
            img = Image.open(path)
            img.load()
        except (OSError, UnidentifiedImageError) as err:
            raise CorruptSampleError(str(path), f"cannot read the {task} image: {err}") from err
        return img.convert("RGB") if task == "rgb" else img

    def __getitem__(self, index: int) -> dict[str, Any]:
        paths, label = self.samples[index]
        images = {t: self._open(p, t) for t, p in paths.items()}
        size = images[self.tasks[0]].size
        for t, img in images.items():
            if img.size != size:
                raise CorruptSampleError(str(paths[t]), f"size {img.size} differs from {paths[self.tasks[0]]}'s {size}")
        w, h = size
        if self.augment:
            top, left, ch, cw = crop_params(h, w, self.crop_scale, self.crop_ratio)
            flip = bool(torch.rand(()) < self.hflip)
        else:
            side = min(h, w)
            top, left, ch, cw, flip = (h - side) // 2, (w - side) // 2, side, side, False
        out: dict[str, Any] = {"label": label}
        s = self.input_size
        for task, img in images.items():
            img = img.crop((left, top, left + cw, top + ch))
            if task == "semseg":
                img = img.resize((s // self.semseg_stride,) * 2, Image.NEAREST)
                x = torch.from_numpy(np.array(img, dtype=np.int64))
                if x.dim() != 2:
                    raise CorruptSampleError(str(paths[task]), "a semantic map must have one channel of class ids")
                out[task] = x.flip(-1) if flip else x
                continue
            img = img.resize((s, s), Image.BICUBIC)
            if task == "rgb":
                x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
                x = (x - self.mean) / self.std
            else:
                x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 2**16)[None]
                if self.standardize_depth:
                    x = truncated_standardize(x)
            if not torch.isfinite(x).all():
                raise CorruptSampleError(str(paths[task]), "non-finite values")
            out[self.rgb_key if task == "rgb" else task] = x.flip(-1) if flip else x
        return out

    # the shard protocol (mmim.data.records): each task's original file as member <task>.<ext>
    def shard_record(self, index: int) -> dict[str, Any]:
        paths, label = self.samples[index]
        record: dict[str, Any] = {"json": {"label": label, "sources": {t: str(p) for t, p in paths.items()}}}
        for task, path in paths.items():
            try:
                record[f"{task}.{path.suffix.lower().lstrip('.')}"] = path.read_bytes()
            except OSError as err:
                raise CorruptSampleError(str(path), f"cannot read the {task} file ({err})") from None
        return record

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        label = int(meta_of(record, where)["label"])
        with contextlib.ExitStack() as stack:
            paths = {}
            for task in self.tasks:
                found = [k for k in record if k.split(".", 1)[0] == task and "." in k]
                if len(found) != 1:
                    raise CorruptSampleError(where, f"expected one {task}.<ext> member, found {found}")
                paths[task] = Path(stack.enter_context(spilled(found[0].split(".", 1)[1], record[found[0]])))
            view = copy.copy(self)
            view.samples = [(paths, label)]
            return view[0]

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, **options: Any) -> MultiTaskFolder:
        """Decodes shard records without the task folders."""
        o = {**registry.constructor_defaults(cls), **options}
        self = cls.__new__(cls)
        self.root = Path(str(o.get("root") or "shards"))
        self.tasks, self.augment, self.input_size, self.semseg_stride = tuple(o["tasks"]), augment, o["input_size"], \
            o["semseg_stride"]
        self.crop_scale, self.crop_ratio, self.hflip = o["crop_scale"], o["crop_ratio"], o["hflip"]
        self.standardize_depth, self.rgb_key = o["standardize_depth"], o["rgb_key"]
        self.mean, self.std = torch.tensor(o["mean"]).view(-1, 1, 1), torch.tensor(o["std"]).view(-1, 1, 1)
        self.classes, self.num_classes, self.samples, self.labels = [], 0, [], []
        return self

    def __repr__(self) -> str:
        return f"MultiTaskFolder({self.root}, tasks={list(self.tasks)}, n={len(self)}, augment={self.augment})"



