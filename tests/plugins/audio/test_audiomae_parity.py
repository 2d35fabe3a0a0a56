"""Parity with the official facebookresearch/AudioMAE model (local decoder) on tests/fixtures/audiomae."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmim.config.recipe import ModelConfig, StreamConfig
from mmim.model import build_model
from mmim.trunk.encoder import EncoderConfig
from mmim.types import StreamMask
from mmim_audio.converters.audiomae import load_official_into, official_to_mmim

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "audiomae"
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def fixture():
    cfg = json.loads((FIXTURE / "config.json").read_text())
    return cfg, load_file(FIXTURE / "official_state_dict.safetensors"), load_file(FIXTURE / "inputs.safetensors"), \
        load_file(FIXTURE / "outputs.safetensors")


def fixture_model_config(cfg: dict) -> ModelConfig:
    """The mmim equivalent of the fixture's ``MaskedAutoencoderViT(..., decoder_mode=1)``."""
    ctor, hard = cfg["constructor"], cfg["derived"]["decoder_mode1_hardcoded"]
    return ModelConfig(
        encoder=EncoderConfig(embed_dim=ctor["embed_dim"], depth=ctor["depth"], num_heads=ctor["num_heads"],
                              mlp_ratio=ctor["mlp_ratio"], norm_eps=ctor["layernorm_eps"]),
        streams={"audio": StreamConfig(
            tokenizer={"name": "spectrogram_patch", "input_size": ctor["img_size"], "patch_size": ctor["patch_size"],
                       "in_chans": ctor["in_chans"], "pos_layout": "audiomae"},
            masker={"name": "random", "ratio": cfg["mask_ratio"]},
            target={"name": "content", "normalize": ctor["norm_pix_loss"]},
            loss={"name": "mse"},
            decoder={"name": "audiomae_local", "embed_dim": ctor["decoder_embed_dim"], "depth": hard["n_blocks"],
                     "num_heads": hard["num_heads"], "window": hard["window_size"], "shift": hard["shift_sizes"][1],
                     "mlp_ratio": ctor["mlp_ratio"], "meta_hidden_dim": hard["meta_hidden_dim"],
                     "meta_dropout": hard["meta_mlp_dropout"], "norm_eps": ctor["layernorm_eps"], "predict": "all"},
        )},
    )


@pytest.fixture(scope="module")
def model(fixture):
    cfg, sd, _, _ = fixture
    model = build_model(fixture_model_config(cfg)).eval()
    load_official_into(model, sd)
    return model


def _mask(cfg, inp) -> StreamMask:
    keep = cfg["derived"]["len_keep"]
    return StreamMask(inp["ids_keep"], inp["ids_shuffle"][:, keep:])


def test_fixed_tables_and_mask_match_official(fixture, model):
    cfg, sd, inp, _ = fixture
    stream = model.streams["audio"]
    assert torch.equal(stream.tokenizer.pos.table, sd["pos_embed"][:, 1:])
    assert torch.equal(stream.decoder.position.table, sd["decoder_pos_embed"][:, 1:])
    assert stream.tokenizer.grid == tuple(cfg["derived"][k] for k in ("grid_time", "grid_freq"))
    mask = _mask(cfg, inp)
    assert torch.equal(mask.restore_order(), inp["ids_restore"])
    assert torch.equal(mask.bool_mask().float(), inp["mask"])


def test_audiomae_matches_official(fixture, model):
    cfg, _, inp, out = fixture
    mask = _mask(cfg, inp)
    with torch.no_grad():
        result = model({"audio": inp["imgs"]}, masks={"audio": mask})
        prefix, encoded = result.prefix, result.encoded
        target_all = model.streams["audio"].target(inp["imgs"], result.tokens["audio"])
    tokens = result.tokens["audio"]
    torch.testing.assert_close(tokens.embeddings, out["patch_embed_out"], **TOL)
    torch.testing.assert_close(torch.cat([prefix, encoded], 1), out["latent"], **TOL)
    torch.testing.assert_close(target_all, out["target"], **TOL)
    torch.testing.assert_close(result.predictions["audio"].full, out["pred"], **TOL)
    torch.testing.assert_close(result.loss, out["loss"], **TOL)
    per_patch = (result.predictions["audio"].full - target_all).pow(2).mean(-1)
    torch.testing.assert_close(per_patch, out["loss_per_patch"], **TOL)
    # norm_pix_loss=False branch: the raw patches as the target
    raw_loss = (result.predictions["audio"].full - tokens.content).pow(2).mean(-1)[mask.bool_mask()].mean()
    torch.testing.assert_close(raw_loss, out["loss_no_norm_pix"], **TOL)


def test_local_decoder_alone_is_exact(fixture, model):
    """Fed the official latent, the local decoder reproduces the official blocks and prediction to float rounding."""
    cfg, _, inp, out = fixture
    decoder, mask = model.streams["audio"].decoder, _mask(cfg, inp)
    captured = []
    hooks = [decoder.blocks[i].register_forward_hook(lambda m, a, o: captured.append(o[:1])) for i in (0, 1)]
    try:
        with torch.no_grad():
            latent = out["latent"]
            layout = model.streams["audio"].tokenizer.layout(2, latent.device)
            pred = decoder.decode(latent[:, :1], latent[:, 1:], mask, layout)
    finally:
        for h in hooks:
            h.remove()
    tight = dict(atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(captured[0], out["decoder_block0_out_sample0"], **tight)  # window attention
    torch.testing.assert_close(captured[1], out["decoder_block1_out_sample0"], **tight)  # shifted windows + mask
    torch.testing.assert_close(pred.full, out["pred"], **tight)
    assert torch.equal(pred.index, mask.masked)


def test_official_keys_all_mapped(fixture, model):
    _, sd, _, _ = fixture
    mapped = official_to_mmim(sd)
    assert set(mapped) == set(model.state_dict())
    assert len(sd) == len(mapped) + 2  # pos_embed and decoder_pos_embed are rebuilt, not loaded
    assert "streams.audio.decoder.blocks.15.attn.tau" in mapped


def _official_order_attention(attn: torch.nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """timm 0.3.2's attention (the official code's): ``softmax((q @ k^T) * scale) @ v``, unfused.

    timm >= 0.9 instead scales q before the product and calls the fused
    ``F.scaled_dot_product_attention``: the same maths, rounded differently.
    """
    b, n, c = x.shape
    q, k, v = attn.qkv(x).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    weights = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


def test_residual_prediction_error_is_the_encoder_attention_rounding(fixture):
    """The full-model prediction differs from the official one by ~1e-5 only through float rounding: with
    the official attention operation order in the two encoder blocks, latent and prediction match to 1e-6
    (bit-exact on CPU), the layouts, tables and decoder being the same."""
    import types

    cfg, sd, inp, out = fixture
    model = build_model(fixture_model_config(cfg)).eval()
    load_official_into(model, sd)
    for block in model.encoder.blocks:
        block.attn.forward = types.MethodType(_official_order_attention, block.attn)
    mask = _mask(cfg, inp)
    with torch.no_grad():
        result = model({"audio": inp["imgs"]}, masks={"audio": mask})
        prefix, encoded = result.prefix, result.encoded
    tight = dict(atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(torch.cat([prefix, encoded], 1), out["latent"], **tight)
    torch.testing.assert_close(result.predictions["audio"].full, out["pred"], **tight)
