import torch

from mmim.eval.probes import knn_accuracy, linear_probe_accuracy


def _blobs(n, d=8, classes=4, seed=0, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] + spread * torch.randn(n, d, generator=g), y


def test_probes_separate_clusters_and_fail_on_noise():
    tx, ty = _blobs(400, seed=0)
    vx, vy = _blobs(200, seed=1)
    assert knn_accuracy(tx, ty, vx, vy, k=10) > 0.95
    assert linear_probe_accuracy(tx, ty, vx, vy, epochs=30, lr=1e-2) > 0.95
    shuffled = ty[torch.randperm(len(ty), generator=torch.Generator().manual_seed(5))]
    assert knn_accuracy(tx, shuffled, vx, vy, k=10) < 0.5
    assert linear_probe_accuracy(tx, shuffled, vx, vy, epochs=30, lr=1e-2) < 0.5


def test_linear_probe_is_deterministic():
    tx, ty = _blobs(100, spread=3.0)
    vx, vy = _blobs(50, seed=2, spread=3.0)
    a = linear_probe_accuracy(tx, ty, vx, vy, epochs=5, seed=3)
    assert a == linear_probe_accuracy(tx, ty, vx, vy, epochs=5, seed=3)
