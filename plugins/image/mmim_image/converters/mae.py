"""facebookresearch/mae checkpoints <-> mmim.

Official layouts (``MaskedAutoencoderViT`` and ``models_vit.VisionTransformer``, timm names):

- ``mae_visualize_vit_*.pth``: the full pre-training model, encoder and decoder.
- ``mae_pretrain_vit_*.pth``: the encoder only (``cls_token``, ``pos_embed``, ``patch_embed``,
  ``blocks``, ``norm``).
- fine-tuned checkpoints: the encoder plus ``head`` and, with global pooling, ``fc_norm``.

Files hold ``{"model": state_dict, ...}``, sometimes ``module.``-prefixed. ``pos_embed`` and
``decoder_pos_embed`` are fixed 2-D sin-cos tables with a zero cls row: mmim rebuilds them, so
they are checked against mmim's tables (a mismatch means another image or patch size) and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from mmim.checkpoint_keys import rename_key
from mmim.model import MaskedModel

# official prefix -> mmim prefix (the ``{s}`` is the image stream's name)
ENCODER_KEYS = [("cls_token", "encoder.cls_token"), ("blocks.", "encoder.blocks."), ("norm.", "encoder.norm."),
                ("patch_embed.", "streams.{s}.tokenizer.patch_embed.")]
DECODER_KEYS = [("decoder_blocks.", "streams.{s}.decoder.blocks."), ("decoder_norm.", "streams.{s}.decoder.norm."),
                ("decoder_embed.", "streams.{s}.decoder.embed."), ("decoder_pred.", "streams.{s}.decoder.head."),
                ("mask_token", "streams.{s}.decoder.mask_token")]
FIXED_TABLES = {"pos_embed": "tokenizer", "decoder_pos_embed": "decoder"}
CLASSIFIER_KEYS = ("head.", "fc_norm.")


class CheckpointFormatError(ValueError):
    """The state dict is not in the expected official layout."""


def unwrap(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """The state dict inside an official checkpoint file's dict, ``module.`` prefixes removed."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(f"expected a state dict or {{'model': state_dict}}, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def describe(checkpoint: Mapping[str, object]) -> str:
    """What an (official or not) checkpoint appears to be, for error messages."""
    wrapped = isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping)
    raw = checkpoint["model"] if wrapped else checkpoint
    keys = list(raw) if isinstance(raw, Mapping) else []
    prefixed = any(k.startswith("module.") for k in keys)
    keys = [k.removeprefix("module.") for k in keys]
    if any(k.startswith(("encoder.", "streams.")) for k in keys):
        kind = "an mmim model state dict"
    elif any(k.startswith("decoder_") for k in keys):
        kind = "a full MAE pre-training model (encoder + decoder)"
    elif any(k.startswith(CLASSIFIER_KEYS) for k in keys):
        kind = "a fine-tuned classifier (encoder + head)"
    elif any(k.startswith("blocks.") for k in keys):
        kind = "an encoder-only checkpoint"
    else:
        kind = "not a ViT checkpoint"
    notes = [n for n, on in (("wrapped in 'model'", wrapped), ("'module.'-prefixed", prefixed)) if on]
    return kind + (f" ({', '.join(notes)})" if notes else "") + f", {len(keys)} keys"



def _table_with_cls(model: MaskedModel, stream: str, where: str) -> Tensor:
    module = model.streams[stream].tokenizer.pos if where == "tokenizer" else model.streams[stream].decoder.position
    table = module.table
    return torch.cat([torch.zeros_like(table[:, :1]), table], dim=1)


def mae_to_mmim(state: Mapping[str, Tensor], model: MaskedModel, stream: str = "image",
                drop_classifier: bool = True) -> dict[str, Tensor]:
    """Map an official MAE state dict onto ``model``'s keys.

    Raises:
        CheckpointFormatError: an unknown key, or a fixed table that differs from mmim's.
    """
    out, unknown = {}, []
    for key, value in unwrap(state).items():
        if key in FIXED_TABLES:
            ours = _table_with_cls(model, stream, FIXED_TABLES[key])
            if ours.shape != value.shape or not torch.allclose(ours, value.float(), atol=1e-6):
                raise CheckpointFormatError(
                    f"{key} {tuple(value.shape)} differs from mmim's fixed sin-cos table {tuple(ours.shape)}: "
                    "the checkpoint was made for another image size, patch size or width"
                )
            continue
        if key.startswith(CLASSIFIER_KEYS):
            if drop_classifier:
                continue
            unknown.append(key)
            continue
        new = rename_key(key, ENCODER_KEYS, stream) or rename_key(key, DECODER_KEYS, stream)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointFormatError(
            f"keys not in the MAE layout: {', '.join(sorted(unknown)[:10])}; the file looks like {describe(state)}"
        )
    return out


