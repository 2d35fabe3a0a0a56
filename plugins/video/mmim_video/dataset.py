"""Labelled video clips: VideoMAE-style list files (``path label`` per line, paths relative to a root) and
class folders.

An item is ``{"video": (3, T, S, S) float32 ImageNet-normalised, "label": int}``. Frames are sampled
as VideoMAE samples them for pre-training: ``num_frames`` frames ``sampling_rate`` apart from a
random start (a new clip each epoch; the first one for evaluation), indices clamped to the last
frame when the video is shorter; or, with ``sampling="segments"``, one frame from each of ``num_frames``
equal segments (VideoMAE's Something-Something V2 fine-tuning). Training crops a random square of side ``scale * short side``
(``scale`` from ``crop_scales``: the multi-scale crop) at a random place, resizes it to ``img_size``
and flips it with probability 1/2 (``hflip``); evaluation resizes the short side and takes the
centre. Randomness uses torch's global RNG (seeded per sample by the engine).

Repeated augmentation (VideoMAE's ``num_sample``): with ``num_sample = n > 1`` a training item decodes its
frames once and returns ``n`` independently cropped and flipped copies, ``(n, 3, T, S, S)``; the
``tubelet`` tokenizer reads a batch ``(B, n, 3, T, S, S)`` as ``B n`` clips. Evaluation items are one clip.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mmim.data import CorruptSampleError, DataError
from mmim.data.records import file_record, main_member, meta_of, spilled
from mmim_video.reader import read_clip
from mmim_video.target import IMAGENET_MEAN, IMAGENET_STD

SAMPLINGS = ("stride", "segments")


def read_list_file(path: Path, root: Path) -> list[tuple[str, int, int]]:
    """``[(video path, label, line)]`` of a ``path label`` list (space or comma separated; ``#`` comments)."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    try:
        text_lines = path.read_text().splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a text list file ({err.reason} at byte {err.start})") from None
    out = []
    for line_no, line in enumerate(text_lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.replace(",", " ").split()
        if len(parts) < 2:
            raise DataError(f"{path}:{line_no}: expected 'path label', got {text!r}")
        try:
            label = int(parts[-1])
        except ValueError:
            raise DataError(f"{path}:{line_no}: label {parts[-1]!r} is not an integer") from None
        name = " ".join(parts[:-1])
        out.append((str(root / name) if not Path(name).is_absolute() else name, label, line_no))
    if not out:
        raise DataError(f"{path}: no entries")
    return out


def sample_indices(total: int, num_frames: int, rate: int, random_start: bool) -> list[int]:
    """``num_frames`` indices ``rate`` apart inside ``[0, total)``, clamped to the last frame."""
    span = (num_frames - 1) * rate + 1
    start = int(torch.randint(total - span + 1, ())) if random_start and total > span else 0
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
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class VideoClips(Dataset):
    """Labelled video files read as VideoMAE reads them (the shared core of the video datasets).

    Args:
        samples: ``[(path, label, line)]``; ``line`` is the list-file line for error messages (or 0).
        source: what the samples came from (list file or folder), named in errors.
        augment: random clip, multi-scale crop and flip (off for evaluation).
        num_frames: ``T``.
        sampling_rate: frame stride.
        img_size: output side ``S``.
        crop_scales: multi-scale crop scales of the short side.
        hflip: random horizontal flips when augmenting.
        backend: ``"auto"``, ``"decord"`` or ``"pyav"``.
        mean, std: per-channel normalisation of ``[0, 1]`` frames.
        max_samples: keep the first this many samples.
        num_classes: number of classes (default: largest label + 1).
        num_sample: training items hold this many augmented copies of one decoded clip (VideoMAE's
            repeated augmentation; ``1``: a single clip ``(3, T, S, S)``).
        sampling: ``"stride"`` (``num_frames`` frames ``sampling_rate`` apart, :func:`sample_indices`) or
            ``"segments"`` (one frame from each of ``num_frames`` equal segments, :func:`segment_indices`;
            ``sampling_rate`` is unused).
    """

    def __init__(self, samples: Sequence[tuple[str, int, int]], source: str, augment: bool, num_frames: int = 16,
                 sampling_rate: int = 4, img_size: int = 224, crop_scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
                 hflip: bool = True, backend: str = "auto", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, max_samples: int | None = None,
                 num_classes: int | None = None, num_sample: int = 1, sampling: str = "stride") -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.sampling = sampling
        if not samples:
            raise DataError(f"{source}: no videos")
        if num_sample < 1:
            raise ValueError(f"num_sample must be >= 1, got {num_sample}")
        self.num_sample = num_sample
        self.samples, self.source, self.augment = list(samples)[:max_samples], source, augment
        self.num_classes = num_classes or max(label for _, label, _ in self.samples) + 1
        self.num_frames, self.sampling_rate, self.img_size = num_frames, sampling_rate, img_size
        self.crop_scales, self.hflip, self.backend = tuple(crop_scales), hflip, backend
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def choose_frames(self, total: int) -> list[int]:
        """The ``num_frames`` frame indices to read from a video of ``total`` frames (random when augmenting)."""
        if self.sampling == "segments":
            return segment_indices(total, self.num_frames, self.augment)
        return sample_indices(total, self.num_frames, self.sampling_rate, self.augment)

    def frames(self, index: int) -> Tensor:
        """The sampled frames of sample ``index`` as ``(T, 3, H, W)`` floats in ``[0, 1]`` (one decode)."""
        path, _, line = self.samples[index]
        try:
            frames = read_clip(path, self.choose_frames, self.backend)
        except CorruptSampleError as err:
            raise CorruptSampleError(err.path, f"{err.reason} (listed in {self.source})", line or None) from None
        return frames.permute(0, 3, 1, 2).float() / 255.0

    def transform(self, x: Tensor) -> Tensor:
        """``(T, 3, H, W)`` frames -> normalised ``(3, T, S, S)``: multi-scale crop and flip when
        augmenting, a centre crop otherwise."""
        if self.augment:
            scale = self.crop_scales[int(torch.randint(len(self.crop_scales), ()))]
            x = crop_resize(x, self.img_size, scale, random_place=True)
            if self.hflip and bool(torch.rand(()) < 0.5):
                x = x.flip(-1)
        else:
            x = crop_resize(x, self.img_size, 1.0, random_place=False)
        return (x.permute(1, 0, 2, 3).clamp(0, 1) - self.mean) / self.std

    def clip(self, index: int) -> Tensor:
        """The model input of sample ``index``: ``(3, T, S, S)``, or ``(num_sample, 3, T, S, S)`` when
        augmenting with ``num_sample > 1`` (every copy from the same decoded frames)."""
        x = self.frames(index)
        if not self.augment or self.num_sample == 1:
            return self.transform(x)
        return torch.stack([self.transform(x) for _ in range(self.num_sample)])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"video": self.clip(index), "label": self.samples[index][1]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source}, n={len(self)}, classes={self.num_classes}, augment={self.augment})"

    # the shard protocol (mmim.data.records): the original video file, decoded by the same reader
    def shard_record(self, index: int) -> dict[str, Any]:
        path, label, _ = self.samples[index]
        return file_record(path, {"label": label})

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        ext, data = main_member(record, where)
        label = int(meta_of(record, where)["label"])
        with spilled(ext, data) as path:
            view = copy.copy(self)
            view.samples, view.source = [(path, label, 0)], where
            return view[0]

    @classmethod
    def _shard_decoder(cls, augment: bool, options: dict[str, Any], file_options: Sequence[str]) -> VideoClips:
        """An instance of ``cls`` that only decodes shard records: the :class:`VideoClips` options
        without ``file_options`` (where the files are), no samples."""
        self = cls.__new__(cls)
        VideoClips.__init__(self, [("", 0, 0)], "shards", augment,
                            **{k: v for k, v in options.items() if k not in file_options})
        self.samples = []
        return self


