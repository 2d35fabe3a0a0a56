"""Export a trained encoder for any modality or fused model, and load it back.

``export_encoder`` writes into one folder, Hugging Face style:

- ``model.safetensors``: the weights :meth:`MaskedModel.features` needs (trunk, tokenizers,
  fusion embeddings), without decoders, targets, losses, maskers or the teacher;
- ``config.json``: the trunk's sizes, the streams and their input keys, the recipe, step and data;
- ``README.md``: a model card naming the recipe, its paper, the training step and data.

:func:`load_encoder` rebuilds the model from ``config.json`` (the plugins it names must be
installed), loads the weights strictly and returns an :class:`ExportedEncoder` giving the
same features. A plugin may add its own format next to it (the image plugin: a timm
``VisionTransformer`` in ``timm/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmim import __version__
from mmim.config.recipe import Recipe, recipe_from_dict, recipe_to_dict
from mmim.files import usual_mode
from mmim.model import MaskedModel, build_model

FORMAT = "mmim-encoder/1"
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
STREAM_PARTS_LEFT_OUT = ("decoder", "target", "loss", "masker", "mask_token")  # not used by features()


def save_safetensors(tensors: dict[str, Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file``, the file then given the mode of any other new file (:func:`usual_mode`)."""
    save_file(tensors, str(path), metadata=metadata)
    return usual_mode(path)


def is_encoder_key(key: str) -> bool:
    """Whether a ``MaskedModel.state_dict()`` key belongs to what ``features`` computes with."""
    parts = key.split(".")
    if parts[0] == "teacher":
        return False
    return not (parts[0] == "streams" and len(parts) > 2 and parts[2] in STREAM_PARTS_LEFT_OUT)


def encoder_state_dict(model: MaskedModel) -> dict[str, Tensor]:
    """The encoder's weights in mmim's own key layout, float32 and contiguous."""
    return {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items() if is_encoder_key(k)}


