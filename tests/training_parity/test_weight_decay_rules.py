"""Per-recipe weight-decay exemptions (``optim.no_weight_decay``, ``finetune.no_weight_decay``), as
the official loops have them, on every shipped recipe that declares them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmim.cli import main
from mmim.config.recipe import load_recipe
from mmim.engine.optim import param_groups
from mmim.finetune.classifier import EncoderClassifier, train_positions
from mmim.finetune.layer_decay import layer_decay_groups
from mmim.model import build_model

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.encoder.size=null", "model.encoder.embed_dim=32", "model.encoder.depth=1", "model.encoder.num_heads=2"]

MAE_FT_EXEMPT = {"backbone.encoder.cls_token", "backbone.encoder.cls_pos", "backbone.streams.image.tokenizer.pos.table"}

# recipe -> (pre-training: >1-D parameters exempt from decay, fine-tuning: the same)
OFFICIAL = {
    # main_pretrain.py: timm add_weight_decay, no skip list; main_finetune.py: no_weight_decay() = cls/pos
    # (pos_embed: the trained position table and the cls position, finetune.train_positions)
    "recipes/image/mae_vit_b16_in1k.yaml": (set(), MAE_FT_EXEMPT),
    "recipes/image/mae_vit_l16_in1k.yaml": (set(), MAE_FT_EXEMPT),
    "recipes/image/mae_vit_h14_in1k.yaml": (set(), MAE_FT_EXEMPT),
    "plugins/image/mmim_image/recipes/mae_fashion_mnist.yaml": (set(), None),
    # VideoMAE: exactly the top-level names no_weight_decay() lists -> the decoder's mask token
    "recipes/video/videomae_vit_b_k400.yaml": ({"streams.video.decoder.mask_token"}, set()),
    "recipes/video/videomae_vit_b_ssv2.yaml": ({"streams.video.decoder.mask_token"}, set()),
    "recipes/video/videomae_vit_l_k400.yaml": ({"streams.video.decoder.mask_token"}, set()),
    "recipes/video/videomae_vit_h_k400.yaml": ({"streams.video.decoder.mask_token"}, set()),
    "recipes/video/videomaev2_vit_g_hybrid.yaml": ({"streams.video.decoder.mask_token"}, set()),
}


def exempt_matrices(model, groups) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"] if p.ndim > 1}


@pytest.mark.parametrize("path", sorted(OFFICIAL))
def test_shipped_recipes_exempt_what_the_official_code_exempts(path):
    pretrain, finetune = OFFICIAL[path]
    recipe = load_recipe(ROOT / path, TINY)
    model = build_model(recipe.model)
    groups = param_groups(model, 0.05, recipe.optim.no_weight_decay)
    assert exempt_matrices(model, groups) == pretrain
    for g in groups:  # 1-D parameters and biases are never decayed
        assert g["weight_decay"] == 0 or all(p.ndim > 1 for p in g["params"])
    if finetune is not None:
        backbone = build_model(recipe.model)
        if recipe.finetune.train_positions:
            train_positions(backbone)
        classifier = EncoderClassifier(backbone, 10, recipe.finetune.pool)
        groups = layer_decay_groups(classifier, 1, 0.05, 0.75, recipe.finetune.no_weight_decay)
        assert exempt_matrices(classifier, groups) == finetune


def test_mmim_default_rule_is_kept_for_recipes_that_declare_none(tiny_recipe_dict, tmp_path):
    from mmim.config.recipe import recipe_from_dict

    recipe = recipe_from_dict(tiny_recipe_dict)
    assert recipe.optim.no_weight_decay is None
    model = build_model(recipe.model)
    exempt = exempt_matrices(model, param_groups(model, 0.05, None))
    assert exempt == {"encoder.cls_token", "streams.image.decoder.mask_token"}


def test_a_pattern_matching_nothing_is_an_error_naming_it():
    recipe = load_recipe(ROOT / "recipes/image/mae_vit_b16_in1k.yaml", TINY)
    model = build_model(recipe.model)
    with pytest.raises(ValueError, match=r"optim.no_weight_decay: 'decoder.mask_token' matches no trainable .*"
                                         r"streams.image.decoder.mask_token"):
        param_groups(model, 0.05, ["decoder.mask_token"])


def test_mmim_recipes_shows_the_rules(capsys):
    assert main(["recipes", "--modality", "video"]) == 0
    out = capsys.readouterr().out
    assert "pretrain: AdamW betas (0.9, 0.95), wd 0.05, no decay on 1-D, biases, streams.*.decoder.mask_token" in out
    assert "lr = 0.00015 x batch/256; no clipping" in out
    assert "finetune: AdamW betas (0.9, 0.999)" in out and "layer decay 0.75" in out
    assert main(["recipes", "--modality", "image"]) == 0
    assert "no decay on 1-D and biases only (tokens decayed)" in capsys.readouterr().out
