"""Official Point-MAE checkpoints <-> mmim state dicts, and the matching mmim model config.

Point-MAE's ``tools/builder.py`` saves ``{"base_model": state_dict, "optimizer", "epoch", "metrics",
"best_metrics"}``; keys may carry a ``module.`` prefix (``DataParallel``), which every official
loader strips. Two model classes use that layout:

* ``Point_MAE`` (pre-training, ``pretrain.pth``): ``MAE_encoder.{encoder,pos_embed,blocks.blocks.N,norm}``,
  ``mask_token``, ``decoder_pos_embed``, ``MAE_decoder.{blocks.N,norm}``, ``increase_dim.0``.
* ``PointTransformer`` (fine-tuned classifiers, ``modelnet_1k.pth``, ``scan_hardest.pth``, ...):
  ``cls_token``, ``cls_pos``, ``encoder``, ``pos_embed``, ``blocks.blocks.N``, ``norm``, and the
  classification head ``cls_head_finetune.*``: mmim's fine-tuning ``head: mlp`` has the same
  layout (``head.N.*`` is ``cls_head_finetune.N.*``), and ``load_pointmae_checkpoint(..., head=)``
  fills it.

In mmim the mini-PointNet and encoder position MLP live in the stream's tokenizer, the blocks and
final norm in the shared encoder, and the rest in the stream's ``pointmae`` decoder.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmim.config.recipe import ModelConfig, StreamConfig
from mmim.trunk.encoder import EncoderConfig

HEAD_PREFIX = "cls_head_finetune."
log = logging.getLogger(__name__)


def _pretrain_renames(stream: str) -> list[tuple[str, str]]:
    s = f"streams.{stream}."
    return [
        ("MAE_encoder.blocks.blocks.", "encoder.blocks."), ("MAE_encoder.norm.", "encoder.norm."),
        ("MAE_encoder.encoder.", s + "tokenizer.encoder."), ("MAE_encoder.pos_embed.", s + "tokenizer.pos_embed."),
        ("mask_token", s + "decoder.mask_token"), ("decoder_pos_embed.", s + "decoder.position."),
        ("MAE_decoder.blocks.", s + "decoder.blocks."), ("MAE_decoder.norm.", s + "decoder.norm."),
        ("increase_dim.", s + "decoder.increase_dim."),
    ]


def _finetune_renames(stream: str) -> list[tuple[str, str]]:
    s = f"streams.{stream}."
    return [
        ("cls_token", "encoder.cls_token"), ("cls_pos", "encoder.cls_pos"), ("blocks.blocks.", "encoder.blocks."),
        ("norm.", "encoder.norm."), ("encoder.", s + "tokenizer.encoder."), ("pos_embed.", s + "tokenizer.pos_embed."),
    ]


def _rename(state: Mapping[str, Tensor], renames: list[tuple[str, str]], what: str) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for old, new in renames:
            if key == old or (old.endswith(".") and key.startswith(old)):
                out[new + key[len(old):]] = value
                break
        else:
            raise KeyError(f"{what}: no mapping for key {key!r}")
    return out


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` (DataParallel/DDP) prefix from every key, as the official loaders do."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def official_state_dict(checkpoint: Mapping[str, Any] | str | Path, weights_only: bool = True) -> dict[str, Tensor]:
    """The model state of an official checkpoint file or loaded object, ``module.`` stripped.

    Accepts the ``base_model`` layout of ``tools/builder.py``, a top-level ``model`` key, or a bare
    state dict. ``weights_only=True`` refuses pickled objects other than tensors and plain data;
    pass ``False`` only for files you trust.
    """
    if isinstance(checkpoint, (str, Path)):
        try:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=weights_only)
        except Exception as err:
            raise ValueError(f"{checkpoint}: cannot load checkpoint ({type(err).__name__}: {err}); if the file "
                             f"is trusted and holds pickled objects, pass weights_only=False") from err
    for key in ("base_model", "model"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    state = strip_prefixes(checkpoint)
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"not a Point-MAE state dict: non-tensor entries {bad[:5]}")
    return state


def is_finetune_state(state: Mapping[str, Tensor]) -> bool:
    """True for ``PointTransformer`` (fine-tuned) keys, False for ``Point_MAE`` (pre-training) keys."""
    if any(k.startswith("MAE_encoder.") for k in state):
        return False
    if "cls_token" in state or any(k.startswith("blocks.blocks.") for k in state):
        return True
    raise ValueError("neither Point_MAE (MAE_encoder.*) nor PointTransformer (cls_token, blocks.blocks.*) keys found")


def pointmae_to_mmim(state: Mapping[str, Tensor], stream: str = "points") -> dict[str, Tensor]:
    """``Point_MAE.state_dict()`` (pre-training) -> a ``MaskedModel`` state dict (strict-loadable)."""
    return _rename(strip_prefixes(state), _pretrain_renames(stream), "Point_MAE state dict")


def mmim_to_pointmae(state: Mapping[str, Tensor], stream: str = "points") -> dict[str, Tensor]:
    """Inverse of :func:`pointmae_to_mmim`; fails on parts Point-MAE lacks (cls token, decoder ``embed``)."""
    inverse = [(new, old) for old, new in _pretrain_renames(stream)]
    return _rename(state, inverse, "mmim state dict (for Point_MAE)")


def pointtransformer_to_mmim(state: Mapping[str, Tensor], stream: str = "points") -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Fine-tuned ``PointTransformer`` state -> (mmim encoder + tokenizer state, classification head state).

    The mmim model needs ``EncoderConfig(cls_token=True, cls_pos=True, pos_every_block=True)``; load
    the first dict with ``strict=False`` (the decoder is not part of a fine-tuned checkpoint). The
    head dict keeps the official keys without the ``cls_head_finetune.`` prefix
    (``{0,4,8}`` Linear, ``{1,5}`` BatchNorm1d).
    """
    state = strip_prefixes(state)
    head = {k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    body = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)}
    return _rename(body, _finetune_renames(stream), "PointTransformer state dict"), head


