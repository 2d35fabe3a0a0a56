"""MaskFeat's target: per-channel histograms of oriented gradients (HOG) of each patch.

Wei et al., "Masked Feature Prediction for Self-Supervised Visual Pre-Training" (CVPR 2022)
regress, for every masked 16x16 patch, the HOG of its 2x2 cells of 8x8 pixels with 9
orientation bins, computed on each RGB channel separately and L2-normalised per cell (no
block normalisation): ``3 * 9 * 2 * 2 = 108`` values per patch.

What is computed, per image channel (all batched, no loops over pixels):

1. gradients ``g_x`` (along the width) and ``g_y`` (along the height) of the image padded by
   one pixel with reflection (as in the official SlowFast ``HOGLayerC`` and mmpretrain's
   ``HOGGenerator``). ``gradient="central"`` uses the ``[-1, 0, 1]`` kernel,
   ``g_x[i, j] = x[i, j+1] - x[i, j-1]``; ``gradient="sobel"`` smooths that across the other
   axis with ``[1, 2, 1]`` (the 3x3 Sobel kernel the official code uses);
2. magnitude ``sqrt(g_x^2 + g_y^2)`` and unsigned orientation
   ``theta = atan2(g_x, g_y) mod pi`` in ``[0, pi)``, i.e. measured from the height axis:
   ``theta = 0`` for a purely vertical gradient (a horizontal edge), ``theta = pi / 2`` for a
   purely horizontal gradient (a vertical edge). This is the reference code's convention, so
   bin ``k`` means the same in both; hard binning ``bin = floor(theta / pi * nbins)``;
3. the magnitude multiplied by a 2-D Gaussian window of ``gaussian_window`` pixels (standard
   deviation ``gaussian_window // 2``, normalised to sum 1) tiled over the image from its top
   left corner, as the reference does (``0`` disables the window);
4. magnitudes summed per bin over each ``cell_size x cell_size`` cell;
5. each cell's ``nbins``-histogram L2-normalised (``normalize``; an all-zero histogram stays 0).

Token layout: tokens are row-major over the ``(H/p, W/q)`` patch grid like
:class:`~mmim_image.tokenizer.PatchTokenizer`, and one token's ``C * nbins * (p/cell) * (q/cell)``
values are ordered (channel, bin, cell row, cell column), cell column fastest: the order of
mmpretrain's MaskFeat ``HOGGenerator`` output.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from mmim.interfaces import Target, Tokenizer
from mmim.types import Tokens


def gaussian_window_1d(size: int, std: float, dtype: torch.dtype = torch.float64,
                       device: torch.device | None = None) -> Tensor:
    """``(size,)`` unnormalised Gaussian ``exp(-n^2 / (2 std^2))`` centred at ``(size - 1) / 2``."""
    n = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    return torch.exp(-0.5 * (n / std) ** 2)


class HOGTarget(Target):
    """Per-token HOG of the raw image (MaskFeat).

    Args:
        nbins: orientation bins over ``[0, pi)``.
        cell_size: side of a square cell in pixels; must divide the patch size.
        gaussian_window: side of the Gaussian weighting window in pixels, tiled over the image
            (std ``gaussian_window // 2``); ``0`` disables it.
        normalize: L2-normalise each cell's histogram (per channel).
        gradient: ``"central"`` (``[-1, 0, 1]``) or ``"sobel"`` (3x3 Sobel, as the official
            SlowFast/mmpretrain code) image gradients.
        eps: lower bound of the norm in the normalisation (as ``F.normalize``).
    """

    def __init__(self, nbins: int = 9, cell_size: int = 8, gaussian_window: int = 16, normalize: bool = True,
                 gradient: Literal["central", "sobel"] = "central", eps: float = 1e-12) -> None:
        super().__init__()
        if nbins < 1 or cell_size < 1 or gaussian_window < 0:
            raise ValueError(f"HOGTarget: need nbins >= 1, cell_size >= 1, gaussian_window >= 0; "
                             f"got {nbins}, {cell_size}, {gaussian_window}")
        if gradient not in ("central", "sobel"):
            raise ValueError(f"HOGTarget: gradient must be 'central' or 'sobel', got {gradient!r}")
        if gaussian_window and gaussian_window // 2 == 0:
            raise ValueError(f"HOGTarget: gaussian_window={gaussian_window} gives a zero standard deviation")
        self.nbins, self.cell_size, self.gaussian_window = nbins, cell_size, gaussian_window
        self.normalize, self.gradient, self.eps = normalize, gradient, eps

    def dim(self, tokenizer: Tokenizer) -> int:
        """``C * nbins * (p / cell_size) * (q / cell_size)`` for a 2-D patch tokenizer."""
        patch = getattr(tokenizer, "patch_size", None)
        chans = getattr(tokenizer, "in_chans", None)
        if chans is None or not isinstance(patch, tuple | list) or len(patch) != 2:
            raise ValueError(f"HOGTarget needs a 2-D patch tokenizer (with in_chans and patch_size (p, q)), "
                             f"got {type(tokenizer).__name__}")
        p, q = self._cells_per_patch(int(patch[0]), int(patch[1]))
        return int(chans) * self.nbins * p * q

    def _cells_per_patch(self, p: int, q: int) -> tuple[int, int]:
        if p % self.cell_size or q % self.cell_size:
            raise ValueError(f"HOGTarget: patch size ({p}, {q}) is not a multiple of cell_size={self.cell_size}")
        return p // self.cell_size, q // self.cell_size

    def example_inputs(self, generator: torch.Generator) -> tuple[Tensor, Tokens]:
        """A random ``(2, 3, 32, 32)`` image and its tokens from a 16x16 :class:`PatchTokenizer`."""
        from mmim_image.tokenizer import PatchTokenizer

        tokenizer = PatchTokenizer(embed_dim=16, img_size=32, patch_size=16, in_chans=3)
        image = torch.randn(2, 3, 32, 32, generator=generator)
        with torch.no_grad():
            return image, tokenizer(image)

    def gradients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, C, H, W)`` -> ``(g_x, g_y)``, each ``(B, C, H, W)`` (reflection padding)."""
        xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
        dx = xp[..., :, 2:] - xp[..., :, :-2]  # (B, C, H + 2, W)
        dy = xp[..., 2:, :] - xp[..., :-2, :]  # (B, C, H, W + 2)
        if self.gradient == "sobel":
            return dx[..., :-2, :] + 2 * dx[..., 1:-1, :] + dx[..., 2:, :], dy[..., :-2] + 2 * dy[..., 1:-1] + dy[..., 2:]
        return dx[..., 1:-1, :], dy[..., 1:-1]

    def window(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> Tensor | None:
        """``(H, W)`` Gaussian weights tiled with period ``gaussian_window`` (``None`` when disabled)."""
        if not self.gaussian_window:
            return None
        g = self.gaussian_window
        k = gaussian_window_1d(g, g // 2, torch.float64)
        k = k / k.sum()  # the 2-D kernel k k^T sums to 1, as the reference's
        idx_h, idx_w = torch.arange(h) % g, torch.arange(w) % g
        return (k[idx_h, None] * k[None, idx_w]).to(device=device, dtype=dtype)

    def cell_histograms(self, x: Tensor) -> Tensor:
        """``x`` ``(B, C, H, W)`` -> per-cell histograms ``(B, C, nbins, H / cell, W / cell)``."""
        b, c, h, w = x.shape
        s = self.cell_size
        if h % s or w % s:
            raise ValueError(f"HOGTarget: image size ({h}, {w}) is not a multiple of cell_size={s}")
        gx, gy = self.gradients(x)
        magnitude = torch.hypot(gx, gy)
        bins = torch.floor(torch.atan2(gx, gy) / math.pi * self.nbins).long() % self.nbins
        window = self.window(h, w, x.dtype, x.device)
        if window is not None:
            magnitude = magnitude * window
        hist = torch.stack(
            [(magnitude * (bins == k)).view(b, c, h // s, s, w // s, s).sum(dim=(3, 5)) for k in range(self.nbins)],
            dim=2,
        )
        if self.normalize:
            hist = F.normalize(hist, p=2, dim=2, eps=self.eps)
        return hist

    @torch.no_grad()
    def forward(self, raw: Tensor, tokens: Tokens) -> Tensor:
        """Args:
            raw: ``(B, C, H, W)`` images, normalised as fed to the model.
            tokens: the images' tokens; ``tokens.layout.grid`` is the ``(H/p, W/q)`` patch grid.

        Returns:
            ``(B, L, C * nbins * (p/cell) * (q/cell))`` with ``L = (H/p) * (W/q)``, row-major
            tokens, each ordered (channel, bin, cell row, cell column). Computed in float32
            (float64 for float64 input).
        """
        if raw.dim() != 4:
            raise ValueError(f"HOGTarget expects images (B, C, H, W), got shape {tuple(raw.shape)}")
        grid = tokens.layout.grid
        if len(grid) != 2:
            raise ValueError(f"HOGTarget needs a 2-D token grid (H/p, W/q), got grid {grid}")
        b, _, h, w = raw.shape
        if h % grid[0] or w % grid[1]:
            raise ValueError(f"HOGTarget: image size ({h}, {w}) does not split into the token grid {grid}")
        u, v = self._cells_per_patch(h // grid[0], w // grid[1])
        x = raw if raw.dtype == torch.float64 else raw.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            hist = self.cell_histograms(x)
        return rearrange(hist, "b c k (gh u) (gw v) -> b (gh gw) (c k u v)", u=u, v=v)