def mmim_to_mae(model: MaskedModel, stream: str = "image", include_decoder: bool = True) -> dict[str, Tensor]:
    """The official MAE state dict of ``model`` (the inverse of :func:`mae_to_mmim`)."""
    inverse = [(new.format(s=stream), old) for old, new in ENCODER_KEYS + (DECODER_KEYS if include_decoder else [])]
    renamed = ((rename_key(key, inverse, stream), value) for key, value in model.state_dict().items())
    out = {key: value for key, value in renamed if key is not None}
    out["pos_embed"] = _table_with_cls(model, stream, "tokenizer")
    if include_decoder:
        out["decoder_pos_embed"] = _table_with_cls(model, stream, "decoder")
    return out


def load_mae_checkpoint(path: str | Path, model: MaskedModel, stream: str = "image", head: object = None) -> list[str]:
    """Load an official MAE checkpoint file into ``model``; returns the mmim keys it did not set
    (the decoder, for an encoder-only ``mae_pretrain_vit_*.pth``)."""
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointFormatError(f"{path}: cannot load: {err}") from err
    try:
        state = mae_to_mmim(checkpoint, model, stream)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{path}: {err}") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointFormatError(f"{path} ({describe(checkpoint)}): {err}") from None
    encoder_missing = [k for k in result.missing_keys if k.startswith("encoder.") or ".tokenizer." in k]
    if result.unexpected_keys or encoder_missing:
        raise CheckpointFormatError(
            f"{path} looks like {describe(checkpoint)}; it does not fit the model: first missing "
            f"{encoder_missing[:5]}, first unexpected {result.unexpected_keys[:5]}"
        )
    return list(result.missing_keys)


def _trained_positions(model: MaskedModel, stream: str) -> bool:
    from mmim.trunk.position import LearnedPositionTable

    return isinstance(model.streams[stream].tokenizer.pos, LearnedPositionTable)


def mae_classifier_to_mmim(state: Mapping[str, Tensor], classifier: torch.nn.Module,
                           stream: str = "image") -> dict[str, Tensor]:
    """Map an official fine-tuning model's state dict (``models_vit.VisionTransformer``: encoder,
    ``head``, and ``fc_norm`` with global pooling) onto an mmim
    :class:`~mmim.finetune.classifier.EncoderClassifier`'s keys.

    With trained positions (``finetune.train_positions``) ``pos_embed`` is loaded: its cls row
    into ``encoder.cls_pos``, the rest into the stream's position table; otherwise it must be
    mmim's fixed sin-cos table, as in :func:`mae_to_mmim`.

    Raises:
        CheckpointFormatError: an unknown key, a missing head, or a fixed table that differs.
    """
    backbone = classifier.backbone
    state = unwrap(state)
    encoder_state, out = {}, {}
    for key, value in state.items():
        if key.startswith(CLASSIFIER_KEYS):
            out[key] = value
        elif key == "pos_embed" and _trained_positions(backbone, stream):
            if backbone.encoder.cls_pos is None or value.shape[1] != backbone.encoder.cls_pos.shape[1] + \
                    backbone.streams[stream].tokenizer.pos.table.shape[1]:
                raise CheckpointFormatError(f"pos_embed {tuple(value.shape)} does not fit the classifier's "
                                            "cls position and position table")
            out["backbone.encoder.cls_pos"] = value[:, :1]
            out[f"backbone.streams.{stream}.tokenizer.pos.table"] = value[:, 1:]
        else:
            encoder_state[key] = value
    if "head.weight" not in out:
        raise CheckpointFormatError(f"no head.weight: the state looks like {describe(state)}, not a fine-tuned classifier")
    out.update({f"backbone.{k}": v for k, v in mae_to_mmim(encoder_state, backbone, stream).items()})
    return out


def mmim_classifier_to_mae(classifier: torch.nn.Module, stream: str = "image") -> dict[str, Tensor]:
    """The official fine-tuning model's state dict of an mmim ``EncoderClassifier`` (the inverse of
    :func:`mae_classifier_to_mmim`): ``pos_embed`` is the trained table with the cls position as
    its first row, or the fixed table with a zero cls row."""
    backbone = classifier.backbone
    out = {f"{k}": v for k, v in mmim_to_mae(backbone, stream, include_decoder=False).items()}
    if _trained_positions(backbone, stream):
        cls_pos = backbone.encoder.cls_pos
        out["pos_embed"] = torch.cat([cls_pos, backbone.streams[stream].tokenizer.pos.table], dim=1).detach()
    out.update({k: v for k, v in classifier.state_dict().items() if k.startswith(CLASSIFIER_KEYS)})
    return out


# round-trip hooks of the conformance kit (mmim check-plugin): the official file of a model, and a recipe to build one
load_mae_checkpoint.to_official = lambda model, stream: {"model": mmim_to_mae(model, stream)}
load_mae_checkpoint.example_recipe = "mae_fashion_mnist"
