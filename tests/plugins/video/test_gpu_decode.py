"""``decode: device``: loader workers draw a clip's plan from the file's header only; the training process
decodes (torchcodec / NVDEC on CUDA, PyAV on the host here), crops, flips and normalises on its device. The
CPU-side logic is tested here; the NVDEC path runs where a GPU is lent (``benchmarks/gpu.sh``)."""

from __future__ import annotations

import pytest
import torch

from mmim.data.device import to_device
from mmim.data.loading import collate_skipping
from mmim_video import reader
from mmim_video.dataset import VideoList
from mmim_video.gpu import SOURCE_KEY, DeviceClips, decode_plan, encode_plan
from mmim_video.sampling import ClipPlan, Crop, crop_resize_uint8

pytest.importorskip("av")


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    from .test_uint8_pipeline import write_video

    root = tmp_path_factory.mktemp("gpu")
    write_video(root / "0.mp4", 30, 80, 60, gop=10)
    write_video(root / "1.mp4", 26, 64, 48, gop=250)
    (root / "train.txt").write_text("0.mp4 0\n1.mp4 1\n")
    return root


def dataset(root, augment=True, **options):
    spec = {"num_frames": 4, "sampling_rate": 2, "img_size": 24, "hflip": True, **options}
    return VideoList("train", augment, root=str(root), list_file=str(root / "train.txt"), **spec)


def test_plan_rows_round_trip():
    plan = ClipPlan((0, 4, 8, 8), (Crop(1, 2, 30, 40, True), Crop(0, 0, 48, 48)))
    assert decode_plan(encode_plan(plan).tolist()) == plan


@pytest.mark.parametrize("num_sample", [1, 2])
def test_workers_draw_the_host_paths_plan_without_pixels(listed, num_sample):
    device, host = dataset(listed, decode="device", num_sample=num_sample), \
        dataset(listed, normalize="device", num_sample=num_sample)
    for i, (path, _, _) in enumerate(device.samples):
        before = reader.DECODE_STATS["clips"]
        torch.manual_seed(20 + i)
        item = device[i]
        assert reader.DECODE_STATS["clips"] == before  # no clip decoded in the worker
        assert set(item) == {"video", SOURCE_KEY, "label"} and item["video"].dtype == torch.int64
        plan = decode_plan(item["video"].tolist())
        torch.manual_seed(20 + i)
        pixels = host[i]["video"]  # the same draws in the same order: the plan is what the host path cut
        frames = reader.read_frames(path, list(plan.indices), "pyav")
        for k, crop in enumerate(plan.crops):
            expected = crop_resize_uint8(frames, crop, host.img_size)
            assert torch.equal(pixels if num_sample == 1 else pixels[k], expected)


@pytest.mark.parametrize("num_sample", [1, 2])
def test_device_clips_match_the_host_path_within_one_level(listed, num_sample):
    device, host = dataset(listed, decode="device", num_sample=num_sample), dataset(listed, num_sample=num_sample)
    items, expected = [], []
    for i in range(len(device)):
        torch.manual_seed(30 + i)
        items.append(device[i])
        torch.manual_seed(30 + i)
        expected.append(host[i]["video"])
    batch = to_device(collate_skipping(items), "cpu", device.device_transforms)
    assert batch["video"].shape == torch.stack(expected).shape and batch["video"].dtype == torch.float32
    step = 1 / 255 / min(device.std.flatten().tolist())
    assert (batch["video"] - torch.stack(expected)).abs().max() <= step * 1.01  # float resize, rounded: one level


def test_shard_records_carry_their_bytes_to_the_device(listed):
    device, host = dataset(listed, decode="device"), dataset(listed)
    records = [device.shard_record(i) for i in range(len(device))]
    items, expected = [], []
    for i, record in enumerate(records):
        torch.manual_seed(40 + i)
        items.append(device.decode_record(record, f"shard member {i}"))
        torch.manual_seed(40 + i)
        expected.append(host.decode_record(record, f"shard member {i}")["video"])
    assert isinstance(items[0][SOURCE_KEY], bytes)
    batch = collate_skipping(items)
    assert isinstance(batch[SOURCE_KEY], list) and len(batch[SOURCE_KEY]) == 2
    out = to_device(batch, "cpu", device.device_transforms)["video"]
    assert (out - torch.stack(expected)).abs().max() <= 1 / 255 / min(device.std.flatten().tolist()) * 1.01


def test_evaluation_and_the_opener(listed):
    ev = dataset(listed, augment=False, decode="device")
    assert ev.device_transforms == {} and ev[0]["video"].dtype == torch.float32  # evaluation: the host path
    seen = []

    def opener(source, indices, device):
        seen.append((source, tuple(indices)))
        return torch.zeros(len(indices), 3, 60, 80, dtype=torch.uint8, device=device)

    clips = DeviceClips(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), opener=opener)
    plan = ClipPlan((0, 2, 4, 6), (Crop(0, 0, 60, 60),))
    out = clips({"video": encode_plan(plan).unsqueeze(0), SOURCE_KEY: ["x.mp4"]})
    assert seen == [("x.mp4", (0, 2, 4, 6))] and out.shape == (1, 3, 4, 24, 24)
    assert torch.allclose(out, torch.full_like(out, -2.0))
    with pytest.raises(ValueError, match="decode must be one of"):
        dataset(listed, decode="gpu")


@pytest.mark.gpu
def test_nvdec_decodes_what_the_host_decodes(listed):
    from mmim_video.gpu import nvdec_frames, torchcodec_cuda

    if not torch.cuda.is_available() or not torchcodec_cuda():
        pytest.skip("needs a CUDA device and torchcodec")
    idx = [0, 3, 9, 20]
    host = reader.read_frames(listed / "0.mp4", idx, "pyav").permute(0, 3, 1, 2)
    gpu = nvdec_frames(str(listed / "0.mp4"), idx, torch.device("cuda")).cpu()
    assert (host.int() - gpu.int()).abs().float().mean() < 2.0  # NVDEC's YUV->RGB differs from swscale's by ~1


def test_frames_shards_with_decode_device_are_refused(listed):
    from mmim.data import DataError

    device = dataset(listed, decode="device")
    record = dataset(listed).shard_record(0, frames="jpeg")
    with pytest.raises(DataError, match="decode: host"):
        device.decode_record(record, "shard x member 0")