class VideoList(VideoClips):
    """Labelled video files named in a VideoMAE-style list file (``path label`` per line).

    Args:
        split: fills ``{split}`` in ``list_file`` (injected).
        augment: training augmentation (injected).
        root: directory the list's relative paths start from.
        list_file: the list, e.g. ``/data/k400/{split}.csv``.
        **options: :class:`VideoClips` options.
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_video.examples import video_list_example

        return video_list_example(root)

    def __init__(self, split: str, augment: bool, root: str, list_file: str, **options: Any) -> None:
        path = Path(list_file.format(split=split))
        super().__init__(read_list_file(path, Path(root)), str(path), augment, **options)

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, **options: Any) -> VideoList:
        """Decodes shard records without the list file or the videos."""
        return cls._shard_decoder(augment, options, ("root", "list_file"))


class VideoFolder(VideoClips):
    """Videos in one sub-folder per class (``root/<split>/<class>/*.mp4``, or ``root/<class>/*.mp4``
    when ``root/<split>`` does not exist); classes are the sorted folder names.

    Args:
        split: sub-folder to read when it exists (injected).
        augment: training augmentation (injected).
        root: dataset folder.
        extensions: video file suffixes.
        **options: :class:`VideoClips` options.
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_video.examples import video_folder_example

        return video_folder_example(root)

    def __init__(self, split: str, augment: bool, root: str,
                 extensions: Sequence[str] = (".mp4", ".avi", ".mkv", ".webm", ".mov"), **options: Any) -> None:
        base = Path(root)
        if not base.is_dir():
            raise DataError(f"{base}: video folder not found")
        if (base / split).is_dir():
            base = base / split
        self.classes = sorted(d.name for d in base.iterdir() if d.is_dir())
        suffixes = {e.lower() for e in extensions}
        samples = [(str(f), label, 0) for label, name in enumerate(self.classes)
                   for f in sorted((base / name).rglob("*")) if f.suffix.lower() in suffixes]
        super().__init__(samples, str(base), augment, num_classes=len(self.classes) or None, **options)

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, **options: Any) -> VideoFolder:
        """Decodes shard records without the video folder."""
        return cls._shard_decoder(augment, options, ("root", "extensions"))
