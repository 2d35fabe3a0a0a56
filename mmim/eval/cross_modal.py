"""Cross-modal prediction: predict each target stream from the other input streams, next to a
blind baseline that sees none of them (only the global tokens). A one-stream model has only the
blind baseline."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from mmim.data.device import device_transforms, to_device
from mmim.data.loading import collate_skipping
from mmim.model import MaskedModel


@torch.no_grad()
def cross_modal_losses(model: MaskedModel, dataset: Dataset, batch_size: int = 256,
                       device: torch.device | str = "cpu", progress: str | None = None) -> dict[str, float]:
    """Per target stream ``t``: ``from_others/t`` — its loss (the recipe's loss on every token)
    when every token of the other input streams is encoded — and ``blind/t`` — the same with no
    input at all. A fused encoder that learned how the streams relate has ``from_others < blind``.
    ``progress``: the label of a progress bar over the samples (shown on a terminal).
    """
    from mmim.eval.features import progress_bar

    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    finish = device_transforms(dataset)
    bar = progress_bar(None, progress, "sample", len(dataset) if hasattr(dataset, "__len__") else None)
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_skipping):
        batch.pop("_skipped", None)
        batch = to_device(batch, device, finish)
        n = next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0]
        for target in model.targets:
            source = model.token_source(target)
            others = [s for s in model.inputs if s != source]
            for tag, inputs in (("from_others", others), ("blind", [])):
                if tag == "from_others" and not others:
                    continue
                out = model.predict_stream(batch, inputs, target)
                part = next(v for k, v in out.parts.items() if k.startswith(f"{target}/"))
                sums[f"{tag}/{target}"] = sums.get(f"{tag}/{target}", 0.0) + float(part) * n
        count += n
        if bar is not None:
            bar.update(n)
    if bar is not None:
        bar.close()
    model.train(was_training)
    return {k: v / max(count, 1) for k, v in sorted(sums.items())}
