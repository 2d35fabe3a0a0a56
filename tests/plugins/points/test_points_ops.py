"""Point ops against brute force, a literal simulation of the CUDA FPS kernel, and the Point-MAE fixture."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmim_points.ops import (
    ball_query,
    chamfer_distances,
    chamfer_l1,
    chamfer_l2,
    farthest_point_sample,
    group_points,
    knn,
)
from mmim_points.ops.fps import kernel_block_size

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "pointmae"


@pytest.fixture(scope="module")
def fixture():
    return load_file(FIXTURE / "inputs.safetensors"), load_file(FIXTURE / "outputs.safetensors")


def kernel_fps(pts: np.ndarray, m: int) -> list[int]:
    """A literal, slow simulation of pointnet2's furthest_point_sampling_kernel (one block)."""
    pts = pts.astype(np.float32)
    n = len(pts)
    bs = max(min(2 ** int(math.log(n) / math.log(2)), 512), 1)
    temp = np.full(n, 1e10, dtype=np.float32)
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    mag = x * x + y * y + z * z  # fp32
    old, out = 0, [0]
    for _ in range(1, m):
        x1, y1, z1 = x[old], y[old], z[old]
        dists, dists_i = [-1.0] * bs, [0] * bs
        for tid in range(bs):
            best, besti = -1.0, 0
            for k in range(tid, n, bs):
                if float(mag[k]) <= 1e-3:
                    continue
                d = (x[k] - x1) * (x[k] - x1) + (y[k] - y1) * (y[k] - y1) + (z[k] - z1) * (z[k] - z1)
                d2 = min(d, temp[k])
                temp[k] = d2
                if d2 > best:
                    best, besti = float(d2), k
            dists[tid], dists_i[tid] = best, besti
        half = bs // 2
        while half >= 1:
            for tid in range(half):
                v1, v2 = dists[tid], dists[tid + half]
                dists_i[tid] = dists_i[tid + half] if v2 > v1 else dists_i[tid]
                dists[tid] = max(v1, v2)
            half //= 2
        old = dists_i[0]
        out.append(old)
    return out


