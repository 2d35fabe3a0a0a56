"""Errors raised while reading a dataset name the sample and its file."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from mmim.data import CorruptSampleError
from mmim.data.loading import ResumableSampler, SeededDataset, make_loader
from mmim.data.sources import SourceNaming, name_sample_in_error, sample_source


class Listed(Dataset):
    """Samples listed as (path, label); reading sample 1 fails the way a transform or a library might."""

    def __init__(self, samples, error):
        self.samples, self.error = samples, error

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        if index == 1:
            raise self.error
        return {"x": torch.zeros(2), "label": 0}


SAMPLES = [("/data/a.png", 0), ("/data/b.png", 1), ("/data/c.png", 0)]


@pytest.mark.parametrize("error", [ValueError("expected 3 channels, got 4"), RuntimeError("shape mismatch"),
                                   IndexError("index 7 is out of bounds")])
def test_seeded_dataset_errors_name_the_file_and_keep_their_type(error):
    ds = SeededDataset(Listed(SAMPLES, error))
    with pytest.raises(type(error), match=r"while reading sample 1 of Listed: /data/b\.png") as info:
        ds[(1, 0)]
    assert str(error).split(" (")[0] in str(info.value)


def test_errors_through_the_training_loader_name_the_file():
    sampler = ResumableSampler(3, seed=0, batch_size=3, shuffle=False)
    loader = make_loader(Listed(SAMPLES, ValueError("bad pixel format")), sampler, batch_size=3)
    with pytest.raises(ValueError, match=r"bad pixel format \(while reading sample 1 of Listed: /data/b\.png\)"):
        next(iter(loader))


def test_oserror_with_errno_and_key_error_get_a_note():
    err = OSError(errno.EIO, "Input/output error")
    name_sample_in_error(err, Listed(SAMPLES, err), 1)
    assert err.errno == errno.EIO and "/data/b.png" in " ".join(getattr(err, "__notes__", []))
    key = KeyError("label")
    name_sample_in_error(key, Listed(SAMPLES, key), 1)
    assert str(key) == "'label'" and "/data/b.png" in " ".join(getattr(key, "__notes__", []))


def test_corrupt_sample_errors_and_messages_naming_the_file_are_left_alone():
    err = CorruptSampleError("/data/b.png", "truncated")
    name_sample_in_error(err, Listed(SAMPLES, err), 1)
    assert str(err) == "/data/b.png: truncated"
    named = ValueError("/data/b.png is 16-bit")
    name_sample_in_error(named, Listed(SAMPLES, named), 1)
    assert str(named) == "/data/b.png is 16-bit"


def test_sources_from_hooks_files_dicts_and_subsets():
    class Hooked(Dataset):
        def sample_source(self, index):
            return f"shard-0003.tar#{index}"

    class Files(Dataset):
        files = ["/p/x.ply", "/p/y.ply"]

    class Tasks(Dataset):
        samples = [({"rgb": "/m/rgb/a.jpg", "depth": "/m/depth/a.png"}, 0)]

    assert sample_source(Hooked(), 5) == "shard-0003.tar#5"
    assert sample_source(Files(), 1) == "/p/y.ply"
    assert sample_source(Tasks(), 0) == "/m/rgb/a.jpg, /m/depth/a.png"
    assert sample_source(Subset(Listed(SAMPLES, None), [2, 1]), 0) == "/data/c.png"
    assert sample_source(Files(), 9) is None and sample_source(Dataset(), 0) is None


def test_evaluation_features_name_the_file():
    ds = SourceNaming(Listed(SAMPLES, ValueError("bad")))
    assert len(ds) == 3 and ds[0]["label"] == 0
    with pytest.raises(ValueError, match="/data/b.png"):
        ds[1]


def test_multitask_folder_corrupt_file_names_the_file(tmp_path):
    """A truncated depth map in MultiMAE's folders is a CorruptSampleError naming it (it was a TypeError)."""
    from mmim_multimodal.folder import MultiTaskFolder

    for task in ("rgb", "depth"):
        (tmp_path / "train" / task / "cls").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "rgb" / "cls" / "a.png")
    (tmp_path / "train" / "depth" / "cls" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = MultiTaskFolder("train", False, str(tmp_path), tasks=("rgb", "depth"), input_size=8, semseg_stride=1)
    with pytest.raises(CorruptSampleError, match=r"depth.*a\.png: cannot read the depth image"):
        ds[0]
