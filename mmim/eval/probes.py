"""Linear probe and weighted k-NN classifiers on fixed features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor) -> None:
    if train_x.shape[0] != train_y.shape[0] or test_x.shape[0] != test_y.shape[0]:
        raise ValueError("features and labels disagree on the number of samples")
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise ValueError("empty train or test features")


def knn_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024) -> float:
    """Cosine-similarity k-NN with ``exp(sim / T)`` weighted votes (InstDisc / DINO protocol).

    Args:
        train_x, test_x: ``(N, D)`` features; train_y, test_y: ``(N,)`` int64 labels.
    """
    _check(train_x, train_y, test_x, test_y)
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, train_x.shape[0])
    correct = 0
    for start in range(0, test_x.shape[0], chunk):
        sim = test_x[start : start + chunk] @ train_x.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], num_classes)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        correct += int((votes.argmax(1) == test_y[start : start + chunk]).sum())
    return correct / test_x.shape[0]


def linear_probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, epochs: int = 100,
                          lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256, seed: int = 0,
                          progress: str | None = None) -> float:
    """Logistic regression on standardised features (MAE's BatchNorm-without-affine + linear head).

    Features are standardised with the training set's mean/std; the head is trained with AdamW
    and a cosine schedule, mini-batches drawn from a generator seeded with ``seed``. ``progress``:
    the label of a progress bar over the epochs (shown on a terminal).
    """
    from mmim.eval.features import progress_bar

    _check(train_x, train_y, test_x, test_y)
    mean, std = train_x.mean(0, keepdim=True), train_x.std(0, keepdim=True) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():
        head.weight.normal_(0, 0.01, generator=g)
        head.bias.zero_()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, (train_x.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in progress_bar(range(epochs), progress, "epoch", epochs):
        order = torch.randperm(train_x.shape[0], generator=g)
        for start in range(0, train_x.shape[0], batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(head(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return float((head(test_x).argmax(1) == test_y).float().mean())