def mmim_to_pointtransformer(state: Mapping[str, Tensor], head: Mapping[str, Tensor] | None = None,
                             stream: str = "points") -> dict[str, Tensor]:
    """Inverse of :func:`pointtransformer_to_mmim`; decoder keys of ``state`` are ignored."""
    inverse = [(new, old) for old, new in _finetune_renames(stream)]
    decoder = f"streams.{stream}.decoder."
    out = _rename({k: v for k, v in state.items() if not k.startswith(decoder)}, inverse, "mmim state dict (for PointTransformer)")
    out.update({HEAD_PREFIX + k: v for k, v in (head or {}).items()})
    return out


def pointmae_model_config(trans_dim: int = 384, depth: int = 12, num_heads: int = 6, decoder_depth: int = 4,
                          decoder_num_heads: int = 6, num_group: int = 64, group_size: int = 32, mask_ratio: float = 0.6,
                          mask_type: str = "rand", drop_path_rate: float = 0.1, finetune: bool = False,
                          stream: str = "points") -> ModelConfig:
    """The mmim ``ModelConfig`` of an official Point-MAE config (``cfgs/pretrain.yaml`` names and defaults).

    ``finetune=True`` gives the ``PointTransformer`` encoder (cls token with its own position).
    """
    if mask_type not in ("rand", "block"):
        raise ValueError(f"mask_type must be 'rand' or 'block', got {mask_type!r}")
    encoder = EncoderConfig(embed_dim=trans_dim, depth=depth, num_heads=num_heads, mlp_ratio=4.0, qkv_bias=False,
                            norm_eps=1e-5, cls_token=finetune, cls_pos=finetune, pos_every_block=True,
                            drop_path=drop_path_rate)
    masker = {"name": "point_random" if mask_type == "rand" else "point_block", "ratio": mask_ratio}
    spec = StreamConfig(
        tokenizer={"name": "point_patch", "num_group": num_group, "group_size": group_size},
        masker=masker, target={"name": "content", "normalize": False}, loss={"name": "chamfer_l2"},
        decoder={"name": "pointmae", "embed_dim": trans_dim, "depth": decoder_depth, "num_heads": decoder_num_heads,
                 "qkv_bias": False, "norm_eps": 1e-5, "drop_path": drop_path_rate},
    )
    return ModelConfig(encoder=encoder, streams={stream: spec}, pool="cls" if finetune else "mean")


def load_pointmae_checkpoint(path: str | Path, model: Any, stream: str = "points", head: Any = None) -> list[str]:
    """Load an official Point-MAE file (``pretrain.pth`` or a fine-tuned ``PointTransformer``) into ``model``.

    The plugin's ``converter`` (``mmim finetune ... --init pointmae:pretrain.pth``). A pre-training
    checkpoint fills tokenizer, encoder and decoder; a fine-tuned one fills tokenizer and encoder
    (cls token and position included) and, when ``head`` is given (the fine-tuning classifier's
    ``head: mlp`` module, as ``mmim finetune`` passes it), the classification head
    ``cls_head_finetune`` too. A head of another shape (other classes, a linear head) stays fresh,
    with a warning. A cls token the checkpoint lacks stays freshly initialised, as in the official
    fine-tuning.

    Returns:
        the model keys the checkpoint did not set.

    Raises:
        ValueError: naming the file when it does not fit the model.
    """
    state = official_state_dict(path)
    head_state: dict[str, Tensor] = {}
    if is_finetune_state(state):
        body, head_state = pointtransformer_to_mmim(state, stream)
    else:
        body = pointmae_to_mmim(state, stream)
    try:
        result = model.load_state_dict(body, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path}: does not fit the model: {err}") from None
    fresh = ("encoder.cls_token", "encoder.cls_pos")
    missing = [k for k in result.missing_keys if (k.startswith("encoder.") or ".tokenizer." in k) and k not in fresh]
    if missing or result.unexpected_keys:
        hint = " (a fine-tuned checkpoint needs model.encoder.cls_token and cls_pos true)" if any(
            k in fresh for k in result.unexpected_keys) else ""
        raise ValueError(f"{path}: does not fit the model{hint}: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    if head is not None and head_state:
        load_head(path, head_state, head)
    return list(result.missing_keys)


def load_head(path: str | Path, head_state: Mapping[str, Tensor], head: Any) -> bool:
    """Copy ``cls_head_finetune`` weights (prefix stripped) into ``head`` if keys and shapes all match."""
    own = head.state_dict()
    mismatch = sorted(set(own) ^ set(head_state)) or [k for k in own if own[k].shape != head_state[k].shape]
    if mismatch:
        log.warning("%s: classification head not loaded (keys or shapes differ from the model's head: %s); "
                    "it stays freshly initialised", path, mismatch[:4])
        return False
    head.load_state_dict(dict(head_state))
    log.info("%s: loaded the classification head cls_head_finetune", path)
    return True


# round-trip hooks of the conformance kit (mmim check-plugin): the official file of a model, and a recipe to build one
load_pointmae_checkpoint.to_official = lambda model, stream: {"base_model": mmim_to_pointmae(model.state_dict(), stream)}
load_pointmae_checkpoint.example_recipe = "pointmae_primitives"
