"""Kinetics CSV annotations (official layout, class folders or flat) and repeated augmentation (``num_sample``)."""

from __future__ import annotations

import shutil

import pytest
import torch

from mmim.config.recipe import EncoderConfig, ModelConfig, StreamConfig
from mmim.data import CorruptSampleError, DataError
from mmim.model import build_model
from mmim_video.dataset import VideoList
from mmim_video.embedded import MovingFashion
from mmim_video.kinetics import KineticsCSV, clip_name, read_kinetics_csv

from .test_reader_dataset import write_clip

HEADER = "label,youtube_id,time_start,time_end,split\n"


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    """A tiny Kinetics-style tree: real H.264 clips under class folders (one with spaces) and flat."""
    root = tmp_path_factory.mktemp("k400")
    src = write_clip(root / "src.mp4", frames=12)
    other = write_clip(root / "src2.mp4", frames=12, shift=9)
    (root / "train" / "abseiling").mkdir(parents=True)
    (root / "train" / "air drumming").mkdir(parents=True)
    shutil.copy(src, root / "train" / "abseiling" / clip_name("--abc-123", 14, 24))
    shutil.copy(other, root / "train" / "air drumming" / clip_name("x_y-9", 0, 10))
    (root / "flat").mkdir()
    shutil.copy(src, root / "flat" / clip_name("--abc-123", 14, 24))
    shutil.copy(other, root / "flat" / clip_name("x_y-9", 0, 10))
    (root / "train.csv").write_text(HEADER + "abseiling,--abc-123,14,24,train\n"
                                    '"air drumming",x_y-9,0,10,train\n\n')
    return root


def test_clip_name_is_the_downloaders_convention():
    assert clip_name("--07WQ2iBlw", 1, 11) == "--07WQ2iBlw_000001_000011.mp4"
    assert clip_name("a", 123456, 123466, ".mkv") == "a_123456_123466.mkv"


@pytest.mark.parametrize("root_name, layout", [("train", "auto"), ("train", "class_folders"), ("flat", "auto"),
                                               ("flat", "flat")])
def test_kinetics_csv_reads_real_clips(kinetics, root_name, layout):
    ds = KineticsCSV("train", False, root=str(kinetics / root_name), csv_file=str(kinetics / "{split}.csv"),
                     layout=layout, num_frames=4, sampling_rate=2, img_size=16)
    assert ds.classes == ["abseiling", "air drumming"] and ds.num_classes == 2
    assert [s[1:] for s in ds.samples] == [(0, 2), (1, 3)]  # (label, CSV line)
    assert ds.samples[1][0].endswith("x_y-9_000000_000010.mp4")
    assert ("air drumming" in ds.samples[1][0]) == (root_name == "train")
    item = ds[1]
    assert item["video"].shape == (3, 4, 16, 16) and item["label"] == 1
    assert not torch.equal(ds[0]["video"], item["video"])


