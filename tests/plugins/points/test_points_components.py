"""The points plugin's tokenizer, maskers, decoder and losses: contracts and Point-MAE semantics."""

from __future__ import annotations

import pytest
import torch

from mmim import registry
from mmim.model import build_model
from mmim.types import Layout
from mmim_points.converters.pointmae import pointmae_model_config
from mmim_points.loss import ChamferL1Loss, ChamferL2Loss
from mmim_points.maskers import PointBlockMasker, PointRandomMasker
from mmim_points.ops import chamfer_l2, group_points
from mmim_points.tokenizer import PointPatchTokenizer


def _cloud(batch=2, n=128, seed=0):
    return PointPatchTokenizer(8, num_group=8, group_size=8).example_input(batch, torch.Generator().manual_seed(seed))[:, :n]


def test_components_are_registered():
    for kind, name in (("tokenizer", "point_patch"), ("masker", "point_random"), ("masker", "point_block"),
                       ("loss", "chamfer_l2"), ("loss", "chamfer_l1"), ("decoder", "pointmae")):
        assert f"points:{name}" in registry.available(kind)


def test_tokenizer_content_layout_and_raw():
    tok = PointPatchTokenizer(16, num_group=8, group_size=6, channels=(8, 16, 32)).eval()
    x = _cloud(n=64)
    out = tok(x)
    groups = group_points(x, 8, 6)
    assert out.embeddings.shape == (2, 8, 16) and out.pos.shape == (2, 8, 16) and out.content.shape == (2, 8, 18)
    assert torch.equal(out.layout.centers, groups.centers) and out.layout.num_tokens == 8
    # point-major content: value 3*i + c is coordinate c of neighbour i
    assert torch.equal(out.content[:, :, 3 * 2 + 1], groups.neighborhoods[:, :, 2, 1])
    raw = tok.content_to_raw(out.content, out.layout)
    assert torch.allclose(raw.reshape(2, 8, 6, 3), x[torch.arange(2)[:, None, None], groups.neighbor_index], atol=1e-6)
    torch.testing.assert_close(out.pos, tok.pos_embed(groups.centers))
    assert tok.position_embedding(12)(out.layout).shape == (2, 8, 12)
    with pytest.raises(ValueError, match="too small"):
        tok(x[:, :5])
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        tok(torch.zeros(2, 64, 6))


def test_tokenizer_degenerate_cloud_is_finite():
    tok = PointPatchTokenizer(16, num_group=4, group_size=8, channels=(8, 16, 32))
    out = tok(torch.full((2, 32, 3), 0.3))
    assert torch.isfinite(out.embeddings).all() and out.content.abs().max() == 0


def test_point_random_masker_counts_order_and_generator():
    layout = Layout(batch_size=4, num_tokens=64)
    mask = PointRandomMasker(0.6)(layout, torch.Generator().manual_seed(0))
    assert mask.masked.shape == (4, 38) and mask.visible.shape == (4, 26)  # int(0.6 * 64) masked, as Point-MAE
    assert (mask.masked.diff(dim=1) > 0).all() and (mask.visible.diff(dim=1) > 0).all()
    again = PointRandomMasker(0.6)(layout, torch.Generator().manual_seed(0))
    assert torch.equal(again.masked, mask.masked)
    assert not torch.equal(PointRandomMasker(0.6)(layout, torch.Generator().manual_seed(1)).masked, mask.masked)
    counts = sum(PointRandomMasker(0.5)(Layout(batch_size=50, num_tokens=10), torch.Generator().manual_seed(s))
                 .bool_mask().float().sum(0) for s in range(20))
    assert counts.min() > 450 and counts.max() < 550  # 1000 draws: every position masked about half the time
    with pytest.raises(ValueError):
        PointRandomMasker(1.0)


def test_point_block_masker_masks_the_nearest_centers():
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(5, 32, 3, generator=g)
    layout = Layout(batch_size=5, num_tokens=32, centers=centers)
    mask = PointBlockMasker(0.6)(layout, torch.Generator().manual_seed(7))
    seeds = torch.randint(0, 32, (5,), generator=torch.Generator().manual_seed(7))
    assert mask.masked.shape == (5, 19)
    for b in range(5):
        d = (centers[b] - centers[b, seeds[b]]).norm(dim=-1)
        assert int(seeds[b]) in mask.masked[b].tolist()
        assert d[mask.masked[b]].max() <= d[mask.visible[b]].min()
    with pytest.raises(ValueError, match="centers"):
        PointBlockMasker()(Layout(batch_size=2, num_tokens=8), torch.Generator())


def test_chamfer_losses_on_token_sets():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 5, 24, generator=g), torch.randn(2, 5, 24, generator=g)
    out = ChamferL2Loss()(pred, target)
    torch.testing.assert_close(out.total, chamfer_l2(pred.reshape(10, 8, 3), target.reshape(10, 8, 3)))
    assert out.parts == {"chamfer_l2": pytest.approx(float(out.total))}
    # invariant to the order of points inside a token, not to which token a set belongs to
    shuffled = pred.reshape(2, 5, 8, 3)[:, :, torch.randperm(8, generator=g)].reshape(2, 5, 24)
    torch.testing.assert_close(ChamferL2Loss()(shuffled, target).total, out.total)
    assert float(ChamferL2Loss()(pred.flip(1), target).total) != pytest.approx(float(out.total))
    for loss_fn in (ChamferL2Loss(), ChamferL1Loss()):
        p, t = loss_fn.example_inputs(torch.Generator().manual_seed(1))
        p.requires_grad_(True)
        res = loss_fn(p, t)
        res.total.backward()
        assert p.grad.abs().sum() > 0 and float(loss_fn(t, t).total) == 0.0 < float(res.total.detach())
    with pytest.raises(ValueError, match="whole 3-D points"):
        ChamferL2Loss()(torch.zeros(2, 5, 7), torch.zeros(2, 5, 7))


def test_decoder_predicts_masked_tokens_only():
    cfg = pointmae_model_config(trans_dim=32, depth=1, num_heads=4, decoder_depth=1, decoder_num_heads=4,
                                num_group=8, group_size=8)
    model = build_model(cfg).eval()
    mask = PointRandomMasker(0.6)(Layout(batch_size=2, num_tokens=8), torch.Generator().manual_seed(0))
    x = _cloud(n=64)
    out = model({"points": x}, masks={"points": mask})
    pred = out.predictions["points"]
    assert pred.values.shape == (2, 4, 24) and torch.equal(pred.index, mask.masked)
    tokens = out.tokens["points"]
    assert torch.equal(out.targets["points"], torch.gather(tokens.content, 1, mask.masked[..., None].expand(-1, -1, 24)))


def test_tiny_model_learns_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = pointmae_model_config(trans_dim=32, depth=1, num_heads=4, decoder_depth=1, decoder_num_heads=4,
                                num_group=8, group_size=8, drop_path_rate=0.0)
    cfg.streams["points"].tokenizer["channels"] = [16, 32, 64]
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = _cloud(batch=4, n=128)
    losses = []
    for step in range(30):
        out = model({"points": x}, generator=torch.Generator().manual_seed(step % 3))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
