"""``mmim pack --encode``: videos re-encoded at pack time (short side, keyframe interval, frames as images),
decoded from the shards through the same sampling and augmentation as the files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmim.cli import _encode_options
from mmim.data import DataError
from mmim.data.pack import pack
from mmim.data.shards import MemberRange, iter_samples, resolve
from mmim_video import transcode
from mmim_video.dataset import VideoList

av = pytest.importorskip("av")
pytest.importorskip("simplejpeg")

FRAMES, W, H = 24, 64, 48


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from .test_uint8_pipeline import write_video

    root = tmp_path_factory.mktemp("enc")
    for i in range(2):
        write_video(root / f"{i}.mp4", FRAMES, W, H, gop=250)
    (root / "train.txt").write_text("0.mp4 0\n1.mp4 1\n")
    return root


def spec(root):
    return {"name": "video_list", "root": str(root), "list_file": str(root / "train.txt"), "num_frames": 4,
            "sampling_rate": 2, "img_size": 32}


def dataset(root, augment):
    options = {k: v for k, v in spec(root).items() if k != "name"}
    return VideoList("train", augment, **options)


def records(out):
    return [members for url in resolve(str(out)).urls for _, members in iter_samples(url)]


def keyframes(data: bytes) -> list[int]:
    import io

    with av.open(io.BytesIO(data)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    order = sorted(p.pts for p in packets)
    return sorted(order.index(p.pts) for p in packets if p.is_keyframe)


def test_keyint_and_short_side_reencode(videos, tmp_path, video_registry):
    index = pack(spec(videos), tmp_path / "s", samples_per_shard=1, progress=False,
                 encode={"keyint": 4, "short_side": 24})
    assert index["encode"] == {"keyint": 4, "short_side": 24}
    for members in records(tmp_path / "s"):
        assert set(members) == {"mp4", "json"}
        assert keyframes(members["mp4"]) == list(range(0, FRAMES, 4))
        with av.open(__import__("io").BytesIO(members["mp4"])) as c:
            assert (c.streams.video[0].height, c.streams.video[0].width) == (24, 32)
        assert json.loads(members["json"])["encode"]["keyint"] == 4
    original = records(pack(spec(videos), tmp_path / "o", progress=False) and tmp_path / "o")
    assert all(len(keyframes(m["mp4"])) == 1 for m in original)  # the source: one keyframe (gop 250)


def test_frames_as_jpeg_decode_only_the_clip(videos, tmp_path, monkeypatch, video_registry):
    pack(spec(videos), tmp_path / "j", samples_per_shard=2, progress=False,
         encode={"frames": "jpeg", "quality": 95, "subsampling": "444"})
    members = records(tmp_path / "j")
    assert all(set(m) == {"mjpeg", "json"} for m in members)
    info = json.loads(members[0]["json"])["frames"]
    assert len(info["offsets"]) == FRAMES + 1 and members[0]["mjpeg"][:3] == b"\xff\xd8\xff"
    import simplejpeg

    calls = []
    real = simplejpeg.decode_jpeg
    monkeypatch.setattr(simplejpeg, "decode_jpeg", lambda *a, **k: calls.append(1) or real(*a, **k))
    files, shards = dataset(videos, True), dataset(videos, True)
    for i, m in enumerate(members):
        torch.manual_seed(7 + i)
        from_shard = shards.decode_record(m, "shard")["video"]
        assert len(calls) == 4 * (i + 1)  # num_frames frames, no more
        torch.manual_seed(7 + i)
        from_file = files[i]["video"]
        # the same frames and crop (same draws in the same order), up to JPEG quality 95 at full chroma
        assert from_shard.shape == from_file.shape
        assert (from_shard - from_file).abs().mean() < 0.1


def test_jpeg_chroma_subsampling_is_what_was_asked(videos, tmp_path, video_registry):
    import simplejpeg

    def chroma(members):
        info = json.loads(members["json"])["frames"]
        return {simplejpeg.decode_jpeg_header(members["mjpeg"][a:b])[3]
                for a, b in zip(info["offsets"][:-1], info["offsets"][1:])}

    sizes = {}
    for n, (sub, want) in enumerate((("444", "444"), ("422", "422"), ("4:2:0", "420"), (None, "420"))):
        encode = {"frames": "jpeg", **({"subsampling": sub} if sub else {})}
        members = records(pack(spec(videos), tmp_path / str(n), samples_per_shard=2, progress=False,
                               encode=encode) and tmp_path / str(n))
        assert all(chroma(m) == {want} for m in members)  # default: 4:2:0, as the source video is
        sizes[want] = sum(len(m["mjpeg"]) for m in members)
    assert sizes["420"] < sizes["422"] < sizes["444"]
    with pytest.raises(Exception, match="subsampling must be one of"):
        pack(spec(videos), tmp_path / "bad", progress=False, encode={"frames": "jpeg", "subsampling": "411"})
    with pytest.raises(Exception, match="4:2:0"):
        pack(spec(videos), tmp_path / "webp", progress=False, encode={"frames": "webp", "subsampling": "444"})


def test_frames_of_another_size_are_an_error(videos):
    data, info = transcode.frame_images(str(videos / "0.mp4"), "jpeg")
    other, other_info = transcode.frame_images(str(videos / "0.mp4"), "jpeg", short_side=H // 2)
    first = data[:info["offsets"][1]]
    mixed = first + other[other_info["offsets"][1]:other_info["offsets"][2]]
    from mmim.data import CorruptSampleError

    with pytest.raises(CorruptSampleError, match="frame 1 does not decode.*pixels where frame 0 has"):
        transcode.decode_frame_images(mixed, {**info, "offsets": [0, len(first), len(mixed)]}, [0, 1], "x")


def test_frames_and_files_agree_without_augmentation(videos, tmp_path, video_registry):
    pack(spec(videos), tmp_path / "w", samples_per_shard=2, progress=False, encode={"frames": "webp", "quality": 95})
    members = records(tmp_path / "w")
    assert all(set(m) == {"webpseq", "json"} for m in members)
    files = dataset(videos, False)
    for i, m in enumerate(members):
        assert (files.decode_record(m, "s")["video"] - files[i]["video"]).abs().mean() < 0.1


def test_bad_encode_options_name_the_problem(videos, tmp_path, video_registry):
    with pytest.raises(DataError, match="does not take"):
        pack(spec(videos), tmp_path / "x", progress=False, encode={"bitrate": 5})
    with pytest.raises(Exception, match="frames must be one of"):
        pack(spec(videos), tmp_path / "y", progress=False, encode={"frames": "png"})
    pack(spec(videos), tmp_path / "z", progress=False, samples_per_shard=1, encode={"keyint": 8})
    (tmp_path / "z" / "index.json").rename(tmp_path / "z" / "index.old")
    (tmp_path / "z" / "pack.json").write_text(json.dumps({"dataset": spec(videos), "split": "train", "num_samples": 2,
                                                           "samples_per_shard": 1, "encode": {"keyint": 8}}))
    with pytest.raises(DataError, match="encoding"):
        pack(spec(videos), tmp_path / "z", progress=False, encode={"keyint": 16})


def test_cut_frames_member_is_an_error(videos):
    data, info = transcode.frame_images(str(videos / "0.mp4"), "jpeg")
    from mmim.data import CorruptSampleError

    with pytest.raises(CorruptSampleError, match="offsets"):
        transcode.decode_frame_images(data[:-10], info, [0], "shard x member 0")
    assert transcode.decode_frame_images(data, info, [3, 3], "x").shape == (2, H, W, 3)
    assert np.array_equal(transcode.target_size(480, 640, 320), (320, 426))
    assert transcode.target_size(200, 300, 320) == (200, 300)  # never enlarged


def test_cli_encode_pairs():
    assert _encode_options(["keyint=16", "frames=jpeg", "short_side=320"]) == \
        {"keyint": 16, "frames": "jpeg", "short_side": 320}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _encode_options(["keyint"])
    assert _encode_options(["subsampling=4:2:0", "quality=85"]) == {"subsampling": "4:2:0", "quality": 85}


def test_frames_decode_from_member_ranges_as_from_bytes(videos, tmp_path, video_registry):
    """The stream hands frames members as ranges of the shard file (VideoClips.lazy_members): the clip is the
    one decoded from the member's bytes."""
    pack(spec(videos), tmp_path / "j", samples_per_shard=2, progress=False, encode={"frames": "jpeg"})
    shards = dataset(videos, True)
    assert "mjpeg" in shards.lazy_members
    for url in resolve(str(tmp_path / "j")).urls:
        for (_, plain), (_, mapped) in zip(iter_samples(url), iter_samples(url, shards.lazy_members)):
            assert isinstance(mapped["mjpeg"], MemberRange)
            torch.manual_seed(3)
            a = shards.decode_record(plain, "shard")["video"]
            torch.manual_seed(3)
            b = shards.decode_record(mapped, "shard")["video"]
            assert torch.equal(a, b)