def test_kinetics_class_file_split_filter_and_unlabelled_rows(kinetics, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("air drumming\nabseiling\nzumba\n")
    both = tmp_path / "all.csv"
    both.write_text(HEADER + "abseiling,--abc-123,14,24,train\nzumba,zz,1,11,val\n")
    ds = KineticsCSV("train", False, root=str(kinetics / "flat"), csv_file=str(both), classes=str(classes),
                     filter_split=True, num_frames=2, img_size=8)
    assert ds.num_classes == 3 and [s[1:] for s in ds.samples] == [(1, 2)]
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("youtube_id,time_start,time_end,split\n--abc-123,14,24,test\n")
    unlabelled = KineticsCSV("test", False, root=str(kinetics / "flat"), csv_file=str(test_csv), num_frames=2,
                             img_size=8)
    assert unlabelled.samples[0][1] == -1 and unlabelled[0]["video"].shape == (3, 2, 8, 8)
    classes.write_text("abseiling\nair drumming\n")
    with pytest.raises(DataError, match=r"all.csv:3: label 'zumba' is not in the class list"):
        KineticsCSV("train", False, root=str(kinetics / "flat"), csv_file=str(both), classes=str(classes))


@pytest.mark.parametrize("text, error", [
    ("", r"bad.csv: empty file"),
    ("label,youtube_id,start,end\nx,y,1,2\n", r"bad.csv:1: missing columns \['time_start', 'time_end'\]"),
    (HEADER + "a,id,1,11,train\nb,id2,1\n", r"bad.csv:3: 3 fields, the header has 5"),
    (HEADER + "a,id,1,11,train\nb,id2,one,11,train\n", r"bad.csv:3: time_start 'one' is not a number"),
    (HEADER + "a,id,1.5,11,train\n", r"bad.csv:2: time_start '1.5' is not a whole"),
    (HEADER + "a,id,12,11,train\n", r"bad.csv:2: time_end 11 is not after time_start 12"),
    (HEADER + "a,,1,11,train\n", r"bad.csv:2: empty youtube_id"),
    (HEADER, r"bad.csv: no clips"),
])
def test_kinetics_csv_errors_name_file_and_line(tmp_path, text, error):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    with pytest.raises(DataError, match=error):
        read_kinetics_csv(bad)
    with pytest.raises(DataError, match="not found"):
        read_kinetics_csv(tmp_path / "nope.csv")


def test_kinetics_missing_clip_names_file_and_csv_line(kinetics, tmp_path):
    csv_file = tmp_path / "train.csv"
    csv_file.write_text(HEADER + "abseiling,--abc-123,14,24,train\nabseiling,gone,0,10,train\n")
    ds = KineticsCSV("train", False, root=str(kinetics / "train"), csv_file=str(csv_file), num_frames=2, img_size=8)
    with pytest.raises(CorruptSampleError, match=r"abseiling/gone_000000_000010.mp4:3: file not found .*train.csv"):
        ds[1]
    with pytest.raises(ValueError, match="layout"):
        KineticsCSV("train", False, root=str(kinetics), csv_file=str(csv_file), layout="nested")


def test_kinetics_csv_is_a_registered_dataset(video_registry):
    assert video_registry.resolve("dataset", "video:kinetics_csv") is KineticsCSV


# --- repeated augmentation ---------------------------------------------------------------------------


def test_num_sample_gives_several_augmented_copies_of_one_decode(kinetics, tmp_path, monkeypatch):
    from mmim_video import dataset as dataset_module

    (tmp_path / "train.txt").write_text("train/abseiling/--abc-123_000014_000024.mp4 0\n")
    ds = VideoList("train", True, root=str(kinetics), list_file=str(tmp_path / "train.txt"), num_frames=4,
                   sampling_rate=2, img_size=16, num_sample=3)
    decodes = []
    real = dataset_module.read_clip
    monkeypatch.setattr(dataset_module, "read_clip", lambda *a: decodes.append(a[0]) or real(*a))
    torch.manual_seed(3)
    x = ds[0]["video"]
    assert x.shape == (3, 3, 4, 16, 16) and len(decodes) == 1  # three copies, one decode
    assert not torch.equal(x[0], x[1]) or not torch.equal(x[1], x[2])  # independent crops / flips
    torch.manual_seed(3)
    assert torch.equal(ds[0]["video"], x)  # deterministic under the engine's per-sample seed
    one = VideoList("train", False, root=str(kinetics), list_file=str(tmp_path / "train.txt"), num_frames=4,
                    sampling_rate=2, img_size=16, num_sample=3)
    assert one[0]["video"].shape == (3, 4, 16, 16)  # evaluation: one clip
    with pytest.raises(ValueError, match="num_sample"):
        VideoList("train", True, root=str(kinetics), list_file=str(tmp_path / "train.txt"), num_sample=0)


def test_num_sample_copies_are_what_single_clips_would_be(kinetics, tmp_path):
    """Each copy is the transform of the same decoded frames (same frame indices), so with no spatial
    randomness (one scale, no flip, a square frame: crop = frame) the copies are equal, while the
    temporal start still varies from item to item."""
    write_clip(tmp_path / "square.mp4", frames=12, height=32, width=32)
    (tmp_path / "train.txt").write_text("square.mp4 1\n")
    ds = VideoList("train", True, root=str(tmp_path), list_file=str(tmp_path / "train.txt"), num_frames=4,
                   sampling_rate=1, img_size=16, crop_scales=(1.0,), hflip=False, num_sample=2)
    torch.manual_seed(0)
    x = ds[0]["video"]
    assert torch.equal(x[0], x[1])  # the same temporal clip from the one decode
    assert len({tuple(ds[0]["video"][0, 0, :, 10, 10].tolist()) for _ in range(8)}) > 1  # random start per item


def test_repeated_augmentation_batch_trains_as_b_times_n_clips(video_registry):
    ds = MovingFashion("train", augment=True, img_size=16, num_frames=4, num_sample=2, max_samples=3)
    x = torch.stack([ds[i]["video"] for i in range(3)])
    assert x.shape == (3, 2, 1, 4, 16, 16)
    cfg = ModelConfig(
        encoder=EncoderConfig(embed_dim=16, depth=1, num_heads=2, cls_token=False),
        streams={"video": StreamConfig(
            tokenizer={"name": "video:tubelet", "num_frames": 4, "img_size": 16, "tubelet": [2, 8, 8], "in_chans": 1},
            masker={"name": "video:tube", "ratio": 0.5},
            target={"name": "video:tubelet_pixels", "mean": [0.0], "std": [1.0]},
            loss={"name": "mse"},
            decoder={"name": "video:videomae", "embed_dim": 8, "depth": 1, "num_heads": 2},
        )},
    )
    model = build_model(cfg)
    out = model({"video": x}, generator=torch.Generator().manual_seed(0))
    assert out.tokens["video"].embeddings.shape[0] == 6 and out.predictions["video"].values.shape[0] == 6
    flat = model({"video": x.flatten(0, 1)}, masks=out.mask)
    torch.testing.assert_close(out.loss, flat.loss)
