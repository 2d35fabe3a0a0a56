"""The video input pipeline that keeps a GPU fed: only the frames a clip uses are decoded, training crops are
cut, resized and flipped in uint8 on the cropped region, normalisation can move to the device, evaluation stays
pixel-exact, and VideoMAE's multi-scale crop is drawn as the official ``GroupMultiScaleCrop`` draws it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmim.data.device import to_device
from mmim_video import reader
from mmim_video.dataset import VideoList
from mmim_video.sampling import (
    Crop,
    centre_float,
    crop_resize,
    crop_resize_uint8,
    fixed_offsets,
    multiscale_crop,
    sample_indices,
)

av = pytest.importorskip("av")

SCALES = (1.0, 0.875, 0.75, 0.66)


def write_video(path, frames: int, width: int, height: int, gop: int, bframes: int = 3) -> None:
    """A moving texture, H.264 with B-frames and a keyframe every ``gop`` frames (no scene-cut keyframes)."""
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (height + 40, width + 40, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "g": str(gop), "bf": str(bframes), "sc_threshold": "0"}
        for t in range(frames):
            img = np.ascontiguousarray(texture[t % 40:t % 40 + height, (2 * t) % 40:(2 * t) % 40 + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory):
    path = tmp_path_factory.mktemp("gop") / "long_gop.mp4"
    write_video(path, 120, 64, 48, gop=100)
    return path


def full_decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_pyav_decodes_fewer_frames_than_the_keyframe_span_and_the_same_pixels(long_gop):
    everything = full_decode(long_gop)
    total = len(everything)
    for start in (5, 37, total - 16):
        idx = [min(start + 4 * i, total - 1) for i in range(4)]
        before = reader.DECODE_STATS["decoded"]
        got = reader.read_frames(long_gop, idx, "pyav").numpy()
        decoded = reader.DECODE_STATS["decoded"] - before
        assert np.array_equal(got, everything[idx])  # skipping non-reference frames changes no returned pixel
        span = reader.keyframe_span(long_gop, idx)
        assert len(idx) <= decoded < span <= total  # fewer than from the keyframe on, as decord decodes
        assert span >= max(idx) - min(idx) + 1


def test_sample_indices_start_as_videomae_draws_it():
    torch.manual_seed(0)
    total, n, rate = 40, 4, 3
    starts = {sample_indices(total, n, rate, True)[0] for _ in range(400)}
    assert starts == set(range(total - n * rate + 1))  # kinetics.py: randint(total - new_length * new_step + 1)
    assert sample_indices(total, n, rate, False) == [0, 3, 6, 9]
    assert sample_indices(n * rate - 1, n, rate, True)[0] == 0  # too short for a random start


@pytest.mark.parametrize("h,w,size", [(256, 340, 224), (480, 640, 224), (48, 64, 32), (222, 300, 224)])
def test_multiscale_crop_draws_official_pairs_and_places(h, w, size):
    torch.manual_seed(1)
    sides = [size if abs(int(min(h, w) * s) - size) < 3 else int(min(h, w) * s) for s in SCALES]
    allowed = {(min(cw, w), min(ch, h)) for i, ch in enumerate(sides) for j, cw in enumerate(sides) if abs(i - j) <= 1}
    seen = set()
    for _ in range(500):
        top, left, ch, cw = multiscale_crop(h, w, size, SCALES)
        assert (cw, ch) in allowed
        assert (left, top) in fixed_offsets(w, h, cw, ch)
        assert 0 <= top <= h - ch and 0 <= left <= w - cw
        seen.add((cw, ch))
    assert seen == allowed  # every pair is drawn
    assert any(cw != ch for cw, ch in seen)  # max_distort 1: not only squares


def test_max_distort_and_fixed_offsets_act():
    torch.manual_seed(2)
    squares = [multiscale_crop(256, 340, 224, SCALES, max_distort=0) for _ in range(200)]
    assert all(ch == cw for _, _, ch, cw in squares)
    free = [multiscale_crop(256, 340, 224, SCALES, fixed=False) for _ in range(200)]
    assert any((left, top) not in fixed_offsets(340, 256, cw, ch) for top, left, ch, cw in free)


def test_uint8_crop_is_within_one_level_of_the_float_resize():
    torch.manual_seed(3)
    frames = torch.randint(0, 256, (3, 60, 80, 3), dtype=torch.uint8)
    for crop in (Crop(5, 7, 40, 52), Crop(0, 0, 60, 60, flip=True), Crop(10, 3, 21, 30)):
        got = crop_resize_uint8(frames, crop, 32).float()
        region = frames[:, crop.top:crop.top + crop.height, crop.left:crop.left + crop.width].permute(0, 3, 1, 2)
        ref = torch.nn.functional.interpolate(region.float(), size=(32, 32), mode="bilinear", antialias=True)
        ref = ref.flip(-1) if crop.flip else ref
        assert (got - ref.permute(1, 0, 2, 3).clamp(0, 255)).abs().max() <= 1.0  # rounding to uint8 levels


def test_evaluation_view_is_pixel_exact_with_the_float_path():
    torch.manual_seed(4)
    for t, h, w, s in [(4, 48, 64, 32), (3, 50, 37, 16), (2, 256, 340, 224)]:
        frames = torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8)
        old = crop_resize(frames.permute(0, 3, 1, 2).float() / 255.0, s, 1.0, random_place=False)
        assert torch.equal(centre_float(frames, s), old)


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    root = tmp_path_factory.mktemp("listed")
    for i in range(2):
        write_video(root / f"{i}.mp4", 40, 80, 60, gop=12)
    (root / "train.txt").write_text("0.mp4 0\n1.mp4 1\n")
    return root


def dataset(root, augment=True, **options):
    spec = dict(num_frames=4, sampling_rate=2, img_size=32, **options)
    return VideoList("train", augment, root=str(root), list_file=str(root / "train.txt"), **spec)


@pytest.mark.parametrize("num_sample", [1, 3])
def test_normalize_device_gives_the_host_values(listed, num_sample):
    host, device = dataset(listed, num_sample=num_sample), dataset(listed, num_sample=num_sample, normalize="device")
    assert host.device_transforms == {} and set(device.device_transforms) == {"video"}
    for i in range(len(host)):
        torch.manual_seed(10 + i)
        a = host[i]["video"]
        torch.manual_seed(10 + i)
        b = device[i]["video"]
        assert a.dtype == torch.float32 and b.dtype == torch.uint8 and a.shape == b.shape
        moved = to_device({"video": b.unsqueeze(0)}, "cpu", device.device_transforms)["video"][0]
        assert torch.equal(moved, a)


def test_evaluation_items_are_host_normalised_either_way(listed):
    host = dataset(listed, augment=False)
    device = dataset(listed, augment=False, normalize="device")
    assert device.device_transforms == {}
    assert torch.equal(host[0]["video"], device[0]["video"]) and host[0]["video"].dtype == torch.float32


def test_clip_follows_its_plan(listed):
    ds = dataset(listed, num_sample=2, hflip=True, normalize="device")
    decoded = reader.read_frames(listed / "0.mp4", list(range(40)), "pyav")
    torch.manual_seed(5)
    plan = ds.plan(len(decoded), decoded.shape[1], decoded.shape[2])
    torch.manual_seed(5)
    item = ds[0]["video"]
    frames = decoded[list(plan.indices)]
    for copy, crop in enumerate(plan.crops):
        assert torch.equal(item[copy], crop_resize_uint8(frames, crop, ds.img_size))


def test_bad_options_are_refused(listed):
    with pytest.raises(ValueError, match="normalize"):
        dataset(listed, normalize="gpu")
    with pytest.raises(ValueError, match="max_distort"):
        dataset(listed, max_distort=-1)


def test_dataset_crop_options_reach_the_crop(listed):
    torch.manual_seed(6)
    squares = dataset(listed, max_distort=0, num_sample=50).crops(256, 340)
    assert all(c.height == c.width for c in squares)
    default = dataset(listed, num_sample=200).crops(256, 340)
    assert any(c.height != c.width for c in default)
    assert all((c.left, c.top) in fixed_offsets(340, 256, c.width, c.height) for c in default)
    free = dataset(listed, fixed_offsets=False, num_sample=50).crops(256, 340)
    assert any((c.left, c.top) not in fixed_offsets(340, 256, c.width, c.height) for c in free)
