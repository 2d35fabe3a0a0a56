"""Hugging Face ``transformers`` VideoMAE <-> mmim video models, both ways.

- :func:`export_transformers` (the ``transformers`` exporter: ``mmim export RUN --format transformers``)
  writes a ``save_pretrained`` folder that ``VideoMAEForPreTraining.from_pretrained`` loads with no
  missing or unexpected key, decoder included (``AutoModel`` gives the encoder); a model whose
  decoder VideoMAE cannot hold is written as its encoder alone, a ``VideoMAEModel`` folder.
- :func:`load_transformers_checkpoint` (the ``hf`` converter: ``--init hf:DIR``) loads such a folder,
  or any ``VideoMAEForPreTraining`` / ``VideoMAEModel`` folder, into a recipe's model.

What maps to what (mmim key -> transformers key; layers are ``videomae.encoder.layer.N``):

============================================  ==================================================
``streams.S.tokenizer.patch_embed.proj``      ``videomae.embeddings.patch_embeddings.projection``
``encoder.blocks.N.attn.qkv.weight``          ``...attention.attention.{query,key,value}.weight``
``encoder.blocks.N.attn.qkv.bias``            ``...query.bias``, ``...value.bias`` (older transformers:
                                              ``...q_bias``, ``...v_bias``); k's third is dropped
``encoder.blocks.N.attn.proj``                ``...attention.output.dense``
``encoder.blocks.N.mlp.fc1``, ``mlp.fc2``     ``...intermediate.dense``, ``...output.dense``
``encoder.blocks.N.{norm1,norm2}``            ``...layernorm_{before,after}``
``encoder.norm``                              ``videomae.layernorm`` (``use_mean_pooling: false``)
``streams.S.decoder.embed`` (no bias)         ``encoder_to_decoder``
``streams.S.decoder.mask_token``              ``mask_token``
``streams.S.decoder.{blocks.N,norm,head}``    ``decoder.{decoder_layers.N,norm,head}``
============================================  ==================================================

Both sides build VideoMAE's fixed 1-D sinusoid table (never stored), so the tokenizer's
``pos_layout`` must be ``videomae``. The key bias is dropped without changing any output: it
shifts every attention logit of a query by the same ``q . b_k``, which softmax ignores. An encoder
without a final norm (``final_norm: false``) is written as ``use_mean_pooling: true`` (transformers'
model then has no ``layernorm``); with the norm, ``use_mean_pooling: false`` (as transformers'
conversions of the official pre-trained models).

One difference cannot be written in a config: transformers' VideoMAE decoder builds its final
``decoder.norm`` with ``nn.LayerNorm``'s default eps 1e-5, where official VideoMAE and mmim use
1e-6 (its decoder blocks do take ``layer_norm_eps``). Predictions differ by that alone (of the
order of 1e-6 relative); encoder outputs are unaffected. A recipe may set the mmim decoder's
``final_norm_eps: 1.0e-5`` to match transformers exactly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmim.model import MaskedModel
from mmim.timm_compat import import_transformers
from mmim.transformers_interop import (
    CURRENT_QV_BIAS,
    LEGACY_NAMES,
    LEGACY_QV_BIAS,
    TransformersFormatError,
    blocks_from_hf,
    blocks_to_hf,
    check_loaded,
    find_naming,
    load_folder,
    save_checked,
)

log = logging.getLogger(__name__)

MODEL_TYPES = ("videomae",)
PRETRAINING_CLASS = "VideoMAEForPreTraining"
ENCODER_LAYERS = {"legacy": "videomae.encoder.layer."}
DECODER_LAYERS = {"legacy": "decoder.decoder_layers."}
HF_DECODER_NORM_EPS = 1e-5  # transformers' VideoMAEDecoder.norm: nn.LayerNorm(decoder_hidden_size)


def video_stream(model: MaskedModel) -> str:
    """The model's one video (``tubelet`` tokenizer) stream; raises for anything VideoMAE cannot hold."""
    from mmim_video.tokenizer import TubeletTokenizer

    streams = list(model.token_streams)
    if len(streams) != 1 or model.fusion is not None:
        raise TransformersFormatError(f"VideoMAE holds a single video stream; this model has streams {streams}"
                                      + (" and fusion" if model.fusion is not None else ""))
    if not isinstance(model.streams[streams[0]].tokenizer, TubeletTokenizer):
        raise TransformersFormatError(f"stream {streams[0]!r}: VideoMAE needs the video 'tubelet' tokenizer, not "
                                      f"{type(model.streams[streams[0]].tokenizer).__name__}")
    return streams[0]


