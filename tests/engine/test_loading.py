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


def test_weighted_sampler_follows_the_weights_and_resumes_exactly():
    import torch

    from mmim.data.loading import ResumableSampler

    w = torch.tensor([0.0, 1.0, 1.0, 2.0, 4.0, 0.0, 1.0, 1.0])
    s = ResumableSampler(8, seed=3, batch_size=4, accum=1, weights=w, epoch_samples=400)
    counts = torch.zeros(8)
    for epoch in range(5):
        s.set_epoch(epoch)
        for idx, _ in s:
            counts[idx] += 1
    assert counts[0] == 0 and counts[5] == 0, "zero-weight samples are never drawn"
    freq = counts / counts.sum()
    assert torch.allclose(freq, w / w.sum(), atol=0.03)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_step=30)
    assert list(s) == full[30 * 4:], "resuming at a step repeats the rest of the epoch"
    # the same optimizer step's samples, however the batch is split over processes
    two = [ResumableSampler(8, seed=3, batch_size=2, rank=r, world_size=2, weights=w, epoch_samples=400) for r in (0, 1)]
    for t in two:
        t.set_epoch(2)
    parts = [list(t) for t in two]
    first_step = sorted(i for p in parts for i, _ in p[:2])
    assert first_step == sorted(i for i, _ in full[:4])


def test_weighted_sampler_without_replacement_and_bad_weights():
    import pytest
    import torch

    from mmim.data.loading import ResumableSampler

    s = ResumableSampler(10, seed=0, batch_size=2, weights=torch.arange(10.0) + 1, epoch_samples=6, replacement=False)
    drawn = [i for i, _ in s]
    assert len(drawn) == 6 and len(set(drawn)) == 6
    with pytest.raises(ValueError, match="without replacement"):
        ResumableSampler(4, seed=0, weights=torch.tensor([1.0, 0, 0, 1]), epoch_samples=3, replacement=False)
    with pytest.raises(ValueError, match="finite non-negative"):
        ResumableSampler(3, seed=0, weights=torch.tensor([1.0, -1.0, 1.0]))
