"""Parity with the official Point-MAE model on every fixture set tests/fixtures/pointmae* (sizes, mask type
and batch read from each config.json) and the converter round trips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmim.model import build_model
from mmim.types import StreamMask, gather_tokens
from mmim_points.converters.pointmae import (
    is_finetune_state,
    load_pointmae_checkpoint,
    mmim_to_pointmae,
    mmim_to_pointtransformer,
    official_state_dict,
    pointmae_model_config,
    pointmae_to_mmim,
    pointtransformer_to_mmim,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SETS = sorted(p.name for p in FIXTURES.iterdir() if re.fullmatch(r"pointmae(-.+)?", p.name))
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module", params=SETS)
def fixture(request):
    root = FIXTURES / request.param
    cfg = json.loads((root / "config.json").read_text())
    # a set may store the (fp16-representable) weights as float16 to stay small: the values are exact in fp32
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load_file(root / "official_state_dict.safetensors").items()}
    return cfg, state, load_file(root / "inputs.safetensors"), load_file(root / "outputs.safetensors")


def test_sets_differ_in_what_matters():
    cfgs = [json.loads((FIXTURES / s / "config.json").read_text()) for s in SETS]
    for key in ("mask_type", "trans_dim", "depth", "decoder_depth", "mask_ratio"):
        assert len({c["model"]["transformer_config"][key] for c in cfgs}) > 1, key
    assert len({(c["model"]["num_group"], c["model"]["group_size"], c["batch_size"]) for c in cfgs}) > 1


def _config(cfg, finetune=False):
    m, t = cfg["model"], cfg["model"]["transformer_config"]
    assert m["NAME"] == "Point_MAE" and m["loss"] == "cdl2" and t["encoder_dims"] == t["trans_dim"]
    return pointmae_model_config(trans_dim=t["trans_dim"], depth=t["depth"], num_heads=t["num_heads"],
                                 decoder_depth=t["decoder_depth"], decoder_num_heads=t["decoder_num_heads"],
                                 num_group=m["num_group"], group_size=m["group_size"], mask_ratio=t["mask_ratio"],
                                 mask_type=t["mask_type"], drop_path_rate=t["drop_path_rate"], finetune=finetune)


@pytest.fixture(scope="module")
def model(fixture):
    cfg, sd, _, _ = fixture
    net = build_model(_config(cfg)).eval()
    net.load_state_dict(pointmae_to_mmim({f"module.{k}": v for k, v in sd.items()}), strict=True)
    return net


def test_every_intermediate_matches_official(fixture, model):
    cfg, _, inp, out = fixture
    batch, groups, size = cfg["batch_size"], cfg["model"]["num_group"], cfg["model"]["group_size"]
    mask = StreamMask.from_bool(inp["mask"])
    assert mask.masked.shape[1] == cfg["num_mask_per_sample"] and torch.equal(mask.bool_mask(), inp["mask"])
    stream = model.streams["points"]
    assert len(stream.decoder.blocks) == cfg["model"]["transformer_config"]["decoder_depth"]
    captured = {}
    hooks = [stream.decoder.blocks[0].register_forward_hook(lambda m, i, o: captured.__setitem__("dec_block0", o)),
             stream.decoder.norm.register_forward_hook(lambda m, i, o: captured.__setitem__("x_rec", o))]
    try:
        with torch.no_grad():
            result = model({"points": inp["points"]}, masks={"points": mask})
            tokens = result.tokens["points"]
            x = gather_tokens(tokens.embeddings, mask.visible)
            pos = gather_tokens(tokens.pos, mask.visible)
            _, encoded, layers = model.encoder(x, pos=pos, return_layers=True)
            dec_pos = stream.decoder.position(tokens.layout)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(tokens.layout.centers, out["center"])
    assert torch.equal(tokens.content, out["neighborhood"].reshape(batch, groups, 3 * size))
    torch.testing.assert_close(tokens.embeddings, out["group_input_tokens"], **TOL)
    torch.testing.assert_close(pos, out["enc_pos_vis"], **TOL)
    for i, layer in enumerate(layers):
        torch.testing.assert_close(layer, out[f"enc_block{i}_out"], **TOL)
    torch.testing.assert_close(encoded, out["x_vis"], **TOL)
    torch.testing.assert_close(gather_tokens(dec_pos, mask.visible), out["dec_pos_vis"], **TOL)
    torch.testing.assert_close(gather_tokens(dec_pos, mask.masked), out["dec_pos_mask"], **TOL)
    torch.testing.assert_close(captured["dec_block0"], out["dec_block0_out"], **TOL)
    assert len(layers) == cfg["model"]["transformer_config"]["depth"]
    torch.testing.assert_close(captured["x_rec"], out["x_rec"], **TOL)
    pred = result.predictions["points"]
    assert torch.equal(pred.index, mask.masked)
    torch.testing.assert_close(pred.values.reshape(-1, size, 3), out["rebuild_points"], **TOL)
    assert torch.equal(result.targets["points"].reshape(-1, size, 3), out["gt_points"])
    torch.testing.assert_close(result.loss, out["loss"], **TOL)


def test_masker_draws_the_official_kind_of_mask(fixture, model):
    """``mask_type`` ``rand`` / ``block``: the configured masker hides as many groups, and (block) the
    hidden groups are the nearest centers to one of them, as the official ``_mask_center_block``."""
    cfg, _, inp, out = fixture
    stream = model.streams["points"]
    with torch.no_grad():
        layout = model.tokenize({"points": inp["points"]})["points"].layout
    drawn = stream.masker(layout, torch.Generator().manual_seed(0))
    assert drawn.masked.shape[1] == cfg["num_mask_per_sample"]

    def is_block(hidden: torch.Tensor, centers: torch.Tensor) -> bool:
        for h, c in zip(hidden, centers):
            dist = torch.cdist(c, c)  # (G, G): some hidden center whose nearest n centers are exactly the hidden ones
            near = dist.argsort(dim=1)[:, : int(h.sum())]
            if not any(bool(h[near[i]].all()) for i in torch.nonzero(h).flatten()):
                return False
        return True

    block = cfg["model"]["transformer_config"]["mask_type"] == "block"
    assert is_block(inp["mask"], out["center"]) == block
    assert is_block(drawn.bool_mask(), layout.centers) == block


def test_parity_fails_with_a_wrong_mapping(fixture):
    """The fixture's perturbed parameters make a swapped tensor visible (guards the test itself)."""
    cfg, sd, inp, out = fixture
    net = build_model(_config(cfg)).eval()
    state = pointmae_to_mmim(sd)
    key = "streams.points.tokenizer.encoder.first_conv.1.running_mean"
    state[key] = torch.zeros_like(state[key])
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        tokens = net.tokenize({"points": inp["points"]})["points"]
    assert not torch.allclose(tokens.embeddings, out["group_input_tokens"], **TOL)


