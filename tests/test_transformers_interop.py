"""Hugging Face ``transformers`` interop, both ways: ``mmim export --format transformers`` (ViTMAE for
images, VideoMAE for video), ``--init hf:DIR`` on ``mmim train`` and ``mmim finetune``, and parity of
encoder outputs and predictions on the same weights and the same mask. Every transformers model here
is built locally from a config; nothing is downloaded."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import yaml

pytest.importorskip("transformers")

from mmim.cli import main  # noqa: E402
from mmim.config import load_recipe  # noqa: E402
from mmim.config.recipe import recipe_from_dict  # noqa: E402
from mmim.engine.checkpoint import load_checkpoint, save_atomic  # noqa: E402
from mmim.engine.run import save_recipe  # noqa: E402
from mmim.finetune.task import converter_for, load_pretrained  # noqa: E402
from mmim.model import build_model  # noqa: E402
from mmim.recipes_catalog import default_recipe, find_recipe  # noqa: E402
from mmim.timm_compat import import_transformers  # noqa: E402
from mmim.types import StreamMask, gather_tokens  # noqa: E402

transformers = import_transformers()
TOL = 1e-5  # the bound, absolute
SMALL = ["model.encoder.embed_dim=32", "model.encoder.depth=2", "model.encoder.num_heads=2"]


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> float:
    diff = (a.float() - b.float()).abs().max().item()
    assert diff <= TOL, f"{what}: max |difference| {diff:.3g} > {TOL}"
    return diff


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every trainable weight moved off its init (fixed tables stay), so nothing agrees by chance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def _recipe(modality: str, *overrides: str):
    return load_recipe(default_recipe(modality), [*SMALL, *overrides])


def _stream(recipe) -> str:
    return next(n for n, s in recipe.model.streams.items() if s.tokenizer is not None)


def _vitmae_config(recipe) -> object:
    """A ViTMAEConfig written from the recipe's own sizes (independently of mmim's exporter)."""
    enc, s = recipe.model.encoder.resolved(), recipe.model.streams[_stream(recipe)]
    dec, tok = s.decoder, s.tokenizer
    return transformers.ViTMAEConfig(
        hidden_size=enc.embed_dim, num_hidden_layers=enc.depth, num_attention_heads=enc.num_heads,
        intermediate_size=int(enc.embed_dim * enc.mlp_ratio), layer_norm_eps=enc.norm_eps, image_size=tok["img_size"],
        patch_size=tok["patch_size"], num_channels=tok["in_chans"], qkv_bias=enc.qkv_bias,
        decoder_hidden_size=dec["embed_dim"], decoder_num_hidden_layers=dec["depth"],
        decoder_num_attention_heads=dec["num_heads"], decoder_intermediate_size=4 * dec["embed_dim"],
        mask_ratio=s.masker["ratio"], norm_pix_loss=s.target.get("normalize", True))


def _videomae_config(recipe) -> object:
    enc, s = recipe.model.encoder.resolved(), recipe.model.streams[_stream(recipe)]
    dec, tok = s.decoder, s.tokenizer
    t, p, _ = tok["tubelet"]
    return transformers.VideoMAEConfig(
        image_size=tok["img_size"], patch_size=p, num_channels=tok["in_chans"], num_frames=tok["num_frames"],
        tubelet_size=t, hidden_size=enc.embed_dim, num_hidden_layers=enc.depth, num_attention_heads=enc.num_heads,
        intermediate_size=int(enc.embed_dim * enc.mlp_ratio), layer_norm_eps=enc.norm_eps, qv_bias=enc.qkv_bias,
        use_mean_pooling=False, decoder_hidden_size=dec["embed_dim"], decoder_num_hidden_layers=dec["depth"],
        decoder_num_attention_heads=dec["num_heads"], decoder_intermediate_size=int(dec["embed_dim"] * dec["mlp_ratio"]),
        norm_pix_loss=s.target.get("normalize", True))


def _vitmae(config, seed: int):
    """A ViTMAEForPreTraining with random weights and ViTMAE's fixed sin-cos tables, filled with
    transformers' own function (a model built from a config has zero tables in transformers 5.x:
    its checkpoints carry them)."""
    import importlib

    torch.manual_seed(seed)
    hf = _perturbed(transformers.ViTMAEForPreTraining(config), seed)
    module = importlib.import_module(type(hf).__module__)
    grid = config.image_size // config.patch_size
    for param in (hf.vit.embeddings.position_embeddings, hf.decoder.decoder_pos_embed):
        dim = param.shape[-1]
        if hasattr(module, "build_2d_sinusoidal_position_embedding"):  # transformers 5.x: (h | w), swapped to (w | h)
            table = module.build_2d_sinusoidal_position_embedding(grid, grid, dim, cls_token=True)
            table = torch.cat([table[..., dim // 2:], table[..., :dim // 2]], dim=-1)
        else:  # transformers 4.x
            table = torch.from_numpy(module.get_2d_sincos_pos_embed(dim, grid, add_cls_token=True)).float()
        with torch.no_grad():
            param.copy_(table.reshape(param.shape))
    return hf


# ----------------------------------------------------------------------------------------------- images
def _image_parity(model, hf, recipe) -> dict[str, float]:
    """Encoder output, prediction and loss of ``model`` and ``hf`` (ViTMAEForPreTraining) on the same
    input and the same ``noise``; also the unmasked encoder output (cls and mean pooling)."""
    from mmim_image.converters.transformers import mask_from_noise

    name = _stream(recipe)
    s = model.streams[name]
    gen = torch.Generator().manual_seed(3)
    x = s.tokenizer.example_input(3, gen)
    noise = torch.rand(3, s.tokenizer.grid[0] * s.tokenizer.grid[1], generator=gen)
    mask = mask_from_noise(noise, recipe.model.streams[name].masker["ratio"])
    out = {}
    with torch.no_grad():
        theirs = hf(pixel_values=x, noise=noise)
        encoded = hf.vit(pixel_values=x, noise=noise).last_hidden_state
        ours = model({s.input_key or name: x}, masks={name: mask}, full=True)
        assert torch.equal(theirs.mask.bool(), mask.bool_mask()), "the masks differ"
        out["encoder (masked)"] = _close(torch.cat([ours.prefix, ours.encoded], 1), encoded, "encoder output")
        out["prediction"] = _close(ours.predictions[name].values,
                                   gather_tokens(theirs.logits, ours.predictions[name].index), "prediction")
        out["prediction (all tokens)"] = _close(ours.predictions[name].full, theirs.logits, "full prediction")
        out["loss"] = _close(ours.loss, theirs.loss, "loss (norm_pix_loss)")
        ratio = hf.config.mask_ratio
        hf.config.mask_ratio = 0.0  # every token, in order (noise increasing with the index)
        try:
            order = torch.arange(noise.shape[1], dtype=torch.float32).expand_as(noise)
            full = hf.vit(pixel_values=x, noise=order).last_hidden_state
        finally:
            hf.config.mask_ratio = ratio
        out["features (mean)"] = _close(model.features({s.input_key or name: x}, pool="mean"), full[:, 1:].mean(1), "mean features")
        out["features (cls)"] = _close(model.features({s.input_key or name: x}, pool="cls"), full[:, 0], "cls features")
    return out


def test_image_mmim_to_transformers_parity():
    from mmim_image.converters.transformers import to_vitmae

    recipe = _recipe("image")
    model = _perturbed(build_model(recipe.model))
    hf = to_vitmae(model)
    enc = recipe.model.encoder.resolved()
    assert hf.config.layer_norm_eps == enc.norm_eps != transformers.ViTMAEConfig().layer_norm_eps
    assert hf.config.norm_pix_loss == recipe.model.streams["image"].target["normalize"]
    print(_image_parity(model, hf, recipe))


def test_image_transformers_to_mmim_parity(tmp_path):
    recipe = _recipe("image")
    hf = _vitmae(_vitmae_config(recipe), seed=1)
    hf.save_pretrained(tmp_path / "hf")
    model = build_model(recipe.model).eval()
    assert converter_for(model, "hf") == "image:hf"
    load_pretrained(model, f"hf:{tmp_path / 'hf'}")  # what --init hf:DIR does
    print(_image_parity(model, hf, recipe))


# ------------------------------------------------------------------------------------------------ video
def _video_parity(model, hf, recipe, decoder_eps: float | None = None) -> dict[str, float]:
    """Encoder output and prediction of ``model`` and ``hf`` (VideoMAEForPreTraining) on the same clip
    and the same ``bool_masked_pos`` (drawn by the recipe's tube masker)."""
    name = _stream(recipe)
    s = model.streams[name]
    gen = torch.Generator().manual_seed(3)
    x = s.tokenizer.example_input(2, gen)
    bool_masked_pos = s.masker(s.tokenizer(x).layout, gen).bool_mask()
    mask = StreamMask.from_bool(bool_masked_pos)
    pixel_values = x.transpose(1, 2)  # (B, C, T, H, W) -> transformers' (B, T, C, H, W)
    out = {}
    with torch.no_grad():
        theirs = hf(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos)
        encoded = hf.videomae(pixel_values=pixel_values, bool_masked_pos=bool_masked_pos).last_hidden_state
        eps = s.decoder.norm.eps
        if decoder_eps is not None:
            s.decoder.norm.eps = decoder_eps
        try:
            ours = model({s.input_key or name: x}, masks={name: mask})
        finally:
            s.decoder.norm.eps = eps
        out["encoder (masked)"] = _close(ours.encoded, encoded, "encoder output")
        assert torch.equal(ours.predictions[name].index, mask.masked)
        out["prediction"] = _close(ours.predictions[name].values, theirs.logits, "prediction")
        full = hf.videomae(pixel_values=pixel_values).last_hidden_state
        out["features (mean)"] = _close(model.features({s.input_key or name: x}, pool="mean"), full.mean(1), "features")
    return out


FRAMES = [[], ["model.streams.video.tokenizer.img_size=[32,48]"]]  # the recipe's square frames, and wider ones


@pytest.mark.parametrize("frames", FRAMES, ids=["square", "wide"])
def test_video_mmim_to_transformers_parity(frames):
    from mmim_video.converters.transformers import HF_DECODER_NORM_EPS, to_videomae

    recipe = _recipe("video", "model.streams.video.decoder.final_norm_eps=1.0e-5", *frames)
    model = _perturbed(build_model(recipe.model))
    assert model.streams["video"].decoder.norm.eps == HF_DECODER_NORM_EPS  # the option acts
    hf = to_videomae(model)
    assert hf.decoder.norm.eps == HF_DECODER_NORM_EPS and hf.config.layer_norm_eps == recipe.model.encoder.norm_eps
    print(_video_parity(model, hf, recipe))


def test_video_decoder_norm_eps_is_the_only_difference():
    """A model trained with VideoMAE's decoder norm eps (1e-6): the encoder agrees within the bound;
    the predictions agree once only that eps is set to transformers' hard-coded 1e-5."""
    from mmim_video.converters.transformers import HF_DECODER_NORM_EPS, to_videomae

    recipe = _recipe("video")
    model = _perturbed(build_model(recipe.model))
    assert model.streams["video"].decoder.norm.eps != HF_DECODER_NORM_EPS
    hf = to_videomae(model)
    print(_video_parity(model, hf, recipe, decoder_eps=HF_DECODER_NORM_EPS))


@pytest.mark.parametrize("frames", FRAMES, ids=["square", "wide"])
def test_video_transformers_to_mmim_parity(frames, tmp_path):
    recipe = _recipe("video", "model.streams.video.decoder.final_norm_eps=1.0e-5", *frames)
    torch.manual_seed(1)
    hf = _perturbed(transformers.VideoMAEForPreTraining(_videomae_config(recipe)), seed=1)
    hf.save_pretrained(tmp_path / "hf")
    model = build_model(recipe.model).eval()
    assert converter_for(model, "hf") == "video:hf"
    load_pretrained(model, f"hf:{tmp_path / 'hf'}")
    print(_video_parity(model, hf, recipe))


def test_video_mean_pooling_folder_leaves_encoder_norm_unset(tmp_path):
    """``use_mean_pooling: true`` has no final encoder norm: the rest loads, ``encoder.norm`` is left."""
    from mmim_video.converters.transformers import load_transformers_checkpoint

    recipe = _recipe("video")
    config = _videomae_config(recipe)
    config.use_mean_pooling = True
    _perturbed(transformers.VideoMAEForPreTraining(config)).save_pretrained(tmp_path / "hf")
    model = build_model(recipe.model)
    left = load_transformers_checkpoint(tmp_path / "hf", model)
    assert left == ["encoder.norm.weight", "encoder.norm.bias"]


# --------------------------------------------------------------------------------------- export (CLI)
def _fake_run(recipe, run_dir, seed: int = 0):
    """A run directory as training leaves it (config.yaml and a checkpoint), without training."""
    model = _perturbed(build_model(recipe.model), seed)
    run_dir.mkdir(parents=True)
    save_recipe(recipe, run_dir)
    save_atomic({"model": model.state_dict(), "step": 3}, run_dir / "ckpt-00000003.pt")
    return model


@pytest.mark.parametrize("modality,cls,base", [("image", "ViTMAEForPreTraining", "vit."),
                                               ("video", "VideoMAEForPreTraining", "videomae.")])
def test_export_loads_with_no_missing_or_unexpected_key(modality, cls, base, tmp_path, capsys):
    recipe = _recipe(modality)
    model = _fake_run(recipe, tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "transformers"]) == 0
    folder = tmp_path / "run" / "export" / "transformers"
    assert str(folder / "model.safetensors") in capsys.readouterr().out.split()
    for loader in (getattr(transformers, cls), transformers.AutoModelForPreTraining, transformers.AutoModel):
        loaded, info = loader.from_pretrained(folder, output_loading_info=True, local_files_only=True)
        assert not info["missing_keys"] and not info["mismatched_keys"], (loader, info)
        if loader is transformers.AutoModel:  # the encoder alone: only the decoder has no place in it
            assert type(loaded).__name__ == cls.replace("ForPreTraining", "Model")
            assert info["unexpected_keys"] and not any(k.startswith(base) for k in info["unexpected_keys"])
        else:
            assert type(loaded).__name__ == cls and not info["unexpected_keys"], (loader, info)
    config = json.loads((folder / "config.json").read_text())
    enc, s = recipe.model.encoder.resolved(), recipe.model.streams[_stream(recipe)]
    assert config["architectures"] == [cls] and config["layer_norm_eps"] == enc.norm_eps
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == \
        (enc.embed_dim, enc.depth, enc.num_heads)
    assert (config["decoder_hidden_size"], config["decoder_num_hidden_layers"], config["decoder_num_attention_heads"]) == \
        (s.decoder["embed_dim"], s.decoder["depth"], s.decoder["num_heads"])
    assert config["norm_pix_loss"] == s.target["normalize"]
    assert "transformers" in (folder / "README.md").read_text()
    hf = getattr(transformers, cls).from_pretrained(folder, local_files_only=True).eval()
    if modality == "image":
        assert config["patch_size"] == s.tokenizer["patch_size"] and config["mask_ratio"] == s.masker["ratio"]
        _image_parity(model, hf, recipe)
    else:
        assert config["tubelet_size"] == s.tokenizer["tubelet"][0] and config["use_mean_pooling"] is False
        _video_parity(model, hf, recipe, decoder_eps=hf.decoder.norm.eps)


