"""Hugging Face ``transformers`` ViTMAE <-> mmim image models, both ways.

- :func:`export_transformers` (the ``transformers`` exporter: ``mmim export RUN --format transformers``)
  writes a ``save_pretrained`` folder that ``ViTMAEForPreTraining.from_pretrained`` loads with no
  missing or unexpected key, decoder included (``AutoModel`` gives the encoder); a model whose
  decoder ViTMAE cannot hold (SimMIM, MaskFeat, data2vec-style) is written as its encoder alone, a
  ``ViTMAEModel`` folder.
- :func:`load_transformers_checkpoint` (the ``hf`` converter: ``--init hf:DIR``) loads such a folder,
  or any ``ViTMAEForPreTraining`` / ``ViTMAEModel`` folder, into a recipe's model.

What maps to what (mmim key -> transformers key, ``vit.layers.N`` in the newer transformers naming,
``vit.encoder.layer.N`` in the older one; both are read and the installed one is written):

===========================================  ==================================================
``streams.S.tokenizer.patch_embed.proj``     ``vit.embeddings.patch_embeddings.projection``
``encoder.cls_token``                        ``vit.embeddings.cls_token``
fixed 2-D sin-cos table (+ ``cls_pos``)      ``vit.embeddings.position_embeddings`` (row 0: cls)
``encoder.blocks.N.attn.qkv`` (fused)        ``...attention.{q,k,v}_proj`` (split in three)
``encoder.blocks.N.{norm1,norm2}``           ``...layernorm_{before,after}``
``encoder.blocks.N.attn.proj``, ``mlp.fc*``  ``...attention.o_proj``, ``mlp.fc*``
``encoder.norm``                             ``vit.layernorm``
``streams.S.decoder.{embed,norm,head}``      ``decoder.decoder_{embed,norm,pred}``
``streams.S.decoder.mask_token``, blocks     ``decoder.mask_token``, ``decoder.decoder_layers.N``
decoder's fixed table                        ``decoder.decoder_pos_embed`` (zero cls row)
===========================================  ==================================================

The config written carries ``layer_norm_eps`` (timm's 1e-6, not transformers' default 1e-12), the
decoder's width, depth, heads and MLP size, ``mask_ratio`` from the masker and ``norm_pix_loss``
from the ``content`` target. ViTMAE's ``noise`` argument masks as mmim's ``random`` masker does
(``argsort(noise)``, the ``int(L * (1 - ratio))`` lowest kept, in that order):
:func:`mask_from_noise` gives the same mask as an mmim :class:`~mmim.types.StreamMask`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmim.model import MaskedModel
from mmim.timm_compat import import_transformers
from mmim.transformers_interop import (
    NAMINGS,
    TransformersFormatError,
    blocks_from_hf,
    blocks_to_hf,
    check_loaded,
    find_naming,
    load_folder,
    save_checked,
)
from mmim.types import StreamMask

log = logging.getLogger(__name__)

MODEL_TYPES = ("vit_mae",)
PRETRAINING_CLASS = "ViTMAEForPreTraining"
ENCODER_LAYERS = {"current": "vit.layers.", "legacy": "vit.encoder.layer."}
DECODER_LAYERS = {"current": "decoder.decoder_layers.", "legacy": "decoder.decoder_layers."}


def mask_from_noise(noise: Tensor, ratio: float) -> StreamMask:
    """The mask ViTMAE draws from ``noise`` ``(B, L)`` (its ``random_masking``), as an mmim mask:
    the ``int(L * (1 - ratio))`` tokens of lowest noise visible, in increasing-noise order."""
    keep = int(noise.shape[1] * (1 - ratio))
    order = torch.argsort(noise, dim=1)
    return StreamMask(visible=order[:, :keep], masked=order[:, keep:])


def image_stream(model: MaskedModel) -> str:
    """The model's one image (``patch`` tokenizer) stream; raises for anything ViTMAE cannot hold."""
    from mmim_image.tokenizer import PatchTokenizer

    streams = [n for n in model.token_streams]
    if len(streams) != 1 or model.fusion is not None:
        raise TransformersFormatError(f"ViTMAE holds a single image stream; this model has streams {streams}"
                                      + (" and fusion" if model.fusion is not None else ""))
    if not isinstance(model.streams[streams[0]].tokenizer, PatchTokenizer):
        raise TransformersFormatError(f"stream {streams[0]!r}: ViTMAE needs the image 'patch' tokenizer, not "
                                      f"{type(model.streams[streams[0]].tokenizer).__name__}")
    return streams[0]