def test_pretrain_round_trip(fixture, model):
    _, sd, _, _ = fixture
    back = mmim_to_pointmae(model.state_dict())
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    again = pointmae_to_mmim(back)
    assert all(torch.equal(again[k], v) for k, v in model.state_dict().items())
    with pytest.raises(KeyError, match="no mapping"):
        pointmae_to_mmim({**sd, "MAE_decoder.head.weight": torch.zeros(1)})


def test_checkpoint_files_and_prefixes(fixture, tmp_path):
    _, sd, _, _ = fixture
    path = tmp_path / "pretrain.pth"
    torch.save({"base_model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 300, "optimizer": {},
                "metrics": {"acc": 0.0}, "best_metrics": {"acc": 0.0}}, path)
    state = official_state_dict(path)
    assert set(state) == set(sd) and not is_finetune_state(state)
    assert set(official_state_dict({"model": sd})) == set(sd)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        official_state_dict(tmp_path / "bad.pth")


def _finetune_state(sd):
    """A PointTransformer state dict built from the fixture's encoder weights (official fine-tune key layout)."""
    state = {k[len("MAE_encoder."):]: v for k, v in sd.items() if k.startswith("MAE_encoder.")}
    g = torch.Generator().manual_seed(0)
    dim = sd["mask_token"].shape[-1]
    state["cls_token"] = torch.randn(1, 1, dim, generator=g)
    state["cls_pos"] = torch.randn(1, 1, dim, generator=g)
    for i, (fan_in, fan_out) in zip((0, 4, 8), ((2 * dim, 256), (256, 256), (256, 40))):
        state[f"cls_head_finetune.{i}.weight"] = torch.randn(fan_out, fan_in, generator=g)
        state[f"cls_head_finetune.{i}.bias"] = torch.randn(fan_out, generator=g)
    for i in (1, 5):
        for name in ("weight", "bias", "running_mean", "running_var"):
            state[f"cls_head_finetune.{i}.{name}"] = torch.rand(256, generator=g)
        state[f"cls_head_finetune.{i}.num_batches_tracked"] = torch.tensor(7)
    return state


