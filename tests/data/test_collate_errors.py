"""A batch whose samples differ (shape, dtype, keys) fails with an error naming the samples' files."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from mmim.data.errors import DataError
from mmim.data.loading import ResumableSampler, SeededDataset, collate_skipping, make_loader


class Files(Dataset):
    """Items of the given shapes (and keys), read from made-up files named in ``samples``."""

    def __init__(self, shapes: list[tuple[int, ...]], keys: list[tuple[str, ...]] | None = None) -> None:
        self.shapes, self.keys = shapes, keys or [("image",)] * len(shapes)
        self.samples = [(f"/data/img{i}.jpg", 0) for i in range(len(shapes))]

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, index: int) -> dict:
        return {**{k: torch.zeros(self.shapes[index]) for k in self.keys[index]}, "label": 0}


def test_a_sample_of_another_shape_is_named_with_the_first():
    data = SeededDataset(Files([(3, 8, 8), (3, 8, 8), (3, 8, 6)]))
    with pytest.raises(DataError, match=r"'image' is float32 \(3, 8, 6\) in /data/img2\.jpg but float32 \(3, 8, 8\) "
                                        r"in /data/img0\.jpg"):
        collate_skipping([data[(i, i)] for i in range(3)])


def test_a_sample_with_other_keys_is_named():
    data = SeededDataset(Files([(2,), (2,)], keys=[("image",), ("image", "depth")]))
    with pytest.raises(DataError, match=r"/data/img1\.jpg has the keys \['depth', 'image', 'label'\] but "
                                        r"/data/img0\.jpg has \['image', 'label'\]"):
        collate_skipping([data[(i, i)] for i in range(2)])


def test_matching_samples_collate_to_a_plain_dict_through_the_loader():
    files = Files([(3, 4, 4)] * 4)
    loader = make_loader(files, ResumableSampler(len(files), 0, batch_size=2), batch_size=2)
    batches = list(loader)
    assert len(batches) == 2 and all(type(b) is dict and b["image"].shape == (2, 3, 4, 4) for b in batches)
    assert not hasattr(batches[0], "source")


def test_paired_datasets_pass_on_their_parts_device_transforms():
    from types import SimpleNamespace

    from mmim.data.paired import PairedDataset

    paired = PairedDataset.__new__(PairedDataset)
    normalise = SimpleNamespace(__call__=lambda x: x)
    paired.parts = {"video": SimpleNamespace(device_transforms={"video": normalise}),
                    "audio": SimpleNamespace(device_transforms={})}
    assert paired.device_transforms == {"video": normalise}
