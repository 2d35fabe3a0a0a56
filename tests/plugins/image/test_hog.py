"""MaskFeat's HOG target: shapes, orientation conventions, normalisation, symmetries, and a
slow numpy reference written from the description (loops over pixels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmim.testing.conformance import check_target
from mmim.types import Layout, Tokens
from mmim_image.hog import HOGTarget
from mmim_image.tokenizer import PatchTokenizer


def _tokens(b: int, grid: tuple[int, int]) -> Tokens:
    n = grid[0] * grid[1]
    return Tokens(torch.zeros(b, n, 4), torch.zeros(1, n, 4), None, Layout(batch_size=b, grid=grid))


def _per_cell(out: torch.Tensor, c: int, nbins: int, u: int, v: int) -> torch.Tensor:
    """``(B, L, C*nbins*u*v)`` -> ``(B, L, C, nbins, u, v)`` (the documented order)."""
    return out.view(*out.shape[:2], c, nbins, u, v)


def reference_hog(img: np.ndarray, grid: tuple[int, int], nbins: int, cell: int, window: int, normalize: bool,
                  gradient: str = "central") -> np.ndarray:
    """Slow float64 HOG of ``img`` ``(B, C, H, W)`` -> ``(B, L, C*nbins*u*v)``, one pixel at a time."""
    b, c, h, w = img.shape
    ph, pw = h // grid[0], w // grid[1]
    u, v = ph // cell, pw // cell

    def px(plane: np.ndarray, i: int, j: int) -> float:  # reflection padding (edge pixel not repeated)
        i = -i if i < 0 else (2 * (h - 1) - i if i >= h else i)
        j = -j if j < 0 else (2 * (w - 1) - j if j >= w else j)
        return float(plane[i, j])

    if window:
        std = window // 2
        g1 = [math.exp(-0.5 * ((n - (window - 1) / 2) / std) ** 2) for n in range(window)]
        total = sum(g1) ** 2
    hist = np.zeros((b, c, nbins, h // cell, w // cell))
    for n in range(b):
        for ch in range(c):
            plane = img[n, ch]
            for i in range(h):
                for j in range(w):
                    if gradient == "sobel":
                        gx = sum(s * (px(plane, i + d, j + 1) - px(plane, i + d, j - 1)) for d, s in ((-1, 1), (0, 2), (1, 1)))
                        gy = sum(s * (px(plane, i + 1, j + d) - px(plane, i - 1, j + d)) for d, s in ((-1, 1), (0, 2), (1, 1)))
                    else:
                        gx = px(plane, i, j + 1) - px(plane, i, j - 1)
                        gy = px(plane, i + 1, j) - px(plane, i - 1, j)
                    mag = math.sqrt(gx * gx + gy * gy)
                    theta = math.atan2(gx, gy) % math.pi
                    k = int(math.floor(theta / math.pi * nbins)) % nbins
                    if window:
                        mag *= g1[i % window] * g1[j % window] / total
                    hist[n, ch, k, i // cell, j // cell] += mag
    if normalize:
        for n in range(b):
            for ch in range(c):
                for ci in range(h // cell):
                    for cj in range(w // cell):
                        norm = math.sqrt(sum(hist[n, ch, k, ci, cj] ** 2 for k in range(nbins)))
                        hist[n, ch, :, ci, cj] /= max(norm, 1e-12)
    out = np.zeros((b, grid[0] * grid[1], c * nbins * u * v))
    for n in range(b):
        for ti in range(grid[0]):
            for tj in range(grid[1]):
                f = 0
                for ch in range(c):
                    for k in range(nbins):
                        for a in range(u):
                            for e in range(v):
                                out[n, ti * grid[1] + tj, f] = hist[n, ch, k, ti * u + a, tj * v + e]
                                f += 1
    return out


def test_shapes_and_dim():
    tok = PatchTokenizer(embed_dim=16, img_size=32, patch_size=16, in_chans=3)
    target = HOGTarget()
    assert target.dim(tok) == 3 * 9 * 2 * 2 == 108
    x = torch.randn(2, 3, 32, 32)
    out = target(x, tok(x))
    assert out.shape == (2, 4, 108) and out.dtype == torch.float32
    rect = PatchTokenizer(embed_dim=16, img_size=(32, 48), patch_size=(16, 8), in_chans=1)
    t2 = HOGTarget(nbins=6, cell_size=4)
    assert t2.dim(rect) == 1 * 6 * 4 * 2
    x2 = torch.randn(3, 1, 32, 48)
    assert t2(x2, rect(x2)).shape == (3, 2 * 6, 48)


def test_dim_rejects_patch_not_multiple_of_cell():
    with pytest.raises(ValueError, match="not a multiple of cell_size=8"):
        HOGTarget().dim(PatchTokenizer(embed_dim=16, img_size=28, patch_size=14))
    with pytest.raises(ValueError, match="not a multiple of cell_size=8"):
        HOGTarget()(torch.randn(1, 3, 28, 28), _tokens(1, (2, 2)))
    with pytest.raises(ValueError, match="2-D token grid"):
        HOGTarget()(torch.randn(1, 3, 32, 32), _tokens(1, (2, 2, 1)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        HOGTarget()(torch.randn(3, 32, 32), _tokens(1, (2, 2)))


def test_example_inputs_pass_conformance():
    check_target("hog")
    raw, tokens = HOGTarget().example_inputs(torch.Generator().manual_seed(0))
    assert raw.shape == (2, 3, 32, 32) and tokens.layout.grid == (2, 2)


def test_vertical_edge_fills_horizontal_gradient_bin():
    x = torch.zeros(1, 3, 32, 32)
    x[..., 16:] = 1.0  # a vertical edge: the gradient is horizontal (theta = pi/2)
    target = HOGTarget(gaussian_window=0)
    cells = _per_cell(target(x, _tokens(1, (2, 2))), 3, 9, 2, 2)
    horizontal = 9 // 2  # floor((pi/2) / pi * 9)
    energy = cells.square().sum(dim=(0, 1, 2, 4, 5))
    assert energy[horizontal] > 0 and torch.allclose(energy.sum(), energy[horizontal])
    # the edge lies between cell columns 1 and 2 (tokens 0/2 have it in their right cell column)
    assert torch.allclose(cells[0, 0, :, horizontal, :, 1], torch.ones(3, 2))
    assert torch.equal(cells[0, 0, :, :, :, 0], torch.zeros(3, 9, 2))
    # rotated by 90 degrees it is a horizontal edge: everything moves to bin 0 (theta = 0)
    cells_rot = _per_cell(target(torch.rot90(x, 1, (2, 3)), _tokens(1, (2, 2))), 3, 9, 2, 2)
    energy_rot = cells_rot.square().sum(dim=(0, 1, 2, 4, 5))
    assert energy_rot[0] > 0 and torch.allclose(energy_rot.sum(), energy_rot[0])


def test_constant_image_gives_zero_features():
    for value in (0.0, 3.5, -1.0):
        out = HOGTarget()(torch.full((2, 3, 32, 32), value), _tokens(2, (2, 2)))
        assert torch.isfinite(out).all() and torch.equal(out, torch.zeros_like(out))


def test_each_cell_has_unit_norm_where_there_is_gradient():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    x[1, 2] = 0.7  # one flat channel: its cells stay zero
    cells = _per_cell(HOGTarget()(x, _tokens(2, (2, 2))), 3, 9, 2, 2)
    norms = cells.norm(dim=3)  # over the bins -> (B, L, C, u, v)
    assert torch.allclose(norms[0], torch.ones_like(norms[0]), atol=1e-6)
    assert torch.allclose(norms[1, :, :2], torch.ones_like(norms[1, :, :2]), atol=1e-6)
    assert torch.equal(norms[1, :, 2], torch.zeros_like(norms[1, :, 2]))
    assert (cells >= 0).all()
    raw = _per_cell(HOGTarget(normalize=False)(x, _tokens(2, (2, 2))), 3, 9, 2, 2)
    assert not torch.allclose(raw.norm(dim=3)[0], torch.ones_like(norms[0]))


def test_rotation_by_180_degrees_moves_cells_not_bins():
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    target = HOGTarget()
    cells = _per_cell(target(x, _tokens(1, (2, 2))), 3, 9, 2, 2)
    cells_rot = _per_cell(target(torch.rot90(x, 2, (2, 3)), _tokens(1, (2, 2))), 3, 9, 2, 2)
    # token (i, j) -> (1-i, 1-j) is a reversal of the row-major token order; cells inside reverse too
    expected = cells.flip(1).flip(4).flip(5)
    assert torch.allclose(cells_rot, expected, atol=1e-9)


def test_mirror_image_mirrors_orientations():
    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ramp = (i + j).expand(1, 3, 32, 32)  # gradient (1, 1): theta = pi/4 -> bin 2 of 9
    target = HOGTarget()
    hist = target.cell_histograms(ramp)
    mirrored = target.cell_histograms(ramp.flip(3))  # theta = 3pi/4 -> bin 6 = 8 - 2
    inner = (slice(None), slice(None), slice(None), slice(1, 3), slice(1, 3))  # cells away from the border
    onehot = torch.zeros(9, 1, 1)
    assert torch.allclose(hist[inner], onehot.index_fill(0, torch.tensor([2]), 1.0).expand(1, 3, 9, 2, 2))
    assert torch.allclose(mirrored[inner], onehot.index_fill(0, torch.tensor([6]), 1.0).expand(1, 3, 9, 2, 2))


def test_batch_independence():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 32, 32, generator=g)
    target = HOGTarget()
    full = target(x, _tokens(4, (2, 2)))
    for n in range(4):
        assert torch.equal(target(x[n : n + 1], _tokens(1, (2, 2))), full[n : n + 1])


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("gradient", ["central", "sobel"])
def test_matches_slow_numpy_reference(normalize, gradient):
    g = torch.Generator().manual_seed(4)
    img = torch.randn(2, 2, 16, 24, generator=g)
    grid = (2, 3)  # patches 8x8, cells 4x4 -> u = v = 2
    expected = reference_hog(img.double().numpy(), grid, nbins=9, cell=4, window=8, normalize=normalize,
                             gradient=gradient)
    target = HOGTarget(nbins=9, cell_size=4, gaussian_window=8, normalize=normalize, gradient=gradient)
    got64 = target(img.double(), _tokens(2, grid))
    np.testing.assert_allclose(got64.numpy(), expected, atol=1e-12)
    got32 = target(img, _tokens(2, grid))
    np.testing.assert_allclose(got32.numpy(), expected, atol=1e-5)


def test_default_settings_match_slow_reference_on_a_patch_grid():
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    expected = reference_hog(img.double().numpy(), (2, 2), nbins=9, cell=8, window=16, normalize=True)
    got = HOGTarget()(img, _tokens(1, (2, 2)))
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_low_precision_input_and_no_window():
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    ref = HOGTarget(gaussian_window=0)(x, _tokens(2, (2, 2)))
    half = HOGTarget(gaussian_window=0)(x.bfloat16(), _tokens(2, (2, 2)))
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert ref.shape == half.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    target = HOGTarget()
    cpu = target(x, _tokens(4, (4, 4)))
    gpu = target(x.cuda(), _tokens(4, (4, 4)))
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-5)