def test_finetune_checkpoint_loads_encoder(fixture):
    cfg, sd, inp, _ = fixture
    official = _finetune_state(sd)
    assert is_finetune_state(official)
    body, head = pointtransformer_to_mmim({f"module.{k}": v for k, v in official.items()})
    assert set(head) == {k[len("cls_head_finetune."):] for k in official if k.startswith("cls_head_finetune.")}
    net = build_model(_config(cfg, finetune=True)).eval()
    missing, unexpected = net.load_state_dict(body, strict=False)
    assert not unexpected and all(k.startswith("streams.points.decoder.") for k in missing)
    assert torch.equal(net.encoder.cls_pos, official["cls_pos"]) and torch.equal(net.encoder.cls_token, official["cls_token"])
    back = mmim_to_pointtransformer(net.state_dict(), head)
    assert set(back) == set(official) and all(torch.equal(back[k], official[k]) for k in official)
    # PointTransformer forward up to the pooled feature: cls + every group token, positions before each block
    with torch.no_grad():
        tokens = net.tokenize({"points": inp["points"]})["points"]
        prefix, enc = net.encoder(tokens.embeddings, pos=tokens.pos)
        n = inp["points"].shape[0]
        x = torch.cat([official["cls_token"].expand(n, -1, -1), tokens.embeddings], 1)
        pos = torch.cat([official["cls_pos"].expand(n, -1, -1), tokens.pos], 1)
        for block in net.encoder.blocks:
            x = block(x + pos)
        x = torch.nn.functional.layer_norm(x, (x.shape[-1],), official["norm.weight"], official["norm.bias"], 1e-5)
    torch.testing.assert_close(torch.cat([prefix, enc], 1), x, **TOL)


def test_registered_converter_loads_files(fixture, tmp_path):
    from mmim import registry

    cfg, sd, _, _ = fixture
    load = registry.resolve("converter", "pointmae")
    torch.save({"base_model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1}, tmp_path / "pretrain.pth")
    net = build_model(_config(cfg)).eval()
    assert load(tmp_path / "pretrain.pth", net) == []
    assert torch.equal(mmim_to_pointmae(net.state_dict())["MAE_encoder.norm.weight"], sd["MAE_encoder.norm.weight"])
    cls_net = build_model(_config(cfg, finetune=True))
    missing = load(tmp_path / "pretrain.pth", cls_net)  # fine-tuning from pretrain.pth: fresh cls token, as official
    assert set(missing) == {"encoder.cls_token", "encoder.cls_pos"}
    torch.save({"base_model": _finetune_state(sd)}, tmp_path / "modelnet_1k.pth")
    assert all(k.startswith("streams.points.decoder.") for k in load(tmp_path / "modelnet_1k.pth", cls_net))
    with pytest.raises(ValueError, match="modelnet_1k.pth: does not fit the model .*cls_token"):
        load(tmp_path / "modelnet_1k.pth", net)


def test_converter_fills_the_mlp_head_from_cls_head_finetune(fixture, tmp_path, caplog):
    """``finetune.head: mlp`` has the official head's layout: a fine-tuned checkpoint fills it exactly."""
    from mmim.finetune.classifier import EncoderClassifier, build_head

    cfg, sd, inp, _ = fixture
    official = _finetune_state(sd)
    torch.save({"base_model": official}, tmp_path / "modelnet_1k.pth")
    dim = sd["mask_token"].shape[-1]
    net = build_model(_config(cfg, finetune=True))
    head = build_head("mlp", 2 * dim, 40)
    load_pointmae_checkpoint(tmp_path / "modelnet_1k.pth", net, head=head)
    for key, value in head.state_dict().items():
        assert torch.equal(value, official[f"cls_head_finetune.{key}"]), key
    # the whole PointTransformer: [cls, max over groups] -> cls_head_finetune, in eval mode
    clf = EncoderClassifier(net, 40, pool="cls_max", head=head).eval()
    with torch.no_grad():
        tokens = net.tokenize({"points": inp["points"]})["points"]
        n = inp["points"].shape[0]
        x = torch.cat([official["cls_token"].expand(n, -1, -1), tokens.embeddings], 1)
        pos = torch.cat([official["cls_pos"].expand(n, -1, -1), tokens.pos], 1)
        for block in net.encoder.blocks:
            x = block(x + pos)
        x = torch.nn.functional.layer_norm(x, (dim,), official["norm.weight"], official["norm.bias"], 1e-5)
        feats = torch.cat([x[:, 0], x[:, 1:].max(1).values], -1)
        for i in (0, 1, 4, 5, 8):
            p = {n: official[f"cls_head_finetune.{i}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")
                 if f"cls_head_finetune.{i}.{n}" in official}
            if i in (1, 5):
                feats = torch.relu(torch.nn.functional.batch_norm(feats, p["running_mean"], p["running_var"], p["weight"],
                                                                  p["bias"], eps=1e-5))
            else:
                feats = torch.nn.functional.linear(feats, p["weight"], p["bias"])
        torch.testing.assert_close(clf({"points": inp["points"]}), feats, **TOL)
    other = build_head("mlp", 2 * dim, 15)  # another class count: stays fresh, with a warning
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with caplog.at_level("WARNING"):
        load_pointmae_checkpoint(tmp_path / "modelnet_1k.pth", build_model(_config(cfg, finetune=True)), head=other)
    assert "modelnet_1k.pth: classification head not loaded" in caplog.text
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
