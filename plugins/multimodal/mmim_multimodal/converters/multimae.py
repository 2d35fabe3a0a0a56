"""EPFL-VILAB/MultiMAE checkpoints -> mmim fused models.

Official layout (``MultiMAE``): ``global_tokens`` (1, G, D); ``input_adapters.<task>.*`` (patch
adapters: ``proj`` conv + fixed ``pos_emb``; the semseg adapter: ``class_emb`` + ``proj``);
``encoder.<i>.*`` (timm-style blocks, no final norm); ``output_adapters.<domain>.*``
(``proj_context``, ``mask_token``, ``task_embeddings.<task>``, fixed ``pos_emb``, cross-attention
``decoder.{q,kv,proj}``, ``query_norm``/``context_norm``/``out_norm``, ``mlp``,
``decoder_transformer.<i>``, ``out_proj``). Files hold ``{"model": state_dict, ...}``.

The mmim model names its streams after the official tasks (``rgb``, ``depth``, ``semseg``,
``norm_rgb`` as ``tokens_of: rgb``) unless ``streams`` maps them. ``out_proj`` rows are laid out
``(channel, patch row, patch column)`` officially; for image-patch streams they are permuted to
mmim's content order ``(row, column, channel)``; class-map streams keep the channel-major order
their ``cross_entropy`` loss reads. Fixed ``pos_emb`` tables are checked against mmim's and dropped (and rebuilt by
:func:`mmim_to_multimae`). ``global_tokens`` ``(1, G, D)`` become the encoder's ``G`` prefix tokens
(``model.encoder.num_prefix_tokens: G``); MultiMAE appends them after the task tokens, mmim
prepends them, which attention does not see.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from mmim.checkpoint_keys import rename_key
from mmim.model import MaskedModel
from mmim.trunk.grid_patch import GridPatchTokenizer


class CheckpointFormatError(ValueError):
    """The state dict is not in the MultiMAE layout or does not fit the model."""


DECODER_RENAMES = [("decoder.", "xattn."), ("decoder_transformer.", "blocks.")]
DECODER_RENAMES_BACK = [(new, old) for old, new in DECODER_RENAMES]


def unwrap(checkpoint: object) -> dict[str, Tensor]:
    """The state dict inside a MultiMAE file (``{"model": ...}``), ``module.`` prefixes removed."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, Mapping) else checkpoint
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(f"expected a state dict or {{'model': state_dict}}, got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if not any(k.startswith(("input_adapters.", "output_adapters.")) for k in state):
        looks = "an mmim model state dict" if any(k.startswith("streams.") for k in state) else \
            "a timm/MAE ViT (no input/output adapters)" if any(k.startswith(("blocks.", "patch_embed.")) for k in state) \
            else f"keys {sorted(state)[:4]}"
        raise CheckpointFormatError(f"not a MultiMAE checkpoint: it looks like {looks}")
    return state


def _image_grid_table(pos_emb: Tensor) -> Tensor:
    """Official ``(1, D, h, w)`` table -> ``(h*w, D)`` in token order."""
    return rearrange(pos_emb[0], "d h w -> (h w) d")


def _check_table(official: Tensor, mine: Tensor, what: str) -> None:
    table = _image_grid_table(official)
    if table.shape != mine.shape[-2:] or not torch.allclose(table, mine.reshape(table.shape), atol=1e-5):
        raise CheckpointFormatError(f"{what}: the fixed position table {tuple(table.shape)} differs from the model's "
                                    f"{tuple(mine.shape[-2:])} (another image/patch size, or pos_layout is not 'multimae'?)")


def _official_table(table: Tensor, grid: tuple[int, int]) -> Tensor:
    """mmim's ``(..., h*w, D)`` table -> the official ``(1, D, h, w)`` ``pos_emb``."""
    return rearrange(table.reshape(grid[0] * grid[1], -1), "(h w) d -> 1 d h w", h=grid[0]).contiguous()


def _out_proj_back(value: Tensor, tokenizer: object) -> Tensor:
    """Inverse of :func:`_out_proj`: the stream's content order back to ``(c, ph, pw)`` rows."""
    if isinstance(tokenizer, GridPatchTokenizer):
        p, q = tokenizer.patch_size
        return rearrange(value, "(p q c) ... -> (c p q) ...", p=p, q=q)
    return value


def _out_proj(value: Tensor, tokenizer: object) -> Tensor:
    """Permute ``out_proj`` rows from MultiMAE's ``(c, ph, pw)`` to the stream's content order."""
    if isinstance(tokenizer, GridPatchTokenizer):
        p, q = tokenizer.patch_size
        pattern = "(c p q) ... -> (p q c) ..."
        return rearrange(value, pattern, p=p, q=q)
    return value


def multimae_to_mmim(state: Mapping[str, Tensor], model: MaskedModel,
                     streams: Mapping[str, str] | None = None) -> dict[str, Tensor]:
    """Map an official state dict onto ``model``'s keys (``streams``: official task -> mmim stream)."""
    if model.fusion is None:
        raise CheckpointFormatError("MultiMAE checkpoints load into fused models (a recipe with model.fusion)")
    rename = dict(streams or {})
    name = lambda task: rename.get(task, task)  # noqa: E731
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "global_tokens":
            have = model.encoder.num_prefix
            if value.ndim != 3 or value.shape[1] != have:
                raise CheckpointFormatError(
                    f"global_tokens {tuple(value.shape)}: {value.shape[1] if value.ndim == 3 else '?'} global tokens, "
                    f"the model's encoder has {have} (set model.encoder.num_prefix_tokens, and cls_token: true)")
            out["encoder.cls_token"] = value
            continue
        if m := re.match(r"encoder\.(\d+)\.(.*)", key):
            out[f"encoder.blocks.{m[1]}.{m[2]}"] = value
            continue
        if m := re.match(r"input_adapters\.([^.]+)\.(.*)", key):
            stream = name(m[1])
            if stream not in model.streams or model.streams[stream].tokenizer is None:
                raise CheckpointFormatError(f"{key}: the model has no tokenized stream {stream!r}")
            tok = model.streams[stream].tokenizer
            rest = m[2]
            if rest == "pos_emb":
                _check_table(value, tok.pos.table, key)
                continue
            if isinstance(tok, GridPatchTokenizer) and rest.startswith("proj."):
                rest = "patch_embed." + rest
            out[f"streams.{stream}.tokenizer.{rest}"] = value
            continue
        if m := re.match(r"output_adapters\.([^.]+)\.(.*)", key):
            stream = name(m[1])
            if stream not in model.streams or model.streams[stream].decoder is None:
                raise CheckpointFormatError(f"{key}: the model has no predicted stream {stream!r}")
            decoder = model.streams[stream].decoder
            rest = m[2]
            if rest == "pos_emb":
                _check_table(value, decoder.positions[decoder.stream].table, key)
                continue
            if rest.startswith("task_embeddings."):
                rest = "task_embeddings." + name(rest.split(".", 1)[1])
            rest = rename_key(rest, DECODER_RENAMES, stream) or rest
            if rest.startswith("out_proj."):
                value = _out_proj(value, model.streams[model.token_source(stream)].tokenizer)
            out[f"streams.{stream}.decoder.{rest}"] = value
            continue
        raise CheckpointFormatError(f"{key}: not a MultiMAE key")
    return out


def mmim_to_multimae(model: MaskedModel, streams: Mapping[str, str] | None = None) -> dict[str, Tensor]:
    """``model``'s state dict in the official ``MultiMAE`` layout (``streams``: official task -> mmim
    stream, as for :func:`multimae_to_mmim`); the fixed ``pos_emb`` tables are written out too."""
    if model.fusion is None:
        raise CheckpointFormatError("MultiMAE checkpoints come from fused models (a recipe with model.fusion)")
    task_of = {v: k for k, v in (streams or {}).items()}
    task = lambda stream: task_of.get(stream, stream)  # noqa: E731
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key == "encoder.cls_token":
            out["global_tokens"] = value
        elif m := re.match(r"encoder\.blocks\.(\d+)\.(.*)", key):
            out[f"encoder.{m[1]}.{m[2]}"] = value
        elif m := re.match(r"streams\.([^.]+)\.tokenizer\.(.*)", key):
            out[f"input_adapters.{task(m[1])}.{m[2].removeprefix('patch_embed.')}"] = value
        elif m := re.match(r"streams\.([^.]+)\.decoder\.(.*)", key):
            rest = rename_key(m[2], DECODER_RENAMES_BACK, m[1]) or m[2]
            if rest.startswith("task_embeddings."):
                rest = "task_embeddings." + task(rest.split(".", 1)[1])
            if rest.startswith("out_proj."):
                value = _out_proj_back(value, model.streams[model.token_source(m[1])].tokenizer)
            out[f"output_adapters.{task(m[1])}.{rest}"] = value
        else:
            raise CheckpointFormatError(f"{key}: no MultiMAE counterpart (MultiMAE has no encoder norm or cls position)")
    for name, stream in model.streams.items():
        if stream.tokenizer is not None and getattr(stream.tokenizer, "pos_layout", "multimae") != "multimae":
            raise CheckpointFormatError(f"stream {name!r}: pos_layout {stream.tokenizer.pos_layout!r}; MultiMAE's "
                                        "fixed tables need pos_layout: multimae")
        if stream.tokenizer is not None:
            out[f"input_adapters.{task(name)}.pos_emb"] = _official_table(stream.tokenizer.pos.table, stream.tokenizer.grid)
        if stream.decoder is not None:
            dec = stream.decoder
            grid = model.streams[model.token_source(name)].tokenizer.grid
            out[f"output_adapters.{task(name)}.pos_emb"] = _official_table(dec.positions[dec.stream].table, grid)
    return out


def load_multimae_checkpoint(path: str | Path, model: MaskedModel, streams: Mapping[str, str] | None = None,
                             encoder_only: bool = False, head: object = None) -> list[str]:
    """Load an official MultiMAE file into ``model``; returns the model keys it did not set.

    Output adapters of domains the model does not predict (e.g. ``norm_rgb``) are an error unless
    ``encoder_only`` (then every ``output_adapters.*`` key is skipped, as MultiMAE's fine-tuning does).
    """
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointFormatError(f"{path}: cannot read a PyTorch checkpoint: {err}") from err
    try:
        state = unwrap(raw)
        if encoder_only:
            state = {k: v for k, v in state.items() if not k.startswith("output_adapters.")}
        mapped = multimae_to_mmim(state, model, streams)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(f"{path}: {err}") from None
    own = model.state_dict()
    for key, value in mapped.items():
        if key not in own:
            raise CheckpointFormatError(f"{path}: {key} does not exist in the model")
        if own[key].shape != value.shape:
            raise CheckpointFormatError(f"{path}: {key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}")
    model.load_state_dict(mapped, strict=False)
    return sorted(set(own) - set(mapped))


# round-trip hooks for the conformance kit (mmim check-plugin): the model in the official layout, and a recipe to build it
load_multimae_checkpoint.to_official = lambda model, stream: {"model": mmim_to_multimae(model)}
load_multimae_checkpoint.example_recipe = "multimae_vit_b16_rgb_depth_semseg"
