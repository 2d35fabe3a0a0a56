"""Test-set evaluation of a fine-tuned classifier: plain or test-time voting, top-1 or mAP.

Voting (Point-MAE's ``test_vote``) averages the logits of ``votes`` augmented copies of each test
batch. The augmentation belongs to the modality, not to the core: the test dataset provides it
through one method,

    dataset.vote_augment(batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]

which returns a randomly augmented copy of a collated batch (same keys and shapes), drawing its
randomness only from ``generator``. The points datasets scale and translate each cloud and shuffle
its point order (so FPS starts elsewhere and the patches change); any dataset can add its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from mmim.data.device import device_transforms, to_device
from mmim.data.loading import collate_skipping
from mmim.finetune.metrics import mean_average_precision, top1


def vote_hook(dataset: Dataset, votes: int) -> Any:
    """The dataset's ``vote_augment`` when ``votes > 1`` (None for ``votes == 1``); a clear error if it lacks one."""
    if not isinstance(votes, int) or votes < 1:
        raise ValueError(f"finetune.votes must be a positive integer, got {votes!r}")
    if votes == 1:
        return None
    hook = getattr(dataset, "vote_augment", None)
    if not callable(hook):
        raise ValueError(f"finetune.votes={votes} needs a test dataset with a vote_augment(batch, generator) method; "
                         f"{type(dataset).__name__} has none (use finetune.votes=1)")
    return hook


@torch.no_grad()
def predict(classifier: nn.Module, dataset: Dataset, votes: int = 1, batch_size: int = 256,
            device: torch.device | str = "cpu", seed: int = 0) -> tuple[Tensor, Tensor]:
    """Logits ``(N, C)`` (averaged over ``votes`` augmented copies when ``votes > 1``) and labels.

    Labels are as the dataset gives them: ``(N,)`` class indices or ``(N, C)`` multi-hot.
    """
    hook = vote_hook(dataset, votes)
    generator = torch.Generator().manual_seed(seed)
    was_training = classifier.training
    classifier.eval()
    all_logits, all_labels = [], []
    finish = device_transforms(dataset)
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_skipping):
            batch.pop("_skipped", None)
            if not batch:
                continue
            if hook is None:
                views = [batch]
            else:
                views = [hook(batch, generator) for _ in range(votes)]
            logits = torch.stack([
                classifier(to_device(view, device, finish, tensors_only=True)).float().cpu()
                for view in views
            ]).mean(0)
            all_logits.append(logits)
            all_labels.append(torch.as_tensor(batch["label"]))
    finally:
        classifier.train(was_training)
    if not all_logits:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(all_logits), torch.cat(all_labels)


def evaluate(classifier: nn.Module, dataset: Dataset, multilabel: bool = False, votes: int = 1, batch_size: int = 256,
             device: torch.device | str = "cpu", seed: int = 0) -> dict[str, float]:
    """``{"top1": ...}`` for single-label data, ``{"mAP": ...}`` for multi-hot (``multilabel=True``)."""
    logits, labels = predict(classifier, dataset, votes, batch_size, device, seed)
    if multilabel:
        if labels.dim() != 2:
            raise ValueError(f"finetune.multilabel: test labels must be multi-hot (N, num_classes), got shape "
                             f"{tuple(labels.shape)}")
        return {"mAP": mean_average_precision(logits, labels)}
    return {"top1": top1(logits, labels)}