def _block_sizes(blocks: Any) -> dict[str, Any]:
    first = blocks[0]
    return {"heads": first.attn.num_heads, "mlp": first.mlp.fc1.out_features,
            "qkv_bias": first.attn.qkv.bias is not None, "eps": first.norm1.eps}


def videomae_problems(model: MaskedModel, stream: str) -> tuple[list[str], list[str]]:
    """What VideoMAE cannot express in ``model``: ``(encoder problems, decoder problems)``; with
    decoder problems only, the encoder alone is a ``VideoMAEModel``."""
    from mmim_video.decoder import VideoMAEDecoder
    from mmim_video.target import TubeletPixelTarget

    enc, s = model.encoder, model.streams[stream]
    tok, cfg = s.tokenizer, model.encoder.config
    sizes = _block_sizes(enc.blocks)
    _, p, q = tok.tubelet
    encoder, decoder = [], []
    if tok.pos_layout != "videomae":
        encoder.append(f"tokenizer pos_layout {tok.pos_layout!r} (VideoMAE's table is 'videomae')")
    if p != q:
        encoder.append(f"non-square tubelet {tok.tubelet} (VideoMAE's patches are square)")
    if enc.num_prefix:
        encoder.append(f"{enc.num_prefix} cls/prefix tokens (VideoMAE has none)")
    if cfg.pos_every_block:
        encoder.append("positions added before every block (pos_every_block)")
    if s.mask_token is not None:
        decoder.append("mask tokens in the encoder (mask_in_encoder)")
    dec = s.decoder
    if not isinstance(dec, VideoMAEDecoder):
        decoder.append(f"decoder {type(dec).__name__ if dec is not None else None} (VideoMAE's decoder is mmim's 'videomae')")
    else:
        dsizes = _block_sizes(dec.blocks) if len(dec.blocks) else sizes
        if dsizes["qkv_bias"] != sizes["qkv_bias"]:
            decoder.append("decoder qkv_bias differs from the encoder's (VideoMAE has one qv_bias)")
        if dsizes["eps"] != sizes["eps"]:
            decoder.append("decoder norm_eps differs from the encoder's (VideoMAE has one layer_norm_eps)")
        if dec.head.out_features != tok.content_dim:
            decoder.append(f"decoder predicts {dec.head.out_features} values per tubelet, VideoMAE C*t*p*p = {tok.content_dim}")
    if not isinstance(s.target, TubeletPixelTarget):
        decoder.append(f"target {type(s.target).__name__} (VideoMAE reconstructs pixels: mmim's 'tubelet_pixels')")
    return encoder, decoder


