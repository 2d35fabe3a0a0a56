"""Export a pretrained image encoder as a timm ``VisionTransformer`` safetensors file + model card.

The file loads with ``timm.create_model(<name>, pretrained=True,
pretrained_cfg_overlay=dict(file=...), num_classes=0, **kwargs)`` with no missing or unexpected
keys; ``<name>`` and ``kwargs`` are written in the model card (``README.md``) and in
``timm_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from mmim.config.recipe import Recipe, recipe_to_dict
from mmim.export import save_safetensors
from mmim.model import MaskedModel
from mmim.timm_compat import import_timm
from mmim.trunk.encoder import VIT_SIZES


def timm_arguments(model: MaskedModel, stream: str, pool: str) -> tuple[str, dict[str, Any]]:
    """The timm model name closest to ``model``'s encoder and the kwargs that make it exact."""
    enc, tok = model.encoder.config, model.streams[stream].tokenizer
    if model.encoder.num_prefix > 1:
        raise ValueError(f"timm export: the encoder has {model.encoder.num_prefix} prefix tokens; timm's ViT has one cls token")
    size = next((n for n, dims in VIT_SIZES.items() if dims == (enc.embed_dim, enc.depth, enc.num_heads)), None)
    p, img = tok.patch_size, tok.img_size
    name = f"vit_{size or 'base'}_patch{p[0]}_{img[0]}"
    if not import_timm().is_model(name):  # no registered exact match: a base name made exact by kwargs
        name = f"vit_{size or 'base'}_patch16_224"
    kwargs: dict[str, Any] = {"img_size": list(img), "patch_size": list(p), "in_chans": tok.in_chans,
                              "embed_dim": enc.embed_dim, "depth": enc.depth, "num_heads": enc.num_heads,
                              "mlp_ratio": enc.mlp_ratio, "qkv_bias": enc.qkv_bias,
                              "class_token": enc.cls_token, "global_pool": "token" if pool == "cls" else "avg",
                              "fc_norm": False}
    return name, kwargs


def encoder_state_dict(model: MaskedModel, stream: str) -> dict[str, torch.Tensor]:
    """The encoder in timm's key layout; the fixed position table becomes ``pos_embed`` (zero cls row)."""
    tok = model.streams[stream].tokenizer
    out = {k.removeprefix("encoder."): v for k, v in model.state_dict().items()
           if k.startswith("encoder.") and not k.startswith("encoder.cls_pos")}
    out.update({f"patch_embed.{k}": v for k, v in tok.patch_embed.state_dict().items()})
    table = tok.pos.table
    if model.encoder.cls_token is not None:
        table = torch.cat([torch.zeros_like(table[:, :1]), table], dim=1)
    out["pos_embed"] = table
    return {k: v.detach().contiguous().float() for k, v in out.items()}


def export_timm(model: MaskedModel, recipe: Recipe, out_dir: str | Path, stream: str = "image",
                metrics: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors``, ``timm_config.json`` and a model card into ``out_dir``."""
    if len(model.streams) != 1:
        raise ValueError("timm export covers single-stream image encoders")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name, kwargs = timm_arguments(model, stream, recipe.model.pool)
    weights = out_dir / "model.safetensors"
    save_safetensors(encoder_state_dict(model, stream), weights, metadata={"format": "pt", "mmim_recipe": recipe.name})
    (out_dir / "timm_config.json").write_text(json.dumps({"model_name": name, "kwargs": kwargs}, indent=2))
    prov = recipe.provenance
    card = [
        f"# {recipe.name} (mmim export)", "",
        recipe.description, "",
        "## Load with timm", "", "```python", "import timm",
        f"model = timm.create_model({name!r}, pretrained=True, num_classes=0,",
        f"    pretrained_cfg_overlay=dict(file={str(weights.name)!r}), **{kwargs!r})", "```", "",
        "## Provenance", "",
        f"- paper: {prov.paper}", f"- table: {prov.table}", f"- metric: {prov.metric} {prov.reported}", "",
        "## Metrics of this run", "", "```", json.dumps(metrics or {}, indent=2), "```", "",
        "## Recipe", "", "```yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False).rstrip(), "```", "",
    ]
    (out_dir / "README.md").write_text("\n".join(card))
    return weights


def load_timm(out_dir: str | Path) -> torch.nn.Module:
    """The timm model of an :func:`export_timm` folder, loaded strictly, in eval mode (``model(x)``
    gives the encoder's pooled features)."""
    timm = import_timm()
    cfg = json.loads((Path(out_dir) / "timm_config.json").read_text())
    model = timm.create_model(cfg["model_name"], pretrained=True, num_classes=0,
                              pretrained_cfg_overlay=dict(file=str(Path(out_dir) / "model.safetensors")), **cfg["kwargs"])
    return model.eval()


export_timm.format_name = "timm"  # ``mmim export`` writes this format into ``<out>/timm/``
export_timm.load = load_timm  # ``mmim check-plugin`` compares the loaded model's features with the encoder's