def _block_sizes(blocks: torch.nn.ModuleList) -> dict[str, Any]:
    first = blocks[0]
    return {"heads": first.attn.num_heads, "mlp": first.mlp.fc1.out_features,
            "qkv_bias": first.attn.qkv.bias is not None, "eps": first.norm1.eps}


def vitmae_problems(model: MaskedModel, stream: str) -> tuple[list[str], list[str]]:
    """What ViTMAE cannot express in ``model``: ``(encoder problems, decoder problems)``. With
    encoder problems there is no counterpart; with decoder problems only (SimMIM, MaskFeat, a
    data2vec-style teacher target) the encoder alone is a ``ViTMAEModel``."""
    from mmim.components.content_target import ContentTarget
    from mmim.components.mae_decoder import MAEDecoder

    enc, s = model.encoder, model.streams[stream]
    tok, cfg = s.tokenizer, model.encoder.config
    sizes = _block_sizes(enc.blocks)
    encoder, decoder = [], []
    if tok.pos_layout != "mae":
        encoder.append(f"tokenizer pos_layout {tok.pos_layout!r} (ViTMAE's table is 'mae')")
    if tok.patch_size[0] != tok.patch_size[1] or tok.img_size[0] != tok.img_size[1]:
        encoder.append(f"non-square image {tok.img_size} or patch {tok.patch_size} (ViTMAE patchifies squares)")
    if enc.num_prefix != 1:
        encoder.append(f"{enc.num_prefix} prefix tokens (ViTMAE has exactly one cls token)")
    if cfg.pos_every_block:
        encoder.append("positions added before every block (pos_every_block)")
    if not cfg.final_norm:
        encoder.append("no final encoder norm (final_norm: false)")
    if s.mask_token is not None:
        decoder.append("mask tokens in the encoder (mask_in_encoder)")
    dec = s.decoder
    if not isinstance(dec, MAEDecoder):
        decoder.append(f"decoder {type(dec).__name__ if dec is not None else None} (ViTMAE's decoder is mmim's 'mae')")
    else:
        dsizes = _block_sizes(dec.blocks) if len(dec.blocks) else sizes
        if dsizes["qkv_bias"] != sizes["qkv_bias"]:
            decoder.append("decoder qkv_bias differs from the encoder's (ViTMAE has one qkv_bias)")
        if dec.norm.eps != enc.norm.eps or dsizes["eps"] != sizes["eps"]:
            decoder.append("decoder norm_eps differs from the encoder's (ViTMAE has one layer_norm_eps)")
        if dec.head.out_features != tok.content_dim:
            decoder.append(f"decoder predicts {dec.head.out_features} values per patch, ViTMAE p*p*C = {tok.content_dim}")
    if not isinstance(s.target, ContentTarget):
        decoder.append(f"target {type(s.target).__name__} (ViTMAE reconstructs pixels: mmim's 'content' target)")
    return encoder, decoder