def videomae_config(model: MaskedModel, stream: str, with_decoder: bool = True) -> dict[str, Any]:
    """The ``VideoMAEConfig`` arguments of ``model``'s encoder (and decoder).

    Raises:
        TransformersFormatError: naming every part VideoMAE cannot express (with ``with_decoder=False``,
            only the encoder's).
    """
    encoder_problems, decoder_problems = videomae_problems(model, stream)
    problems = encoder_problems + (decoder_problems if with_decoder else [])
    if problems:
        raise TransformersFormatError("no VideoMAE counterpart: " + "; ".join(problems))
    enc, s = model.encoder, model.streams[stream]
    tok, sizes = s.tokenizer, _block_sizes(enc.blocks)
    t, p, _ = tok.tubelet
    h, w = tok.img_size
    config = {
        "image_size": h if h == w else [h, w], "patch_size": p, "num_channels": tok.in_chans,
        "num_frames": tok.num_frames, "tubelet_size": t,
        "hidden_size": enc.embed_dim, "num_hidden_layers": len(enc.blocks), "num_attention_heads": sizes["heads"],
        "intermediate_size": sizes["mlp"], "hidden_act": "gelu", "layer_norm_eps": sizes["eps"],
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "qkv_bias": sizes["qkv_bias"],  # read as qv_bias by transformers 5, as qkv_bias by 4.x
        "use_mean_pooling": not model.encoder.config.final_norm,
    }
    if with_decoder:
        dec = s.decoder
        dsizes = _block_sizes(dec.blocks) if len(dec.blocks) else sizes
        config.update({
            "decoder_hidden_size": dec.embed.out_features, "decoder_num_hidden_layers": len(dec.blocks),
            "decoder_num_attention_heads": dsizes["heads"],
            "decoder_intermediate_size": dsizes["mlp"] if len(dec.blocks) else 4 * dec.embed.out_features,
            "norm_pix_loss": bool(s.target.normalize)})
    return config


def qv_naming(keys: Any) -> str:
    """``"legacy"`` when query/value biases are separate ``q_bias``/``v_bias`` parameters (the hub's
    checkpoints, older transformers), ``"current"`` when they are the projections' own biases."""
    return "legacy" if f"{ENCODER_LAYERS['legacy']}0.{LEGACY_QV_BIAS['q_bias']}" in set(keys) else "current"


QV_NAMES = {"legacy": LEGACY_QV_BIAS, "current": CURRENT_QV_BIAS}


def mmim_to_videomae(model: MaskedModel, stream: str, naming: str = "legacy", with_decoder: bool = True) -> dict[str, Tensor]:
    """``model``'s weights under ``VideoMAEForPreTraining`` keys, query/value biases in ``naming``
    (``"legacy"``: the hub's ``q_bias``/``v_bias``, every version reads it; ``"current"``: the
    projections' biases, as the installed transformers may name them); ``with_decoder=False``: the
    encoder alone under ``VideoMAEModel`` keys (no ``videomae.`` prefix)."""
    state = model.state_dict()
    enc_prefix, dec_prefix, names, qv = ENCODER_LAYERS["legacy"], DECODER_LAYERS["legacy"], LEGACY_NAMES, QV_NAMES[naming]
    bias = "qv" if model.encoder.config.qkv_bias else "none"
    tok, dec = f"streams.{stream}.tokenizer.", f"streams.{stream}.decoder."
    out = {
        "videomae.embeddings.patch_embeddings.projection.weight": state[f"{tok}patch_embed.proj.weight"],
        "videomae.embeddings.patch_embeddings.projection.bias": state[f"{tok}patch_embed.proj.bias"],
    }
    if model.encoder.config.final_norm:
        out["videomae.layernorm.weight"], out["videomae.layernorm.bias"] = state["encoder.norm.weight"], state["encoder.norm.bias"]
    out.update(blocks_to_hf(state, "encoder.blocks.", enc_prefix, len(model.encoder.blocks), names, bias, qv))
    if not with_decoder:
        return {k.removeprefix("videomae."): v.detach().float().contiguous().clone() for k, v in out.items()}
    out.update({"encoder_to_decoder.weight": state[f"{dec}embed.weight"], "mask_token": state[f"{dec}mask_token"]})
    for leaf in ("weight", "bias"):
        out[f"decoder.norm.{leaf}"], out[f"decoder.head.{leaf}"] = state[f"{dec}norm.{leaf}"], state[f"{dec}head.{leaf}"]
    out.update(blocks_to_hf(state, f"{dec}blocks.", dec_prefix, len(model.streams[stream].decoder.blocks), names, bias, qv))
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def to_videomae(model: MaskedModel, stream: str | None = None) -> Any:
    """A ``VideoMAEForPreTraining`` (eval mode) holding ``model``'s weights."""
    transformers = import_transformers()
    stream = stream or video_stream(model)
    config = transformers.VideoMAEConfig(**videomae_config(model, stream))
    with torch.random.fork_rng(devices=[]):
        hf = transformers.VideoMAEForPreTraining(config).eval()
    hf.load_state_dict(mmim_to_videomae(model, stream, qv_naming(hf.state_dict())), strict=True)
    return hf