def tied_cloud(n: int, seed: int) -> torch.Tensor:
    """Quantised coordinates (many exact distance ties), duplicates and near-origin points."""
    g = torch.Generator().manual_seed(seed)
    pts = torch.round(torch.randn(n, 3, generator=g) * 4) / 4
    dup = min(7, n // 4)
    pts[n // 5 : n // 5 + dup] = pts[n // 2 : n // 2 + dup]
    pts[[0, 3, n - 1]] = torch.tensor([[0.01, 0.0, 0.02], [0.0, 0.0, 0.0], [0.02, 0.01, 0.0]])
    return pts


def textbook_fps(points: torch.Tensor, m: int) -> torch.Tensor:
    """FPS from index 0 with first-index argmax and no skip rule."""
    dist = torch.full(points.shape[:2], float("inf"))
    out = torch.zeros(points.shape[0], m, dtype=torch.long)
    for j in range(1, m):
        last = points[torch.arange(points.shape[0]), out[:, j - 1]]
        dist = torch.minimum(dist, ((points - last[:, None]) ** 2).sum(-1))
        out[:, j] = dist.argmax(1)
    return out


def test_block_size():
    assert [kernel_block_size(n) for n in (1, 2, 3, 200, 256, 511, 512, 5000)] == [1, 2, 2, 128, 256, 256, 512, 512]


@pytest.mark.parametrize("n", [7, 160, 200, 300, 700])
def test_fps_equals_kernel_simulation(n):
    clouds = torch.stack([tied_cloud(n, seed) for seed in range(2)])
    got = farthest_point_sample(clouds, 12)
    want = torch.tensor([kernel_fps(c.numpy(), 12) for c in clouds])
    assert torch.equal(got, want)


def test_fps_matches_fixture_and_tiebreak_matters(fixture):
    inp, out = fixture
    assert torch.equal(farthest_point_sample(inp["points"], 16), out["fps_idx"].long())
    assert torch.equal(farthest_point_sample(inp["fps_edge_points"], 16), out["fps_edge_idx"].long())
    # a plain first-argmax FPS agrees on the generic cloud only: the edge cloud needs the kernel rules
    assert torch.equal(textbook_fps(inp["points"], 16), out["fps_idx"].long())
    assert not torch.equal(textbook_fps(inp["fps_edge_points"], 16), out["fps_edge_idx"].long())


def test_fps_degenerate_clouds():
    same = torch.full((2, 50, 3), 0.5)
    idx = farthest_point_sample(same, 8)
    assert idx.shape == (2, 8) and int(idx.max()) < 50
    at_origin = torch.zeros(1, 20, 3)
    assert torch.equal(farthest_point_sample(at_origin, 5), torch.zeros(1, 5, dtype=torch.long))
    assert torch.equal(farthest_point_sample(torch.randn(3, 10, 3), 1), torch.zeros(3, 1, dtype=torch.long))


def test_fps_without_skip_is_textbook():
    g = torch.Generator().manual_seed(3)
    pts = torch.randn(3, 257, 3, generator=g)
    assert torch.equal(farthest_point_sample(pts, 20, skip_near_origin=False), textbook_fps(pts, 20))


def test_knn_equals_stable_sort_and_chunks(fixture):
    inp, out = fixture
    pts = torch.stack([tied_cloud(300, 5), tied_cloud(300, 6)])
    query = pts[:, ::7]
    d2 = ((query[:, :, None] - pts[:, None]) ** 2).sum(-1)
    want_d, want_i = torch.sort(d2, dim=-1, stable=True)
    for chunk in (1 << 25, 1000):
        dist, idx = knn(pts, query, 9, chunk_elements=chunk)
        assert torch.equal(idx, want_i[..., :9])
        torch.testing.assert_close(dist, want_d[..., :9], rtol=1e-6, atol=1e-7)
    assert dist[..., 0].eq(0).all()  # every query is itself a reference point
    dist, idx = knn(inp["points"], out["center"], 8)
    assert torch.equal(idx, out["knn_idx"])  # the neighbours exactly; their distances to an ulp (CPU summation order)
    torch.testing.assert_close(dist.sqrt(), out["knn_dist"], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="k=301"):
        knn(pts, query, 301)


def test_knn_ties_go_to_lower_index():
    ref = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, 0, 0], [0, 0, 0]]])
    _, idx = knn(ref, torch.zeros(1, 1, 3), 5)
    assert idx.tolist() == [[[3, 4, 0, 1, 2]]]


def test_grouping_matches_fixture(fixture):
    inp, out = fixture
    for prefix, pts in (("", inp["points"]), ("fps_edge_", inp["fps_edge_points"])):
        groups = group_points(pts, 16, 8)
        assert torch.equal(groups.neighbor_index, out[f"{prefix}knn_idx"])
        assert torch.equal(groups.centers, out[f"{prefix}center"])
        assert torch.equal(groups.neighborhoods, out[f"{prefix}neighborhood"])


def brute_ball_query(ref, query, radius, nsample):
    out = torch.zeros(*query.shape[:2], nsample, dtype=torch.long)
    for b in range(ref.shape[0]):
        for s in range(query.shape[1]):
            found = [k for k in range(ref.shape[1]) if float(((query[b, s] - ref[b, k]) ** 2).sum()) < radius**2]
            found = found[:nsample]
            out[b, s] = torch.tensor((found + [found[0]] * nsample)[:nsample] if found else [0] * nsample)
    return out