def vitmae_config(model: MaskedModel, stream: str, with_decoder: bool = True) -> dict[str, Any]:
    """The ``ViTMAEConfig`` arguments of ``model``'s encoder (and decoder).

    Raises:
        TransformersFormatError: naming every part ViTMAE cannot express (with ``with_decoder=False``,
            only the encoder's).
    """
    encoder_problems, decoder_problems = vitmae_problems(model, stream)
    problems = encoder_problems + (decoder_problems if with_decoder else [])
    if problems:
        raise TransformersFormatError("no ViTMAE counterpart: " + "; ".join(problems))
    enc, s = model.encoder, model.streams[stream]
    tok, sizes = s.tokenizer, _block_sizes(enc.blocks)
    config = {
        "hidden_size": enc.embed_dim, "num_hidden_layers": len(enc.blocks), "num_attention_heads": sizes["heads"],
        "intermediate_size": sizes["mlp"], "hidden_act": "gelu", "layer_norm_eps": enc.norm.eps,
        "image_size": tok.img_size[0], "patch_size": tok.patch_size[0], "num_channels": tok.in_chans,
        "qkv_bias": sizes["qkv_bias"], "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "mask_ratio": 0.0,  # the encoder alone: every token (ViTMAEModel still orders them by its noise)
    }
    if with_decoder:
        dec = s.decoder
        dsizes = _block_sizes(dec.blocks) if len(dec.blocks) else sizes
        config.update({
            "decoder_hidden_size": dec.embed.out_features, "decoder_num_hidden_layers": len(dec.blocks),
            "decoder_num_attention_heads": dsizes["heads"] if len(dec.blocks) else sizes["heads"],
            "decoder_intermediate_size": dsizes["mlp"] if len(dec.blocks) else 4 * dec.embed.out_features,
            "mask_ratio": float(getattr(s.masker, "ratio", 0.75)), "norm_pix_loss": bool(s.target.normalize)})
    return config


def _tables(model: MaskedModel, stream: str) -> tuple[Tensor, Tensor | None]:
    """``(1, 1 + L, D)`` encoder table (row 0: ``cls_pos`` or zeros) and decoder table (zero row 0;
    None without an ``mae`` decoder)."""
    s = model.streams[stream]
    table = s.tokenizer.pos.table
    cls = model.encoder.cls_pos if model.encoder.cls_pos is not None else torch.zeros_like(table[:, :1])
    position = getattr(s.decoder, "position", None)
    dec = getattr(position, "table", None)
    return (torch.cat([cls.detach(), table], dim=1),
            torch.cat([torch.zeros_like(dec[:, :1]), dec], dim=1) if dec is not None else None)