def export_transformers(model: MaskedModel, recipe: Any, out_dir: str | Path, stream: str | None = None,
                        metrics: dict[str, Any] | None = None, encoder_only: bool = False) -> Path:
    """Write ``model`` as a ``VideoMAEForPreTraining`` ``save_pretrained`` folder (the ``transformers``
    exporter); checked to load back through the class and ``AutoModel``. Returns the weights file."""
    transformers = import_transformers()
    stream = stream or video_stream(model)
    video_stream(model)
    encoder_problems, decoder_problems = videomae_problems(model, stream)
    with_decoder = not decoder_problems and not encoder_only  # encoder_only: what AutoModel loads, nothing left over
    config = transformers.VideoMAEConfig(**videomae_config(model, stream, with_decoder))
    model_class = PRETRAINING_CLASS if with_decoder else "VideoMAEModel"
    with torch.random.fork_rng(devices=[]):
        keys = getattr(transformers, model_class)(config).state_dict()
    installed = qv_naming({f"videomae.{k}": None for k in keys} if not with_decoder else keys)
    weights = save_checked(model_class, config, mmim_to_videomae(model, stream, installed, with_decoder), out_dir,
                           file_state=mmim_to_videomae(model, stream, "legacy", with_decoder))
    target = model.streams[stream].target
    notes = []
    if encoder_only:
        notes.append("- the encoder alone (`VideoMAEModel`), as asked (`mmim export --encoder-only`)")
    elif decoder_problems:
        notes.append(f"- the encoder alone (`VideoMAEModel`): the decoder has no VideoMAE counterpart "
                     f"({'; '.join(decoder_problems)})")
        log.warning("%s: the encoder alone (VideoMAEModel): %s", out_dir, "; ".join(decoder_problems))
    elif model.streams[stream].decoder.norm.eps != HF_DECODER_NORM_EPS:
        notes.append(f"- transformers' `decoder.norm` uses eps {HF_DECODER_NORM_EPS:g}, this model was trained with "
                     f"{model.streams[stream].decoder.norm.eps:g}: predictions differ slightly (encoder outputs do not)")
    if with_decoder and config.num_channels == 3 and target.channels and (
            [round(float(v), 3) for v in target.mean] != [0.485, 0.456, 0.406]
            or [round(float(v), 3) for v in target.std] != [0.229, 0.224, 0.225]):
        notes.append("- transformers' VideoMAE loss un-normalises 3-channel input with ImageNet's mean and std; this "
                     f"run normalised with mean {target.mean.tolist()}, std {target.std.tolist()}")
    _write_card(Path(out_dir), recipe, config, metrics or {}, model_class, notes)
    return weights


