import torch

from mmim.data.errors import CorruptSampleError
from mmim.data.loading import ResumableSampler, SeededDataset, collate_skipping, make_loader


def test_sampler_is_a_function_of_seed_and_epoch_and_resumes_at_a_step():
    s = ResumableSampler(20, seed=3, batch_size=2, accum=2)
    s.set_epoch(1)
    full = list(s)
    assert s.steps_per_epoch == 5 and len(full) == 20
    s.set_epoch(1, start_step=2)
    assert list(s) == full[8:]
    s.set_epoch(2)
    assert [i for i, _ in s] != [i for i, _ in full]
    assert sorted(i for i, _ in full) == list(range(20))


def test_a_step_holds_the_same_samples_however_it_is_split():
    one = ResumableSampler(24, seed=0, batch_size=2, accum=3)  # 1 process x 3 micro-batches of 2
    one.set_epoch(0)
    single = [i for i, _ in one]
    parts = []
    for rank in range(3):  # 3 processes x 1 micro-batch of 2
        s = ResumableSampler(24, seed=0, batch_size=2, accum=1, rank=rank, world_size=3)
        s.set_epoch(0)
        parts.append([i for i, _ in s])
    for step in range(4):
        for chunk in range(3):
            assert single[step * 6 + chunk * 2 : step * 6 + chunk * 2 + 2] == parts[chunk][step * 2 : step * 2 + 2]
    assert ResumableSampler(25, seed=0, batch_size=2, accum=3).steps_per_epoch == 4


class _Noisy(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 5:
            raise CorruptSampleError(f"/data/{i}.png", "truncated file")
        return {"x": torch.rand(2), "label": i}


def test_same_sample_seed_gives_same_augmentation_regardless_of_workers():
    s = ResumableSampler(8, seed=1, batch_size=2)
    s.set_epoch(0)
    ds = _Noisy()
    a = [b["x"] for b in make_loader(ds, s, 2, num_workers=0, skip_corrupt=True)]
    b = [b["x"] for b in make_loader(ds, s, 2, num_workers=2, skip_corrupt=True)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_corrupt_sample_raises_or_is_counted():
    ds = SeededDataset(_Noisy(), skip_corrupt=False)
    try:
        ds[(5, 0)]
    except CorruptSampleError as err:
        assert "/data/5.png: truncated file" in str(err)
    else:
        raise AssertionError("expected CorruptSampleError")
    skipping = SeededDataset(_Noisy(), skip_corrupt=True)
    batch = collate_skipping([skipping[(i, 0)] for i in (4, 5, 6)])
    assert batch["_skipped"] == 1 and batch["x"].shape == (2, 2)
