"""Frame readers on real H.264 clips (written with PyAV), bad input, and the VideoMAE-style list dataset."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from mmim.data import CorruptSampleError, DataError
from mmim.data.loading import SeededDataset, collate_skipping
from mmim_video import reader
from mmim_video.dataset import VideoFolder, VideoList, read_list_file, sample_indices
from mmim_video.reader import frame_count, read_frames, resolve_backend

av = pytest.importorskip("av")
FRAMES, H, W = 20, 32, 64


def write_clip(path, frames=FRAMES, height=H, width=W, shift=0):
    """A moving yellow box on red, H.264 in MP4."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = 60
            x = (2 * t + shift) % (width - 10)
            img[8:20, x:x + 10] = (230, 210, 30)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_clip(root / "a.mp4")
    write_clip(root / "b.mp4", frames=6, shift=7)
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mp4").write_bytes(b"not a video at all" * 50)
    with wave.open(str(root / "speech.wav"), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000)
        f.writeframes(np.zeros(8000, np.int16).tobytes())
    data = write_clip(root / "trunc_src.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    return root


@pytest.mark.parametrize("backend", reader.available_backends())
def test_frame_count_and_content(clips, backend):
    assert frame_count(clips / "a.mp4", backend) == FRAMES
    frames = read_frames(clips / "a.mp4", [0, 5, 5, 19], backend)
    assert frames.shape == (4, H, W, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames[1], frames[2])
    box = frames[1, 10:18, 12:18].float().mean((0, 1))  # frame 5: box at x = 10..19
    assert box[1] > 150 and frames[1, 2, 50, 0] > 30


@pytest.mark.parametrize("other", ["decord", "torchcodec"])
def test_backends_return_the_same_frames(clips, other):
    if other not in reader.available_backends():
        why = {"decord": "decord is not installed or does not import here (pip install \"mmim[video]\"; wheels are x86-64 only)",
               "torchcodec": "torchcodec does not import here (on a CPU torch 2.13 it needs torchcodec==0.13.0 and the "
                             "system FFmpeg libraries)"}
        pytest.skip(why[other])
    idx = [3, 0, 17, 9, 9]
    for name in ("a.mp4", "b.mp4"):
        n = frame_count(clips / name, "pyav")
        assert frame_count(clips / name, other) == n
        want = [i % n for i in idx]
        assert torch.equal(read_frames(clips / name, want, other), read_frames(clips / name, want, "pyav"))


@pytest.mark.parametrize("backend", reader.available_backends())
@pytest.mark.parametrize("name,reason", [("missing.mp4", "not found"), ("empty.mp4", "zero-length"),
                                         ("garbage.mp4", "cannot"), ("speech.wav", "no video stream|cannot")])
def test_bad_files_name_the_file(clips, backend, name, reason):
    with pytest.raises(CorruptSampleError, match=reason) as info:
        read_frames(clips / name, [0], backend)
    assert name in str(info.value)


@pytest.mark.parametrize("backend", reader.available_backends())
def test_truncated_file_and_index_past_the_end(clips, backend):
    with pytest.raises(CorruptSampleError, match="outside"):
        read_frames(clips / "a.mp4", [FRAMES], backend)
    try:  # a truncated file either decodes fewer frames or fails; never a silent full read
        assert frame_count(clips / "truncated.mp4", backend) < FRAMES
    except CorruptSampleError as err:
        assert "truncated.mp4" in str(err)


def test_backend_selection(monkeypatch):
    with pytest.raises(ValueError, match="unknown video backend"):
        resolve_backend("opencv")
    monkeypatch.setitem(reader._USABLE, "torchcodec", False)
    with pytest.raises(ImportError, match=r"'torchcodec'.*mmim\[torchcodec\]"):
        resolve_backend("torchcodec")
    monkeypatch.setenv(reader.ENV_VAR, "pyav")
    explicit = reader.available_backends()[0]
    assert resolve_backend("auto") == "pyav" and resolve_backend(explicit) == explicit  # a named one is kept
    monkeypatch.setenv(reader.ENV_VAR, "opencv")
    with pytest.raises(ValueError, match="unknown video backend 'opencv'"):
        resolve_backend("auto")
    monkeypatch.delenv(reader.ENV_VAR)
    monkeypatch.setattr(reader, "available_backends", lambda: [])
    with pytest.raises(ImportError, match=r"mmim\[video\]"):
        resolve_backend("auto")
    with pytest.raises(ImportError, match="'av'"):
        resolve_backend("pyav")


def test_auto_prefers_pyav_then_decord_then_torchcodec(monkeypatch):
    for name in reader.BACKENDS:
        monkeypatch.setitem(reader._USABLE, name, True)
    assert resolve_backend("auto") == "pyav"
    monkeypatch.setitem(reader._USABLE, "pyav", False)
    assert resolve_backend("auto") == "decord"
    monkeypatch.setitem(reader._USABLE, "decord", False)
    assert resolve_backend("auto") == "torchcodec"


def test_sample_indices():
    torch.manual_seed(0)
    starts = {sample_indices(100, 4, 3, True)[0] for _ in range(30)}
    assert len(starts) > 5 and max(starts) <= 100 - 10
    assert sample_indices(100, 4, 3, False) == [0, 3, 6, 9]
    assert sample_indices(5, 4, 2, True) == [0, 2, 4, 4]  # short video: clamped to the last frame


def test_list_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "list.txt"
    bad.write_text("a.mp4 0\n\nb.mp4\n")
    with pytest.raises(DataError, match=r"list.txt:3: expected 'path label'"):
        read_list_file(bad, tmp_path)
    bad.write_text("a.mp4 zero\n")
    with pytest.raises(DataError, match=r"list.txt:1: label 'zero'"):
        read_list_file(bad, tmp_path)
    with pytest.raises(DataError, match="not found"):
        read_list_file(tmp_path / "nope.txt", tmp_path)


def test_dataset_items_and_corrupt_entries(clips, tmp_path):
    (tmp_path / "train.txt").write_text("a.mp4 0\n# comment\nb.mp4 1\ngarbage.mp4 1\n")
    ds = VideoList("train", True, root=str(clips), list_file=str(tmp_path / "{split}.txt"), num_frames=4,
                   sampling_rate=2, img_size=16)
    assert len(ds) == 3 and ds.num_classes == 2
    torch.manual_seed(0)
    item = ds[0]
    assert item["video"].shape == (3, 4, 16, 16) and item["label"] == 0
    assert ds[1]["video"].shape == (3, 4, 16, 16)  # 6 frames: indices clamped
    seen = {tuple(ds[0]["video"].flatten()[:50].tolist()) for _ in range(6)}
    assert len(seen) > 1  # random clip, crop and flip
    with pytest.raises(CorruptSampleError, match=r"garbage.mp4:4: .*train.txt"):
        ds[2]
    eval_ds = VideoList("train", False, root=str(clips), list_file=str(tmp_path / "train.txt"), num_frames=4,
                        sampling_rate=2, img_size=16)
    assert torch.equal(eval_ds[0]["video"], eval_ds[0]["video"])
    skipping = SeededDataset(ds, skip_corrupt=True)
    batch = collate_skipping([skipping[(i, i)] for i in range(3)])
    assert batch["video"].shape == (2, 3, 4, 16, 16) and batch["_skipped"] == 1


def test_video_folder(clips, tmp_path):
    import shutil

    for split, cls, name in (("train", "left", "a.mp4"), ("train", "right", "b.mp4"), ("val", "left", "b.mp4")):
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(clips / name, tmp_path / split / cls / name)
    (tmp_path / "train" / "left" / "notes.txt").write_text("ignored")
    ds = VideoFolder("train", False, root=str(tmp_path), num_frames=2, sampling_rate=1, img_size=8)
    assert ds.classes == ["left", "right"] and [s[1] for s in ds.samples] == [0, 1]
    assert ds[1]["video"].shape == (3, 2, 8, 8) and ds[1]["label"] == 1
    assert len(VideoFolder("val", False, root=str(tmp_path))) == 1
    with pytest.raises(DataError, match="not found"):
        VideoFolder("train", False, root=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no videos"):
        VideoFolder("train", False, root=str(tmp_path / "empty"))