def mmim_to_vitmae(model: MaskedModel, stream: str, naming: str = "legacy", with_decoder: bool = True) -> dict[str, Tensor]:
    """``model``'s weights under ``ViTMAEForPreTraining`` keys in transformers' ``naming``
    (``"legacy"``: the hub's, every version reads it; ``"current"``: the installed model's own);
    ``with_decoder=False``: the encoder alone under ``ViTMAEModel`` keys (no ``vit.`` prefix)."""
    state = model.state_dict()
    enc_prefix, dec_prefix, names = ENCODER_LAYERS[naming], DECODER_LAYERS[naming], NAMINGS[naming]
    bias = "qkv" if model.encoder.config.qkv_bias else "none"
    tok, dec = f"streams.{stream}.tokenizer.", f"streams.{stream}.decoder."
    pos, dec_pos = _tables(model, stream)
    out = {
        "vit.embeddings.cls_token": state["encoder.cls_token"],
        "vit.embeddings.position_embeddings": pos,
        "vit.embeddings.patch_embeddings.projection.weight": state[f"{tok}patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": state[f"{tok}patch_embed.proj.bias"],
        "vit.layernorm.weight": state["encoder.norm.weight"], "vit.layernorm.bias": state["encoder.norm.bias"],
    }
    out.update(blocks_to_hf(state, "encoder.blocks.", enc_prefix, len(model.encoder.blocks), names, bias))
    if not with_decoder:
        return {k.removeprefix("vit."): v.detach().float().contiguous().clone() for k, v in out.items()}
    out.update({"decoder.mask_token": state[f"{dec}mask_token"], "decoder.decoder_pos_embed": dec_pos})
    for ours, theirs in (("embed", "decoder_embed"), ("norm", "decoder_norm"), ("head", "decoder_pred")):
        for leaf in ("weight", "bias"):
            out[f"decoder.{theirs}.{leaf}"] = state[f"{dec}{ours}.{leaf}"]
    out.update(blocks_to_hf(state, f"{dec}blocks.", dec_prefix, len(model.streams[stream].decoder.blocks), names, bias))
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def to_vitmae(model: MaskedModel, stream: str | None = None) -> Any:
    """A ``ViTMAEForPreTraining`` (eval mode) holding ``model``'s weights."""
    transformers = import_transformers()
    stream = stream or image_stream(model)
    config = transformers.ViTMAEConfig(**vitmae_config(model, stream))
    with torch.random.fork_rng(devices=[]):
        hf = transformers.ViTMAEForPreTraining(config).eval()
    hf.load_state_dict(mmim_to_vitmae(model, stream, find_naming(hf.state_dict(), ENCODER_LAYERS)), strict=True)
    return hf


def export_transformers(model: MaskedModel, recipe: Any, out_dir: str | Path, stream: str | None = None,
                        metrics: dict[str, Any] | None = None, encoder_only: bool = False) -> Path:
    """Write ``model`` as a ``ViTMAEForPreTraining`` ``save_pretrained`` folder (the ``transformers``
    exporter); checked to load back through the class, ``AutoModelForPreTraining`` and ``AutoModel``
    with no missing or unexpected key. A model whose decoder ViTMAE cannot hold (SimMIM, MaskFeat,
    data2vec-style targets) is written as its encoder alone, a ``ViTMAEModel`` folder, and says so.
    Returns the weights file."""
    transformers = import_transformers()
    stream = stream or image_stream(model)
    image_stream(model)  # single image stream, patch tokenizer
    encoder_problems, decoder_problems = vitmae_problems(model, stream)
    with_decoder = not decoder_problems and not encoder_only  # encoder_only: what AutoModel loads, nothing left over
    config = transformers.ViTMAEConfig(**vitmae_config(model, stream, with_decoder))
    model_class = PRETRAINING_CLASS if with_decoder else "ViTMAEModel"
    with torch.random.fork_rng(devices=[]):
        keys = getattr(transformers, model_class)(config).state_dict()
    installed = find_naming(keys, ENCODER_LAYERS if with_decoder else {k: v.removeprefix("vit.") for k, v in ENCODER_LAYERS.items()})
    notes = []
    if encoder_only:
        notes.append("- the encoder alone (`ViTMAEModel`), as asked (`mmim export --encoder-only`)")
    elif decoder_problems:
        notes.append(f"- the encoder alone (`ViTMAEModel`): the decoder has no ViTMAE counterpart ({'; '.join(decoder_problems)})")
        log.warning("%s: the encoder alone (ViTMAEModel): %s", out_dir, "; ".join(decoder_problems))
    weights = save_checked(model_class, config, mmim_to_vitmae(model, stream, installed, with_decoder), out_dir,
                           file_state=mmim_to_vitmae(model, stream, "legacy", with_decoder))
    _write_card(Path(out_dir), recipe, config, metrics or {}, model_class, notes)
    return weights


def _write_card(out_dir: Path, recipe: Any, config: Any, metrics: dict[str, Any], model_class: str,
                notes: list[str]) -> None:
    import json

    name = getattr(recipe, "name", "mmim")
    decoder = model_class == PRETRAINING_CLASS
    lines = [
        "---", "library_name: transformers", "tags: [vit-mae, masked-modeling, mmim]", "---", "",
        f"# {name} as ViTMAE (mmim export)", "", getattr(recipe, "description", "") or "", "",
        "```python", f"from transformers import AutoModel, {model_class}", "",
        f"model = {model_class}.from_pretrained('<this folder>')" + ("  # encoder + decoder" if decoder else ""),
        "encoder = AutoModel.from_pretrained('<this folder>')  # ViTMAEModel",
        "# ViTMAEModel orders its tokens by `noise` (random when not given): pass noise=torch.arange(L) to keep them",
        "```", "",
        f"- image {config.image_size}px, {config.num_channels} channels, patch {config.patch_size}",
        f"- encoder {config.hidden_size}-d x {config.num_hidden_layers}, {config.num_attention_heads} heads"
        + (f"; decoder {config.decoder_hidden_size}-d x {config.decoder_num_hidden_layers}" if decoder else ""),
        f"- mask_ratio {config.mask_ratio}, norm_pix_loss {config.norm_pix_loss}, layer_norm_eps {config.layer_norm_eps}",
        *notes,
        "- back into mmim: `mmim finetune RECIPE --init hf:<this folder>` (or `mmim train ... --init hf:<this folder>`)",
        "", "## Metrics of this run", "", "```", json.dumps(metrics, indent=2), "```", "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))


export_transformers.format_name = "transformers"


# ---------------------------------------------------------------------------------------------- HF -> mmim
def _check_sizes(config: Any, model: MaskedModel, stream: str, path: str | Path, with_decoder: bool) -> None:
    """Sizes that shapes alone do not reveal (heads) and the ones named better here than by a shape error."""
    enc, tok = model.encoder, model.streams[stream].tokenizer
    sizes = _block_sizes(enc.blocks)
    ours = {"hidden_size": enc.embed_dim, "num_hidden_layers": len(enc.blocks), "num_attention_heads": sizes["heads"],
            "patch_size": tok.patch_size[0], "image_size": tok.img_size[0], "num_channels": tok.in_chans,
            "qkv_bias": sizes["qkv_bias"]}
    dec = model.streams[stream].decoder
    if with_decoder and len(dec.blocks):
        ours.update(decoder_hidden_size=dec.embed.out_features, decoder_num_hidden_layers=len(dec.blocks),
                    decoder_num_attention_heads=_block_sizes(dec.blocks)["heads"])
    differ = [f"{k} {getattr(config, k)} (recipe: {v})" for k, v in ours.items() if getattr(config, k) != v]
    if differ:
        raise TransformersFormatError(f"{path}: the ViTMAE config does not match the recipe's model: {', '.join(differ)}")
    if abs(config.layer_norm_eps - enc.norm.eps) > 0:
        log.warning("%s: layer_norm_eps %g in the transformers config, %g in the recipe (the weights load; "
                    "outputs differ slightly)", path, config.layer_norm_eps, enc.norm.eps)


def vitmae_to_mmim(hf: dict[str, Tensor], model: MaskedModel, stream: str, with_decoder: bool = True,
                   path: str | Path = "") -> dict[str, Tensor]:
    """A ``ViTMAEForPreTraining`` state dict (either naming) -> ``model``'s keys.

    The fixed position tables are checked against mmim's (they depend on the image, patch and
    width only); a non-zero cls row of the encoder table becomes ``encoder.cls_pos``.
    """
    naming = find_naming(hf, ENCODER_LAYERS)
    enc_prefix, dec_prefix, names = ENCODER_LAYERS[naming], DECODER_LAYERS[naming], NAMINGS[naming]
    bias = "qkv" if model.encoder.config.qkv_bias else "none"
    tok, dec = f"streams.{stream}.tokenizer.", f"streams.{stream}.decoder."
    table = model.streams[stream].tokenizer.pos.table
    pos = hf["vit.embeddings.position_embeddings"]
    if not pos.abs().max() > 0:
        raise TransformersFormatError(f"{path}: position_embeddings are all zero (transformers 5.x builds them so from a "
                                      "config; trained ViTMAE checkpoints hold the fixed sin-cos table)")
    if pos.shape[1:] != (table.shape[1] + 1, table.shape[2]) or not torch.allclose(pos[:, 1:], table, atol=1e-5):
        raise TransformersFormatError(f"{path}: position_embeddings {tuple(pos.shape)} differ from mmim's fixed sin-cos "
                                      f"table {tuple(table.shape)} (another image size, patch size or width?)")
    out = {"encoder.cls_token": hf["vit.embeddings.cls_token"],
           f"{tok}patch_embed.proj.weight": hf["vit.embeddings.patch_embeddings.projection.weight"],
           f"{tok}patch_embed.proj.bias": hf["vit.embeddings.patch_embeddings.projection.bias"],
           "encoder.norm.weight": hf["vit.layernorm.weight"], "encoder.norm.bias": hf["vit.layernorm.bias"]}
    cls_row = pos[:, :1]
    if model.encoder.cls_pos is not None:
        out["encoder.cls_pos"] = cls_row
    elif cls_row.abs().max() > 0:
        raise TransformersFormatError(f"{path}: the cls row of position_embeddings is not zero; the recipe's encoder "
                                      "has no cls position to hold it (model.encoder.cls_pos: true)")
    out.update(blocks_from_hf(hf, enc_prefix, "encoder.blocks.", len(model.encoder.blocks), names, bias))
    decoder = model.streams[stream].decoder
    if with_decoder and decoder is not None:
        from mmim.components.mae_decoder import MAEDecoder

        if not isinstance(decoder, MAEDecoder):
            raise TransformersFormatError(f"{path}: the recipe's decoder {type(decoder).__name__} is not mmim's 'mae'")
        dec_table = decoder.position.table
        theirs = hf["decoder.decoder_pos_embed"]
        if theirs.shape[1:] != (dec_table.shape[1] + 1, dec_table.shape[2]) or \
                not torch.allclose(theirs[:, 1:], dec_table, atol=1e-5):
            raise TransformersFormatError(f"{path}: decoder_pos_embed {tuple(theirs.shape)} differs from mmim's fixed "
                                          f"sin-cos table {tuple(dec_table.shape)}")
        out[f"{dec}mask_token"] = hf["decoder.mask_token"]
        for ours, theirs_name in (("embed", "decoder_embed"), ("norm", "decoder_norm"), ("head", "decoder_pred")):
            for leaf in ("weight", "bias"):
                out[f"{dec}{ours}.{leaf}"] = hf[f"decoder.{theirs_name}.{leaf}"]
        out.update(blocks_from_hf(hf, dec_prefix, f"{dec}blocks.", len(decoder.blocks), names, bias))
    return out


def load_transformers_checkpoint(path: str | Path, model: MaskedModel, stream: str | None = None,
                                 head: object = None) -> list[str]:
    """Load a transformers ViTMAE folder (``ViTMAEForPreTraining`` or an encoder-only ``ViTMAEModel``)
    into ``model`` (the ``hf`` converter: ``--init hf:DIR``). Nothing is downloaded.

    Returns:
        the mmim keys the folder did not set (the decoder, for an encoder-only folder or a recipe
        whose decoder is not mmim's ``mae``; a teacher).

    Raises:
        TransformersFormatError: another model type, other sizes, or keys that do not fit.
    """
    from mmim.components.mae_decoder import MAEDecoder

    stream = stream or image_stream(model)
    config, hf, missing = load_folder(path, PRETRAINING_CLASS, MODEL_TYPES)
    missing_encoder = [k for k in missing if not k.startswith("decoder.")]
    if missing_encoder:
        raise TransformersFormatError(f"{path}: the folder lacks encoder weights {missing_encoder[:5]}")
    with_decoder = not any(k.startswith("decoder.") for k in missing) and isinstance(
        model.streams[stream].decoder, MAEDecoder)
    _check_sizes(config, model, stream, path, with_decoder)
    mapped = vitmae_to_mmim(hf, model, stream, with_decoder, path)
    needed = ("encoder.", f"streams.{stream}.tokenizer.") + ((f"streams.{stream}.decoder.",) if with_decoder else ())
    return check_loaded(path, model, mapped, lambda key: key.startswith(needed))


# round-trip hooks of the conformance kit (mmim check-plugin): the folder transformers would save, its weights, a recipe
load_transformers_checkpoint.save_official = lambda model, stream, folder: export_transformers(model, None, folder, stream).parent
load_transformers_checkpoint.to_official = lambda model, stream: mmim_to_vitmae(model, stream, "legacy")
load_transformers_checkpoint.example_recipe = "mae_fashion_mnist"
