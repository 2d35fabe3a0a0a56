"""MCG-NJU/VideoMAE and OpenGVLab/VideoMAEv2 checkpoints <-> mmim state dicts.

Official layouts (both repositories use the same names):

- Pre-training (``PretrainVisionTransformer``; file ``{"model": state_dict, ...}``, V2 keys maybe
  ``_orig_mod.``-prefixed by ``torch.compile``): ``encoder.patch_embed.proj``, ``encoder.blocks.N``,
  ``encoder.norm``, ``encoder_to_decoder`` (no bias), ``mask_token``, ``decoder.blocks.N``,
  ``decoder.norm``, ``decoder.head``.
- Fine-tuned (``VisionTransformer``; DeepSpeed file ``{"module": state_dict}``): ``patch_embed.proj``,
  ``blocks.N``, ``fc_norm`` (mean pooling) or ``norm``, ``head``.

Attention keeps ``qkv.weight`` with separate ``q_bias`` and ``v_bias`` (k has no bias); mmim's timm
blocks use one ``qkv.bias`` = ``[q_bias; 0; v_bias]``. Going back drops the k part, which changes
nothing: ``q . (k + b)`` shifts every logit of a query by the same ``q . b``, which softmax ignores.
The fixed sinusoid tables are not in the checkpoints; mmim's tokenizer and decoder build them.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from mmim.checkpoint_keys import rename_key
from mmim.model import MaskedModel

WRAPPERS = ("model", "module")
STRIP_PREFIXES = ("module.", "_orig_mod.")
# official prefix -> mmim prefix ("{s}" = the video stream's name); first match wins
PRETRAIN_KEYS = [("encoder.patch_embed.", "streams.{s}.tokenizer.patch_embed."), ("encoder.blocks.", "encoder.blocks."),
                 ("encoder.norm.", "encoder.norm."), ("encoder_to_decoder.", "streams.{s}.decoder.embed."),
                 ("mask_token", "streams.{s}.decoder.mask_token"), ("decoder.blocks.", "streams.{s}.decoder.blocks."),
                 ("decoder.norm.", "streams.{s}.decoder.norm."), ("decoder.head.", "streams.{s}.decoder.head.")]
FINETUNE_KEYS = [("patch_embed.", "streams.{s}.tokenizer.patch_embed."), ("blocks.", "encoder.blocks."),
                 ("norm.", "encoder.norm.")]
FINETUNE_HEAD_KEYS = ("fc_norm.", "head.")
POSITION_KEYS = ("encoder.pos_embed", "pos_embed")



def unwrap(obj: Mapping[str, object]) -> dict[str, Tensor]:
    """The state dict in an official file's dict (``"model"`` or ``"module"``), prefixes stripped."""
    state = obj
    for key in WRAPPERS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"no state dict found (top-level keys: {list(obj)[:10]})")
    out = {}
    for key, value in state.items():
        for prefix in STRIP_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def fuse_qkv_bias(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Replace every ``*.q_bias``/``*.v_bias`` pair by ``*.qkv.bias`` = ``[q_bias; zeros; v_bias]``."""
    out = {}
    for key, value in state.items():
        if key.endswith(".v_bias"):
            continue
        if key.endswith(".q_bias"):
            stem = key.removesuffix("q_bias")
            v_bias = state.get(stem + "v_bias")
            if v_bias is None:
                raise KeyError(f"{key} has no matching {stem}v_bias")
            out[stem + "qkv.bias"] = torch.cat([value, torch.zeros_like(value), v_bias])
        else:
            out[key] = value
    return out


def split_qkv_bias(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`fuse_qkv_bias`: ``*.qkv.bias`` -> ``*.q_bias``, ``*.v_bias`` (k part dropped)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".qkv.bias"):
            stem = key.removesuffix("qkv.bias")
            q, _, v = value.chunk(3)
            out[stem + "q_bias"], out[stem + "v_bias"] = q, v
        else:
            out[key] = value
    return out


def official_to_mmim(state: Mapping[str, Tensor], stream: str = "video") -> dict[str, Tensor]:
    """Map an official pre-training state dict (VideoMAE or VideoMAE v2) onto mmim keys.

    Raises:
        KeyError: a key of neither the encoder nor the decoder (e.g. a learned ``pos_embed``).
    """
    out = {}
    for key, value in fuse_qkv_bias(unwrap(state)).items():
        new = rename_key(key, PRETRAIN_KEYS, stream)
        if new is None:
            raise KeyError(f"official VideoMAE key {key!r} has no mmim counterpart")
        out[new] = value
    return out


def mmim_to_official(state: Mapping[str, Tensor], stream: str = "video") -> dict[str, Tensor]:
    """Map an mmim state dict (one video stream, ``videomae`` decoder) back to official pre-training keys."""
    inverse = [(new.format(s=stream), old) for old, new in PRETRAIN_KEYS]
    out = {}
    for key, value in state.items():
        old = rename_key(key, inverse, stream)
        if old is None:
            raise KeyError(f"mmim key {key!r} has no official VideoMAE counterpart")
        out[old] = value
    return split_qkv_bias(out)


def finetuned_to_mmim(state: Mapping[str, Tensor], stream: str = "video") -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Split a fine-tuned checkpoint into mmim encoder weights and its classifier.

    Returns:
        ``(encoder, head)``: ``encoder`` in mmim keys (load with ``strict=False``); ``head`` keeps
        ``fc_norm.*`` and ``head.*`` under their official names (logits = ``head(fc_norm(mean of the
        last block's tokens))``; with ``fc_norm`` the per-token ``encoder.norm`` is absent).
    """
    encoder, head = {}, {}
    for key, value in fuse_qkv_bias(unwrap(state)).items():
        if key.startswith(FINETUNE_HEAD_KEYS):
            head[key] = value
        elif key not in POSITION_KEYS:
            new = rename_key(key, FINETUNE_KEYS, stream)
            if new is None:
                raise KeyError(f"fine-tuned VideoMAE key {key!r} has no mmim counterpart")
            encoder[new] = value
    return encoder, head


def load_official_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The state dict of an official ``.pth`` (``weights_only``; ``args`` Namespace allowed) or ``.safetensors`` file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    try:
        return unwrap(obj)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def is_pretraining(state: Mapping[str, Tensor]) -> bool:
    return any(k.startswith(("encoder.", "encoder_to_decoder")) for k in state)


def load_videomae_checkpoint(path: str | Path, model: MaskedModel, stream: str = "video", head: object = None) -> list[str]:
    """Load an official pre-training or fine-tuned VideoMAE / VideoMAE v2 file into ``model``
    (the ``videomae`` converter: ``--init videomae:checkpoint.pth``).

    Returns:
        the mmim keys the file did not set (decoder and ``encoder.norm`` for a fine-tuned file).

    Raises:
        ValueError: the file does not fit the model.
    """
    state = load_official_checkpoint(path)
    try:
        mapped = official_to_mmim(state, stream) if is_pretraining(state) else finetuned_to_mmim(state, stream)[0]
        result = model.load_state_dict(mapped, strict=False)
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: not a VideoMAE checkpoint for this model: {err}") from err
    allowed = ("encoder.norm.", f"streams.{stream}.decoder.")
    missing = [k for k in result.missing_keys if not k.startswith(allowed)]
    if result.unexpected_keys or missing:
        raise ValueError(f"{path}: does not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    return list(result.missing_keys)


# round-trip hooks of the conformance kit (mmim check-plugin): the official file of a model, and a recipe to build one
load_videomae_checkpoint.to_official = lambda model, stream: {"model": mmim_to_official(model.state_dict(), stream)}
load_videomae_checkpoint.example_recipe = "videomae_moving_fashion"