def test_ball_query_equals_brute_force():
    g = torch.Generator().manual_seed(1)
    ref = torch.rand(2, 60, 3, generator=g)
    query = torch.cat([ref[:, :5], torch.full((2, 1, 3), 5.0)], dim=1)  # the last query has an empty ball
    for chunk in (1 << 25, 50):
        idx, count = ball_query(ref, query, 0.3, 8, chunk_elements=chunk)
        assert torch.equal(idx, brute_ball_query(ref, query, 0.3, 8))
    assert count[:, -1].eq(0).all() and count[:, :5].ge(1).all()
    idx, count = ball_query(ref[:, :4], query, 10.0, 6)  # fewer reference points than slots
    assert torch.equal(idx, brute_ball_query(ref[:, :4], query, 10.0, 6)) and count.eq(4).all()


def brute_chamfer(x, y):
    d = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    return d.min(2).values, d.min(1).values


def test_chamfer_values_and_gradients():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 40, 3, generator=g, requires_grad=True)
    y = torch.randn(3, 25, 3, generator=g, requires_grad=True)
    d1, d2, i1, i2 = chamfer_distances(x, y, chunk_elements=64)
    b1, b2 = brute_chamfer(x, y)
    torch.testing.assert_close(d1, b1)
    torch.testing.assert_close(d2, b2)
    assert i1.shape == (3, 40) and i2.shape == (3, 25)
    for ours, ref in ((chamfer_l2, lambda a, b: sum(d.mean() for d in brute_chamfer(a, b))),
                      (chamfer_l1, lambda a, b: sum(d.sqrt().mean() for d in brute_chamfer(a, b)) / 2)):
        gx, gy = torch.autograd.grad(ours(x, y), (x, y))
        rx, ry = torch.autograd.grad(ref(x, y), (x, y))
        torch.testing.assert_close(gx, rx)
        torch.testing.assert_close(gy, ry)


def test_chamfer_indices_break_ties_to_the_first_point():
    x = torch.tensor([[[0.0, 0, 0], [5.0, 5, 5], [1.0, 0, 0], [0.0, 0, 0]]])  # x[0] == x[3]
    y = torch.tensor([[[0.1, 0, 0], [0.5, 0, 0], [0.5, 0, 0]]])  # y[1] == y[2], equidistant from x[0] and x[2]
    for chunk in (1 << 25, 1):
        _, _, i1, i2 = chamfer_distances(x, y, chunk_elements=chunk)
        assert i1.tolist() == [[0, 1, 1, 0]] and i2.tolist() == [[0, 0, 0]]


def test_chamfer_fixture_and_zero_distance(fixture):
    _, out = fixture
    d1, d2, _, _ = chamfer_distances(out["rebuild_points"], out["gt_points"])
    assert torch.equal(d1, out["chamfer_dist1"]) and torch.equal(d2, out["chamfer_dist2"])
    torch.testing.assert_close(chamfer_l2(out["rebuild_points"], out["gt_points"]), out["loss"], rtol=1e-6, atol=0)
    x = torch.randn(2, 10, 3, requires_grad=True)
    loss = chamfer_l1(x, x.detach().clone())
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_agrees_with_pytorch3d_when_installed():
    """pytorch3d is an optional reference (it does not install on CPU-only Python 3.11)."""
    p3d = pytest.importorskip("pytorch3d.ops")
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(2, 300, 3, generator=g), torch.randn(2, 200, 3, generator=g)
    dist, idx = knn(x, y, 8)
    ref = p3d.knn_points(y, x, K=8)
    torch.testing.assert_close(dist, ref.dists)
    assert torch.equal(idx, ref.idx)  # no exact ties in random data
    d1, d2, _, _ = chamfer_distances(x, y)
    torch.testing.assert_close(d1, p3d.knn_points(x, y, K=1).dists[..., 0])
    torch.testing.assert_close(d2, p3d.knn_points(y, x, K=1).dists[..., 0])
    fps = p3d.sample_farthest_points(x, K=16, random_start_point=False)[1]
    assert torch.equal(fps, farthest_point_sample(x, 16, skip_near_origin=False))
