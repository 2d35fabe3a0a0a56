"""Labelled video clips: VideoMAE-style list files (``path label`` per line, paths relative to a root) and
class folders.

An item is ``{"video": (3, T, S, S) float32 ImageNet-normalised, "label": int}`` (``uint8`` training items
with ``normalize="device"``). Frames are sampled as VideoMAE samples them for pre-training: ``num_frames``
frames ``sampling_rate`` apart from a random start (a new clip each epoch; the first one for evaluation),
indices clamped to the last frame when the video is shorter; or, with ``sampling="segments"``, one frame
from each of ``num_frames`` equal segments (VideoMAE's Something-Something V2 fine-tuning). Only those frames
are decoded (:mod:`mmim_video.reader`). Training takes VideoMAE's multi-scale crop
(:func:`~mmim_video.sampling.multiscale_crop`: width and height from ``crop_scales`` of the short side, at most ``max_distort``
scales apart, at one of 13 fixed places), resizes it to ``img_size`` and flips it with probability 1/2
(``hflip``), all in ``uint8`` on the cropped region (:func:`~mmim_video.sampling.crop_resize_uint8`); evaluation resizes the
centred short-side square in float32. Randomness uses torch's global RNG (seeded per sample by the engine).

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
from torch import Tensor
from torch.utils.data import Dataset

from mmim.data import CorruptSampleError, DataError
from mmim.data.device import DeviceNormalize
from mmim.data.records import file_record, main_member, meta_of, spilled
from mmim_video.reader import read_clip
from mmim_video.sampling import (
    ClipPlan,
    Crop,
    centre_float,
    crop_resize_uint8,
    multiscale_crop,
    sample_indices,
    segment_indices,
)
from mmim_video.target import IMAGENET_MEAN, IMAGENET_STD

SAMPLINGS = ("stride", "segments")
NORMALIZE = ("host", "device")
DECODE = ("host", "device")


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
        sampling: ``"stride"`` (``num_frames`` frames ``sampling_rate`` apart, :func:`~mmim_video.sampling.sample_indices`) or
            ``"segments"`` (one frame from each of ``num_frames`` equal segments, :func:`~mmim_video.sampling.segment_indices`;
            ``sampling_rate`` is unused).
        max_distort: how many steps apart in ``crop_scales`` the crop's width and height scales may be
            (VideoMAE's ``GroupMultiScaleCrop`` default 1; 0 gives squares only).
        fixed_offsets: place the crop at one of VideoMAE's 13 fixed places (its ``fix_crop``), or uniformly.
        normalize: ``"host"`` (float32 items normalised in the loader) or ``"device"``: training items stay
            ``uint8`` (a quarter of the bytes through workers, pinned memory and PCIe) and are scaled and
            normalised on the device (``device_transforms``) with the same float32 operations. Evaluation
            items are normalised on the host either way (their float resize is kept pixel-exact).
        decode: ``"host"`` (the loader decodes and crops) or ``"device"``: training items carry only their
            :class:`~mmim_video.sampling.ClipPlan` and source; the training process decodes them on its device (torchcodec / NVDEC
            on CUDA) and crops, flips and normalises there (:mod:`mmim_video.gpu`). Evaluation decodes on the host.
    """

    # frames stored as images are read a clip's frames at a time: the shard stream leaves them in the file (iter_samples)
    lazy_members = frozenset({"mjpeg", "webpseq"})

    def __init__(self, samples: Sequence[tuple[str, int, int]], source: str, augment: bool, num_frames: int = 16,
                 sampling_rate: int = 4, img_size: int = 224, crop_scales: Sequence[float] = (1.0, 0.875, 0.75, 0.66),
                 hflip: bool = True, backend: str = "auto", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, max_samples: int | None = None,
                 num_classes: int | None = None, num_sample: int = 1, sampling: str = "stride",
                 max_distort: int = 1, fixed_offsets: bool = True, normalize: str = "host",
                 decode: str = "host") -> None:
        if normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
        if decode not in DECODE:
            raise ValueError(f"decode must be one of {DECODE}, got {decode!r}")
        self.decode = decode
        if max_distort < 0:
            raise ValueError(f"max_distort must be >= 0, got {max_distort}")
        self.max_distort, self.fixed_offsets, self.normalize = int(max_distort), bool(fixed_offsets), normalize
        self.channels = len(mean)
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

    def crops(self, height: int, width: int) -> tuple[Crop, ...]:
        """One :class:`Crop` per augmented copy of frames ``height x width`` (random; drawn after the indices)."""
        out = []
        for _ in range(self.num_sample):
            top, left, h, w = multiscale_crop(height, width, self.img_size, self.crop_scales, self.max_distort,
                                              self.fixed_offsets)
            flip = self.hflip and bool(torch.rand(()) < 0.5)
            out.append(Crop(top, left, h, w, flip))
        return tuple(out)

    def plan(self, total: int, height: int, width: int) -> ClipPlan:
        """The training plan of a video of ``total`` frames of ``height x width``: indices, then crops (the
        same draws, in the same order, as :meth:`clip` makes)."""
        return ClipPlan(tuple(self.choose_frames(total)), self.crops(height, width))

    def decoded(self, index: int) -> Tensor:
        """The sampled frames of sample ``index`` as decoded: ``(T, H, W, C)`` uint8 (one decode)."""
        path, _, line = self.samples[index]
        try:
            return read_clip(path, self.choose_frames, self.backend)
        except CorruptSampleError as err:
            raise CorruptSampleError(err.path, f"{err.reason} (listed in {self.source})", line or None) from None

    def _stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the items' channels."""
        mean, std = [float(m) for m in self.mean.flatten()], [float(v) for v in self.std.flatten()]
        return mean[:self.channels], std[:self.channels]

    def _normalizer(self, copies: bool) -> DeviceNormalize:
        return DeviceNormalize(*self._stats(), channel_dim=1 if copies else 0)

    @property
    def device_transforms(self) -> dict[str, Any]:
        """For training items: with ``decode="device"`` decoding, cropping and normalisation on the device; with
        ``normalize="device"`` scaling and normalisation of ``video`` on the device."""
        if not self.augment:
            return {}
        if self.decode == "device":
            from mmim_video.gpu import DeviceClips

            return {"video": DeviceClips(self.img_size, *self._stats(), self.channels)}
        if self.normalize != "device":
            return {}
        return {"video": self._normalizer(self.num_sample > 1)}

    def planned(self, source: str | bytes, path: str) -> dict[str, Any]:
        """``decode="device"``: the item's plan (drawn from the file's header) and source, no pixels."""
        from mmim_video.gpu import SOURCE_KEY, encode_plan
        from mmim_video.reader import video_info

        count, height, width = video_info(path)
        return {"video": encode_plan(self.plan(count, height, width)), SOURCE_KEY: source}

    def augmented(self, decoded: Tensor) -> Tensor:
        """Training view(s) of ``(T, H, W, C)`` uint8 frames: ``(C, T, S, S)`` (or ``(num_sample, C, T, S, S)``),
        cropped, resized and flipped in ``uint8``; normalised here unless ``normalize="device"``."""
        crops = self.crops(decoded.shape[1], decoded.shape[2])
        out = [crop_resize_uint8(decoded, crop, self.img_size) for crop in crops]
        x = out[0] if self.num_sample == 1 else torch.stack(out)
        if self.normalize == "device":
            return x
        return self._normalizer(self.num_sample > 1)(x.unsqueeze(0))[0]

    def evaluation_view(self, decoded: Tensor) -> Tensor:
        """The evaluation view of ``(T, H, W, C)`` uint8 frames: the centred square, normalised ``(C, T, S, S)``."""
        x = centre_float(decoded, self.img_size)
        return (x.permute(1, 0, 2, 3).clamp(0, 1) - self.mean) / self.std

    def clip(self, index: int) -> Tensor:
        """The model input of sample ``index``: ``(3, T, S, S)``, or ``(num_sample, 3, T, S, S)`` when
        augmenting with ``num_sample > 1`` (every copy from the same decoded frames)."""
        decoded = self.decoded(index)
        return self.augmented(decoded) if self.augment else self.evaluation_view(decoded)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.decode == "device" and self.augment:
            path, label, line = self.samples[index]
            try:
                return {**self.planned(path, path), "label": label}
            except CorruptSampleError as err:
                raise CorruptSampleError(err.path, f"{err.reason} (listed in {self.source})", line or None) from None
        return {"video": self.clip(index), "label": self.samples[index][1]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.source}, n={len(self)}, classes={self.num_classes}, augment={self.augment})"

    # the shard protocol (mmim.data.records): the original video file, decoded by the same reader, or the
    # video re-encoded at pack time (mmim_video.transcode)
    def shard_record(self, index: int, short_side: int | None = None, keyint: int | None = None, crf: int = 23,
                     frames: str | None = None, quality: int = 90, subsampling: str = "420") -> dict[str, Any]:
        """Sample ``index`` as a shard record: the original file, or (``mmim pack --encode``) re-encoded as H.264
        with ``short_side``/``keyint``/``crf``, or as one image per frame (``frames: jpeg|webp``, ``quality``, JPEG chroma ``subsampling``: 420, 422 or 444)."""
        from mmim_video import transcode

        path, label, _ = self.samples[index]
        if frames is None and short_side is None and keyint is None:
            return file_record(path, {"label": label})
        meta = {"label": label, "source": str(path),
                "encode": {"short_side": short_side, "keyint": keyint, "crf": crf, "frames": frames, "quality": quality,
                           **({"subsampling": str(subsampling)} if frames else {})}}
        if frames is not None:
            data, info = transcode.frame_images(path, frames, quality, short_side, subsampling)
            return {transcode.FRAME_FORMATS[frames]: data, "json": {**meta, "frames": info}}
        return {"mp4": transcode.h264(path, short_side, keyint, crf), "json": meta}

    def decode_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        from mmim_video import transcode

        ext, data = main_member(record, where)
        meta = meta_of(record, where)
        label = int(meta["label"])
        view = copy.copy(self)
        view.samples, view.source = [("", label, 0)], where
        if ext in transcode.FRAME_FORMATS.values():
            if self.decode == "device" and self.augment:
                raise DataError(f"{where}: decode: device decodes video streams on the GPU, but these shards hold "
                                f"frames as images (.{ext}, mmim pack --encode frames=...): use decode: host")
            info = meta.get("frames") or {}
            count = len(info.get("offsets", [])) - 1

            def decoded(_index: int) -> Tensor:
                idx = self.choose_frames(count)
                return transcode.decode_frame_images(data, info, idx, f"{where} (.{ext})")

            view.decoded = decoded  # type: ignore[method-assign]
            return view[0]
        with spilled(ext, data) as path:
            if self.decode == "device" and self.augment:  # the member's bytes travel to the device decoder
                return {**self.planned(bytes(data), path), "label": label}
            view.samples = [(path, label, 0)]
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
