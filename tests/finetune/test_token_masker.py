"""finetune.token_masker: tokens dropped before the encoder while fine-tuning, never at evaluation."""

from __future__ import annotations

import pytest
import torch

from mmim.config.recipe import recipe_from_dict
from mmim.config.typed import ConfigError
from mmim.finetune.task import FinetuneTask


def task_for(tiny_recipe_dict, masker):
    data = dict(tiny_recipe_dict)
    data["finetune"] = {**data.get("finetune", {}), "token_masker": masker, "epochs": 1, "max_steps": 1}
    return FinetuneTask(recipe_from_dict(data))


def test_training_forwards_encode_only_kept_tokens(tiny_recipe_dict):
    task = task_for(tiny_recipe_dict, {"name": "random", "ratio": 0.5})
    clf = task.module
    seen = []
    hook = clf.backbone.encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    item = task.dataset[0]
    batch = {k: torch.as_tensor(v).unsqueeze(0).repeat(2, *[1] * torch.as_tensor(v).dim()) for k, v in item.items()}
    clf.train()
    a = clf(batch, generator=torch.Generator().manual_seed(0))
    b = clf(batch, generator=torch.Generator().manual_seed(0))
    clf.eval()
    clf(batch)
    hook.remove()
    total = seen[-1]
    assert seen[0] == seen[1] == total // 2, f"training saw {seen[:2]} of {total} tokens"
    clf.train()

    def run(seed):
        torch.manual_seed(7)  # drop path and dropout draw from the global RNG
        return clf(batch, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c), "masks come from the step's generator"


def test_unknown_token_masker_is_named(tiny_recipe_dict):
    data = dict(tiny_recipe_dict)
    data["finetune"] = {**data.get("finetune", {}), "token_masker": {"name": "nope"}}
    with pytest.raises(ConfigError, match="finetune.token_masker"):
        recipe_from_dict(data)
