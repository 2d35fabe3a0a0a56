"""facebookresearch/AudioMAE checkpoints <-> mmim state dicts.

Pre-trained checkpoints (``pretrained.pth``: ``{"model": MaskedAutoencoderViT.state_dict(), ...}``)
hold the encoder and the decoder (local, ``decoder_mode=1``, for the released ViT-B; a
``decoder_mode=0`` global decoder maps the same way onto the core ``mae`` decoder). Keys map by
prefix; the fixed sin-cos tables ``pos_embed``/``decoder_pos_embed`` are not parameters in mmim
(the tokenizer rebuilds them) and are checked against the model's tables when loading.

Fine-tuned checkpoints (``finetuned.pth``, a timm-style ``VisionTransformer`` with global pooling)
give the encoder blocks; their ``fc_norm`` normalises the *pooled* feature, which mmim's per-token
``encoder.norm`` is not, so it is returned with the classifier ``head`` rather than mapped.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from mmim.checkpoint_keys import rename_key
from mmim.model import MaskedModel
from mmim_audio.tokenizer import spectrogram_position_table

# official prefix -> mmim prefix ("{s}" = the audio stream's name); first match wins
ENCODER_KEYS = [("patch_embed.", "streams.{s}.tokenizer.patch_embed."), ("cls_token", "encoder.cls_token"),
                ("blocks.", "encoder.blocks."), ("norm.", "encoder.norm.")]
DECODER_KEYS = [("decoder_embed.", "streams.{s}.decoder.embed."), ("mask_token", "streams.{s}.decoder.mask_token"),
                ("decoder_blocks.", "streams.{s}.decoder.blocks."), ("decoder_norm.", "streams.{s}.decoder.norm."),
                ("decoder_pred.", "streams.{s}.decoder.head.")]
POSITION_KEYS = ("pos_embed", "decoder_pos_embed")
FINETUNE_HEAD_KEYS = ("fc_norm.", "head.")



def load_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The model state dict of an official checkpoint file (``.pth`` with a ``"model"`` entry, or ``.safetensors``).

    ``.pth`` files are read with ``weights_only=True`` (their ``args`` entry, an ``argparse.Namespace``,
    is the one extra type allowed), so loading one runs no code from the file.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: no state dict found (top-level keys: {list(obj)[:10]})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def official_to_mmim(state: Mapping[str, Tensor], stream: str = "audio") -> dict[str, Tensor]:
    """Map an official pre-training state dict onto mmim keys (position tables dropped).

    Raises:
        KeyError: a key that belongs to neither the encoder nor the decoder.
    """
    out = {}
    for key, value in state.items():
        if key in POSITION_KEYS:
            continue
        new = rename_key(key, DECODER_KEYS, stream) or rename_key(key, ENCODER_KEYS, stream)
        if new is None:
            raise KeyError(f"official Audio-MAE key {key!r} has no mmim counterpart")
        out[new] = value
    return out


def mmim_to_official(state: Mapping[str, Tensor], grid: tuple[int, int] = (64, 8), stream: str = "audio",
                     pos_layout: str = "audiomae") -> dict[str, Tensor]:
    """Map an mmim state dict (one audio stream) back to official keys, with the fixed tables rebuilt.

    Args:
        state: ``MaskedModel.state_dict()``.
        grid: the stream's ``(T', F')`` token grid (``(64, 8)`` for 1024 x 128 input, patch 16).
        stream: the audio stream's name.
        pos_layout: the tokenizer's table layout; official checkpoints use ``"audiomae"``.

    Returns:
        official keys incl. ``pos_embed`` ``(1, 1 + L, D)`` and, with a decoder, ``decoder_pos_embed``
        (a zero row for cls first, as the official tables have).
    """
    inverse_rules = [(new.format(s=stream), old) for old, new in DECODER_KEYS + ENCODER_KEYS]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        old = rename_key(key, inverse_rules, stream)
        if old is None:
            raise KeyError(f"mmim key {key!r} has no official Audio-MAE counterpart")
        out[old] = value
    for name, width_key in (("pos_embed", "cls_token"), ("decoder_pos_embed", "mask_token")):
        if width_key in out:
            table = spectrogram_position_table(out[width_key].shape[-1], grid, pos_layout)
            out[name] = torch.cat([torch.zeros(1, table.shape[1]), table]).unsqueeze(0)
    return out


def finetuned_to_mmim(state: Mapping[str, Tensor],
                      stream: str = "audio") -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a fine-tuned checkpoint into mmim encoder weights and its pooled-feature head.

    Returns:
        ``(encoder, head)``: ``encoder`` has mmim keys (load with ``strict=False``: ``encoder.norm.*``
        and the decoder are not in it); ``head`` keeps ``fc_norm.*`` and ``head.*`` under their
        official names (logits = ``head(fc_norm(mean over tokens of the last block's output)))``.
    """
    encoder, head = {}, {}
    for key, value in state.items():
        if key.startswith(FINETUNE_HEAD_KEYS):
            head[key] = value
        elif key not in POSITION_KEYS:
            new = rename_key(key, ENCODER_KEYS, stream)
            if new is None:
                raise KeyError(f"fine-tuned Audio-MAE key {key!r} has no mmim counterpart")
            encoder[new] = value
    return encoder, head