@pytest.mark.parametrize("modality,cls", [("image", "ViTMAEModel"), ("video", "VideoMAEModel")])
def test_encoder_only_export_is_what_automodel_loads_whole(modality, cls, tmp_path, capsys):
    """``--encoder-only``: a base-model folder, so AutoModel reports nothing unexpected (a pre-training folder
    leaves it the decoder's keys); the encoder's features are mmim's."""
    recipe = _recipe(modality)
    model = _fake_run(recipe, tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "transformers", "--encoder-only"]) == 0
    folder = tmp_path / "run" / "export" / "transformers"
    assert json.loads((folder / "config.json").read_text())["architectures"] == [cls]
    loaded, info = transformers.AutoModel.from_pretrained(folder, output_loading_info=True, local_files_only=True)
    assert type(loaded).__name__ == cls and not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert "--encoder-only" in (folder / "README.md").read_text()
    name = _stream(recipe)
    x = model.streams[name].tokenizer.example_input(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        if modality == "image":
            grid = model.streams[name].tokenizer.grid
            out = loaded.eval()(pixel_values=x, noise=torch.arange(grid[0] * grid[1]).float().expand(2, -1))
            _close(model.features({name: x}, pool="cls"), out.last_hidden_state[:, 0], "cls features")
        else:
            out = loaded.eval()(pixel_values=x.transpose(1, 2))
            _close(model.features({name: x}, pool="mean"), out.last_hidden_state.mean(1), "mean features")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--encoder-only"]) != 0
    assert "--encoder-only is for --format transformers" in capsys.readouterr().err


def test_export_uses_the_hub_key_naming(tmp_path):
    """Written as the checkpoints on the hub are (older transformers versions read them too)."""
    from safetensors.torch import load_file

    from mmim_image.converters.transformers import export_transformers as export_image
    from mmim_video.converters.transformers import export_transformers as export_video

    image, video = _recipe("image"), _recipe("video")
    keys = set(load_file(export_image(build_model(image.model), image, tmp_path / "i")))
    assert "vit.encoder.layer.0.attention.attention.query.weight" in keys
    assert "decoder.decoder_layers.0.attention.attention.query.weight" in keys
    keys = set(load_file(export_video(build_model(video.model), video, tmp_path / "v")))
    assert "videomae.encoder.layer.0.attention.attention.q_bias" in keys
    assert not any("key.bias" in k for k in keys)


@pytest.mark.parametrize("target", ["points", "audio", "multimae_video_audio"])
def test_export_says_when_there_is_no_counterpart(target, tmp_path, capsys):
    path = default_recipe(target) if target in ("points", "audio") else find_recipe(target)
    _fake_run(load_recipe(path, SMALL), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "transformers"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no transformers counterpart" in err, err
    assert not (tmp_path / "run" / "export").exists()


def test_export_names_what_vitmae_cannot_hold(tmp_path, capsys):
    _fake_run(_recipe("image", "model.encoder.cls_token=false"), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "transformers"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no ViTMAE counterpart" in err and "prefix tokens" in err, err


def test_missing_extra_gives_the_pip_hint(tmp_path, capsys, monkeypatch):
    _fake_run(_recipe("image"), tmp_path / "run")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else find_spec(name, *a))
    assert main(["export", str(tmp_path / "run"), "--format", "transformers"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "mmim[transformers]"' in err, err


# ----------------------------------------------------------------------------------------- --init hf:DIR
def _hf_image_folder(recipe_dict, folder, seed: int = 1):
    recipe = recipe_from_dict(recipe_dict)
    _vitmae(_vitmae_config(recipe), seed).save_pretrained(folder)
    expected = build_model(recipe.model)
    load_pretrained(expected, f"hf:{folder}")
    return expected.state_dict()


def test_train_init_hf(tiny_recipe_dict, tmp_path):
    """``mmim train --init hf:DIR`` with lr 0: the run's weights are the folder's."""
    expected = _hf_image_folder(tiny_recipe_dict, tmp_path / "hf")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    assert main(["train", str(path), "--init", f"hf:{tmp_path / 'hf'}", "optim.lr=0.0", "schedule.max_steps=1",
                 "eval.after_train=false"]) == 0
    trained = load_checkpoint(tmp_path / "run")["model"]
    assert trained.keys() == expected.keys()
    assert all(torch.equal(trained[k], expected[k]) for k in expected), "the run did not start from the folder"


def test_finetune_init_hf(tiny_recipe_dict, tmp_path):
    expected = _hf_image_folder(tiny_recipe_dict, tmp_path / "hf")
    tiny_recipe_dict["finetune"] = {"epochs": 1, "batch_size": 16, "lr": 0.0, "drop_path": 0.0,
                                    "out_dir": str(tmp_path / "ft")}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict))
    init = f"hf:{tmp_path / 'hf'}"
    assert main(["finetune", str(path), "--init", init, "finetune.max_steps=1"]) == 0
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["init"] == init
    tuned = load_checkpoint(tmp_path / "ft")["model"]
    blocks = [k for k in expected if k.startswith("encoder.blocks.")]
    assert blocks and all(torch.equal(tuned[f"backbone.{k}"], expected[k]) for k in blocks)


def test_init_hf_names_what_does_not_fit(tiny_recipe_dict, tmp_path):
    from mmim.transformers_interop import TransformersFormatError

    _hf_image_folder(tiny_recipe_dict, tmp_path / "hf")
    other = dict(tiny_recipe_dict, model={**tiny_recipe_dict["model"], "encoder": {"embed_dim": 32, "depth": 2, "num_heads": 4}})
    with pytest.raises(TransformersFormatError, match="num_attention_heads 2 .recipe: 4."):
        load_pretrained(build_model(recipe_from_dict(other).model), f"hf:{tmp_path / 'hf'}")
    video = _recipe("video")
    transformers.VideoMAEForPreTraining(_videomae_config(video)).save_pretrained(tmp_path / "video")
    with pytest.raises(TransformersFormatError, match="model_type 'videomae'; this model reads vit_mae"):
        load_pretrained(build_model(recipe_from_dict(tiny_recipe_dict).model), f"hf:{tmp_path / 'video'}")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained(build_model(recipe_from_dict(tiny_recipe_dict).model), f"hf:{tmp_path}")
    assert main(["train", "--init", f"hf:{tmp_path / 'video'}", "--modality", "image", *SMALL,
                 f"train.out_dir={tmp_path / 'r'}"]) == 1
    assert not (tmp_path / "r").exists(), "a run directory was created before --init failed"


def test_encoder_only_folder_leaves_the_decoder(tiny_recipe_dict, tmp_path):
    from mmim_image.converters.transformers import load_transformers_checkpoint

    recipe = recipe_from_dict(tiny_recipe_dict)
    _vitmae(_vitmae_config(recipe), 0).vit.save_pretrained(tmp_path / "enc")  # a ViTMAEModel folder
    left = load_transformers_checkpoint(tmp_path / "enc", build_model(recipe.model))
    assert left and all(k.startswith("streams.image.decoder.") for k in left)


# ------------------------------------------------------------------- the encoder alone, teachers
@pytest.mark.parametrize("target,overrides,cls", [
    ("simmim_fashion_mnist", [], "ViTMAEModel"),
    ("data2vec_fashion_mnist", [], "ViTMAEModel"),
    ("video", ["model.streams.video.decoder={name: mae, embed_dim: 16, depth: 1, num_heads: 2}"], "VideoMAEModel"),
])
def test_export_writes_the_encoder_alone_when_the_decoder_has_no_counterpart(target, overrides, cls, tmp_path, caplog):
    path = default_recipe(target) if target == "video" else find_recipe(target)
    recipe = load_recipe(path, [*SMALL, *overrides])
    model = _fake_run(recipe, tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "transformers"]) == 0
    assert "the encoder alone" in caplog.text  # a warning on stderr
    folder = tmp_path / "run" / "export" / "transformers"
    for loader in (getattr(transformers, cls), transformers.AutoModel):
        loaded, info = loader.from_pretrained(folder, output_loading_info=True, local_files_only=True)
        assert type(loaded).__name__ == cls and not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert json.loads((folder / "config.json").read_text())["architectures"] == [cls]
    assert "the encoder alone" in (folder / "README.md").read_text()
    name = _stream(recipe)
    x = model.streams[name].tokenizer.example_input(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        if cls == "ViTMAEModel":  # every token, kept in order by increasing noise
            order = torch.arange(model.streams[name].tokenizer.grid[0] * model.streams[name].tokenizer.grid[1]).float()
            out = loaded(pixel_values=x, noise=order.expand(2, -1)).last_hidden_state
            _close(model.features({name: x}, pool="cls"), out[:, 0], "cls features")
            out = out[:, 1:]
        else:
            out = loaded(pixel_values=x.transpose(1, 2)).last_hidden_state
        _close(model.features({name: x}, pool="mean"), out.mean(1), "mean features")
    fresh = build_model(recipe.model)  # and back: the encoder from the folder, the rest left as built
    load_pretrained(fresh, f"hf:{folder}")
    ours = fresh.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith(("encoder.", f"streams.{name}.tokenizer.")):
            if cls == "VideoMAEModel" and k.endswith("attn.qkv.bias"):  # VideoMAE keeps no key bias
                v = torch.cat([v.chunk(3)[0], torch.zeros_like(v.chunk(3)[1]), v.chunk(3)[2]])
            assert torch.equal(ours[k], v), k


def test_train_init_hf_starts_the_ema_teacher_from_the_folder(tmp_path):
    """data2vec from a transformers encoder: the EMA teacher starts as the loaded student."""
    recipe = load_recipe(find_recipe("data2vec_fashion_mnist"), SMALL)
    folder = tmp_path / "hf"
    _vitmae(_vitmae_config_of_encoder(recipe), 2).vit.save_pretrained(folder)
    assert main(["train", "data2vec_fashion_mnist", *SMALL, "--init", f"hf:{folder}", "optim.lr=0.0",
                 "schedule.max_steps=1", "eval.after_train=false", f"train.out_dir={tmp_path / 'run'}",
                 "train.tensorboard=false", "train.progress=false", "data.batch_size=8"]) == 0
    state = load_checkpoint(tmp_path / "run")["model"]
    hf = transformers.ViTMAEModel.from_pretrained(folder, local_files_only=True)
    assert torch.equal(state["encoder.cls_token"], hf.embeddings.cls_token)
    students = [k for k in state if k.startswith("encoder.blocks.")]
    assert students and all(torch.equal(state[f"teacher.{k}"], state[k]) for k in students)


def _vitmae_config_of_encoder(recipe) -> object:
    enc, tok = recipe.model.encoder.resolved(), recipe.model.streams[_stream(recipe)].tokenizer
    return transformers.ViTMAEConfig(
        hidden_size=enc.embed_dim, num_hidden_layers=enc.depth, num_attention_heads=enc.num_heads,
        intermediate_size=int(enc.embed_dim * enc.mlp_ratio), layer_norm_eps=enc.norm_eps, image_size=tok["img_size"],
        patch_size=tok["patch_size"], num_channels=tok["in_chans"], qkv_bias=enc.qkv_bias)