def _write_card(out_dir: Path, recipe: Any, config: Any, metrics: dict[str, Any], model_class: str,
                notes: list[str]) -> None:
    name = getattr(recipe, "name", "mmim")
    decoder = model_class == PRETRAINING_CLASS
    lines = [
        "---", "library_name: transformers", "tags: [videomae, masked-modeling, mmim]", "---", "",
        f"# {name} as VideoMAE (mmim export)", "", getattr(recipe, "description", "") or "", "",
        "```python", f"from transformers import AutoModel, {model_class}", "",
        f"model = {model_class}.from_pretrained('<this folder>')" + ("  # encoder + decoder" if decoder else ""),
        "encoder = AutoModel.from_pretrained('<this folder>')  # VideoMAEModel",
        "# inputs: pixel_values (B, T, C, H, W)" + ("; bool_masked_pos (B, L) for the pre-training model" if decoder else ""),
        "```", "",
        f"- clips of {config.num_frames} frames, {config.image_size}px, {config.num_channels} channels; "
        f"tubelet {config.tubelet_size}x{config.patch_size}x{config.patch_size}",
        f"- encoder {config.hidden_size}-d x {config.num_hidden_layers}, {config.num_attention_heads} heads"
        + (f"; decoder {config.decoder_hidden_size}-d x {config.decoder_num_hidden_layers}" if decoder else ""),
        f"- use_mean_pooling {config.use_mean_pooling}, norm_pix_loss {config.norm_pix_loss}, "
        f"layer_norm_eps {config.layer_norm_eps}", *notes,
        "- back into mmim: `mmim finetune RECIPE --init hf:<this folder>` (or `mmim train ... --init hf:<this folder>`)",
        "", "## Metrics of this run", "", "```", json.dumps(metrics, indent=2), "```", "",
    ]
    (out_dir / "README.md").write_text("\n".join(lines))


export_transformers.format_name = "transformers"


# ---------------------------------------------------------------------------------------------- HF -> mmim
def _check_sizes(config: Any, model: MaskedModel, stream: str, path: str | Path, with_decoder: bool) -> None:
    enc, tok = model.encoder, model.streams[stream].tokenizer
    sizes = _block_sizes(enc.blocks)
    t, p, _ = tok.tubelet
    ours = {"hidden_size": enc.embed_dim, "num_hidden_layers": len(enc.blocks), "num_attention_heads": sizes["heads"],
            "patch_size": p, "tubelet_size": t, "num_channels": tok.in_chans, "qv_bias": sizes["qkv_bias"]}
    if not hasattr(config, "qv_bias"):  # transformers 4.x names it qkv_bias
        config.qv_bias = getattr(config, "qkv_bias", True)
    dec = model.streams[stream].decoder
    if with_decoder and len(dec.blocks):
        ours.update(decoder_hidden_size=dec.embed.out_features, decoder_num_hidden_layers=len(dec.blocks),
                    decoder_num_attention_heads=_block_sizes(dec.blocks)["heads"])
    differ = [f"{k} {getattr(config, k)} (recipe: {v})" for k, v in ours.items() if getattr(config, k) != v]
    if differ:
        raise TransformersFormatError(f"{path}: the VideoMAE config does not match the recipe's model: {', '.join(differ)}")
    if enc.num_prefix:
        raise TransformersFormatError(f"{path}: VideoMAE has no cls token; the recipe's encoder has {enc.num_prefix} "
                                      "(model.encoder.cls_token: false)")
    if tok.pos_layout != "videomae":
        raise TransformersFormatError(f"{path}: VideoMAE adds its 1-D sinusoid table; the recipe's tokenizer has "
                                      f"pos_layout {tok.pos_layout!r} (set pos_layout: videomae)")
    if config.layer_norm_eps != sizes["eps"]:
        log.warning("%s: layer_norm_eps %g in the transformers config, %g in the recipe (the weights load; "
                    "outputs differ slightly)", path, config.layer_norm_eps, sizes["eps"])