class ExportedEncoder(nn.Module):
    """A loaded export: ``encoder(batch)`` gives pooled features ``(B, D)``.

    Attributes:
        config: the export's ``config.json``.
        input_keys: the batch keys the encoder reads, e.g. ``["image"]``.
    """

    def __init__(self, model: MaskedModel, config: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.input_keys = [s["input_key"] for s in config["streams"].values() if s["input"]]

    def forward(self, batch: dict[str, Tensor], pool: str | None = None) -> Tensor:
        """``batch``: raw inputs by key (as the recipe's data set gives them). Returns ``(B, D)``."""
        missing = [k for k in self.input_keys if k not in batch]
        if missing:
            raise KeyError(f"the encoder reads batch keys {self.input_keys}; missing: {missing}")
        return self.model.features(batch, pool=pool or self.config["pool"])


def _config(model: MaskedModel, recipe: Recipe, step: int | None) -> dict[str, Any]:
    from mmim import registry
    from mmim.extras import recipe_plugins

    data = recipe_to_dict(recipe)
    enc = recipe.model.encoder.resolved()
    inputs = model.inputs
    streams = {name: {"input_key": s.input_key or name, "tokenizer": s.tokenizer,
                      "input": name in inputs}
               for name, s in recipe.model.streams.items() if s.tokenizer is not None}
    owners = recipe_plugins(data["model"], [])
    versions = {i.name: i.version for i in registry.discover() if i.plugin}
    return {
        "model_type": "mmim", "architectures": ["ExportedEncoder"], "format": FORMAT, "mmim_version": __version__,
        "hidden_size": enc.embed_dim, "num_hidden_layers": enc.depth, "num_attention_heads": enc.num_heads,
        "pool": recipe.model.pool, "fused": recipe.model.fusion is not None, "modality": recipe.modality,
        "streams": streams, "plugins": {p: versions.get(p, "?") for p in owners},
        "recipe_name": recipe.name, "step": step, "data": data["data"]["dataset"], "torch_dtype": "float32",
        "recipe": data,
    }


def _card(config: dict[str, Any], recipe: Recipe, metrics: dict[str, Any], extra: list[str]) -> str:
    prov = recipe.provenance
    example = ", ".join(f"{k!r}: ..." for k in (s["input_key"] for s in config["streams"].values() if s["input"]))
    lines = [
        "---", "library_name: mmim", f"tags: [masked-modeling, {config['modality'] or 'mmim'}]", "---", "",
        f"# {recipe.name} encoder (mmim export)", "", recipe.description or "", "",
        f"- recipe: `{recipe.name}`", f"- training step: {config['step']}",
        f"- data: `{json.dumps(config['data'])}`",
        f"- encoder: ViT {config['hidden_size']}-d x {config['num_hidden_layers']} blocks, "
        f"{config['num_attention_heads']} heads, streams {', '.join(config['streams'])}, pool {config['pool']}",
        f"- plugins needed to load: {', '.join(f'{p} {v}' for p, v in config['plugins'].items())}", "",
        "## Load", "", "```python", "import mmim", "", f"encoder = mmim.load_encoder({'<this folder>'!r})",
        f"features = encoder({{{example}}})  # (B, {config['hidden_size']})", "```", "", *extra,
        "## Provenance", "", f"- paper: {prov.paper}", f"- table: {prov.table}", f"- metric: {prov.metric} {prov.reported}", "",
        "## Metrics of this run", "", "```", json.dumps(metrics or {}, indent=2), "```", "",
        "## Recipe", "", "```yaml", yaml.safe_dump(config["recipe"], sort_keys=False).rstrip(), "```", "",
    ]
    return "\n".join(lines)


def export_encoder(model: MaskedModel, recipe: Recipe, out_dir: str | Path, *, step: int | None = None,
                   metrics: dict[str, Any] | None = None, card_sections: list[str] | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``out_dir``; return the weights path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _config(model, recipe, step)
    weights = out_dir / WEIGHTS
    save_safetensors(encoder_state_dict(model), weights, metadata={"format": "pt", "mmim_format": FORMAT,
                                                                   "mmim_recipe": recipe.name})
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2, default=str))
    (out_dir / CARD).write_text(_card(config, recipe, metrics or {}, card_sections or []))
    return weights


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> ExportedEncoder:
    """Load an :func:`export_encoder` folder (or its ``config.json``/``model.safetensors``) in eval mode."""
    folder = Path(path)
    folder = folder.parent if folder.is_file() else folder
    cfg_path, weights = folder / CONFIG, folder / WEIGHTS
    for needed in (cfg_path, weights):
        if not needed.is_file():
            raise FileNotFoundError(f"{folder}: not an mmim export (no {needed.name})")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_path}: not valid JSON: {err}") from err
    if config.get("format") != FORMAT:
        raise ValueError(f"{cfg_path}: format {config.get('format')!r} is not {FORMAT!r} (an mmim encoder export)")
    recipe = recipe_from_dict(config["recipe"], source=str(cfg_path))
    model = build_model(recipe.model, str(cfg_path))
    state = load_file(str(weights))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise ValueError(f"{weights}: does not match the model of {cfg_path}: {detail}") from None
    wrong = [k for k in result.missing_keys if is_encoder_key(k)] + list(result.unexpected_keys)
    if wrong:
        raise ValueError(f"{weights}: does not match the model of {cfg_path}: missing {sorted(result.missing_keys)[:8]}, "
                         f"unexpected {sorted(result.unexpected_keys)[:8]}")
    _drop_training_parts(model)
    return ExportedEncoder(model, config).to(device).eval()


def _drop_training_parts(model: MaskedModel) -> None:
    """Remove what ``features`` does not use, so every parameter left came from the file."""
    for stream in model.streams.values():
        for part in STREAM_PARTS_LEFT_OUT:
            if isinstance(getattr(stream, part, None), (nn.Module, nn.Parameter)):
                setattr(stream, part, None)
    if isinstance(getattr(model, "teacher", None), nn.Module):
        model.teacher = None


def load_run(run: str | Path) -> tuple[Recipe, MaskedModel, int | None]:
    """A run directory's (or checkpoint file's) recipe, model with its weights, and training step."""
    from mmim.engine.checkpoint import load_checkpoint
    from mmim.engine.run import saved_recipe

    state = load_checkpoint(run)
    recipe = recipe_from_dict(saved_recipe(run), source=str(run))
    model = build_model(recipe.model, recipe.source)
    model.load_state_dict(state["model"])
    step = state.get("step")
    return recipe, model.eval(), int(step) if step is not None else None