def check_position_tables(model: MaskedModel, state: Mapping[str, Tensor], stream: str = "audio",
                          same_grid: bool = True, atol: float = 1e-6) -> None:
    """Compare the checkpoint's fixed sin-cos tables with the ones the model builds.

    Args:
        same_grid: a table of another length (a checkpoint made for another input length, e.g.
            AudioSet's 1024 frames for ESC-50's 512) is an error; with ``False`` it is ignored, as
            the tables are fixed, not learned, and mmim builds its own for the model's grid.

    Raises:
        ValueError: a table of the same length with other values (another ``pos_layout`` or width),
            or of another length when ``same_grid``.
    """
    s = model.streams[stream]
    pairs = [("pos_embed", s.tokenizer.pos), ("decoder_pos_embed", getattr(s.decoder, "position", None))]
    for key, module in pairs:
        if key not in state or module is None:
            continue
        ours, theirs = module.table[0], state[key][0, 1:]
        if theirs.shape != ours.shape:
            if same_grid or theirs.shape[-1] != ours.shape[-1]:
                raise ValueError(f"checkpoint {key} {tuple(theirs.shape)} does not fit the model's table "
                                 f"{tuple(ours.shape)}: check the tokenizer's input_size and patch_size")
        elif not torch.allclose(theirs.float(), ours, atol=atol):
            raise ValueError(f"checkpoint {key} differs from the model's fixed table: check the tokenizer's pos_layout")


def load_official_into(model: MaskedModel, state: Mapping[str, Tensor], stream: str = "audio") -> None:
    """Load an official pre-training state dict into ``model`` (strict), checking the position tables."""
    check_position_tables(model, state, stream)
    model.load_state_dict(official_to_mmim(state, stream), strict=True)


def load_audiomae_checkpoint(path: str | Path, model: MaskedModel, stream: str = "audio", head: object = None) -> list[str]:
    """Load an official pre-trained or fine-tuned checkpoint file into ``model`` (the ``audiomae``
    converter: ``mmim finetune ... --init audiomae:pretrained.pth``).

    Returns:
        the mmim keys the file did not set (the decoder and ``encoder.norm`` for a fine-tuned file).

    Raises:
        ValueError: the file does not fit the model (other sizes, missing encoder weights, foreign keys).
    """
    state = load_official_checkpoint(path)
    try:
        check_position_tables(model, state, stream, same_grid=False)
        finetuned = any(k.startswith(FINETUNE_HEAD_KEYS) for k in state)
        mapped = finetuned_to_mmim(state, stream)[0] if finetuned else official_to_mmim(state, stream)
        result = model.load_state_dict(mapped, strict=False)
    except (KeyError, RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: not an Audio-MAE checkpoint for this model: {err}") from err
    allowed = ("encoder.norm.", f"streams.{stream}.decoder.")
    missing_encoder = [k for k in result.missing_keys if not k.startswith(allowed)]
    if result.unexpected_keys or missing_encoder:
        raise ValueError(f"{path}: does not fit the model: missing {missing_encoder[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    return list(result.missing_keys)


# round-trip hooks of the conformance kit (mmim check-plugin): the official file of a model, and a recipe to build one
load_audiomae_checkpoint.to_official = lambda model, stream: {"model": mmim_to_official(
    model.state_dict(), grid=model.streams[stream].tokenizer.grid, stream=stream,
    pos_layout=model.streams[stream].tokenizer.pos_layout)}
load_audiomae_checkpoint.example_recipe = "audiomae_spoken_digits"