def videomae_to_mmim(hf: dict[str, Tensor], model: MaskedModel, stream: str, with_decoder: bool = True) -> dict[str, Tensor]:
    """A ``VideoMAEForPreTraining`` state dict (either naming) -> ``model``'s keys (the key third of
    each ``qkv.bias`` zero; no ``encoder.norm`` from a ``use_mean_pooling`` model, which has none)."""
    enc_prefix, names = ENCODER_LAYERS[find_naming(hf, ENCODER_LAYERS)], LEGACY_NAMES
    qv = QV_NAMES[qv_naming(hf)]
    bias = "qv" if model.encoder.config.qkv_bias else "none"
    tok, dec = f"streams.{stream}.tokenizer.", f"streams.{stream}.decoder."
    out = {f"{tok}patch_embed.proj.weight": hf["videomae.embeddings.patch_embeddings.projection.weight"],
           f"{tok}patch_embed.proj.bias": hf["videomae.embeddings.patch_embeddings.projection.bias"]}
    if "videomae.layernorm.weight" in hf:
        out["encoder.norm.weight"], out["encoder.norm.bias"] = hf["videomae.layernorm.weight"], hf["videomae.layernorm.bias"]
    out.update(blocks_from_hf(hf, enc_prefix, "encoder.blocks.", len(model.encoder.blocks), names, bias, qv))
    decoder = model.streams[stream].decoder
    if with_decoder and decoder is not None:
        from mmim_video.decoder import VideoMAEDecoder

        if not isinstance(decoder, VideoMAEDecoder):
            raise TransformersFormatError(f"the recipe's decoder {type(decoder).__name__} is not mmim's 'videomae'")
        out[f"{dec}embed.weight"], out[f"{dec}mask_token"] = hf["encoder_to_decoder.weight"], hf["mask_token"]
        for leaf in ("weight", "bias"):
            out[f"{dec}norm.{leaf}"], out[f"{dec}head.{leaf}"] = hf[f"decoder.norm.{leaf}"], hf[f"decoder.head.{leaf}"]
        out.update(blocks_from_hf(hf, DECODER_LAYERS["legacy"], f"{dec}blocks.", len(decoder.blocks), names, bias, qv))
    return out


def load_transformers_checkpoint(path: str | Path, model: MaskedModel, stream: str | None = None,
                                 head: object = None) -> list[str]:
    """Load a transformers VideoMAE folder (``VideoMAEForPreTraining`` or an encoder-only
    ``VideoMAEModel``) into ``model`` (the ``hf`` converter: ``--init hf:DIR``). Nothing is downloaded.

    Returns:
        the mmim keys the folder did not set (the decoder of an encoder-only folder; ``encoder.norm``
        from a ``use_mean_pooling`` model, which has no final norm).
    """
    stream = stream or video_stream(model)
    config, hf, missing = load_folder(path, PRETRAINING_CLASS, MODEL_TYPES)
    missing_encoder = [k for k in missing if k.startswith("videomae.")]
    if missing_encoder:
        raise TransformersFormatError(f"{path}: the folder lacks encoder weights {missing_encoder[:5]}")
    from mmim_video.decoder import VideoMAEDecoder

    with_decoder = not any(not k.startswith("videomae.") for k in missing) and isinstance(
        model.streams[stream].decoder, VideoMAEDecoder)
    _check_sizes(config, model, stream, path, with_decoder)
    mapped = videomae_to_mmim(hf, model, stream, with_decoder)
    needed = ("encoder.", f"streams.{stream}.tokenizer.") + ((f"streams.{stream}.decoder.",) if with_decoder else ())
    left = check_loaded(path, model, mapped, lambda key: key.startswith(needed) and not (
        config.use_mean_pooling and key.startswith("encoder.norm.")))
    if config.use_mean_pooling and model.encoder.config.final_norm:
        log.info("%s: use_mean_pooling model (no final encoder norm): encoder.norm keeps its initial weights", path)
    return left


# round-trip hooks of the conformance kit (mmim check-plugin): the folder transformers would save, its weights, a recipe
load_transformers_checkpoint.save_official = lambda model, stream, folder: export_transformers(model, None, folder, stream).parent
load_transformers_checkpoint.to_official = lambda model, stream: mmim_to_videomae(model, stream, "legacy")
load_transformers_checkpoint.example_recipe = "videomae_moving_fashion"
