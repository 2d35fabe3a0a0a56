"""Shifted-window attention blocks of Audio-MAE's local decoder (Swin-v2 "cr" style).

A block sees tokens on a ``(T', F')`` grid cut into windows of ``(w_t, w_f)`` tokens and runs,
post-norm, ``x = x + norm1(attn(x))`` then ``x = x + norm2(mlp(x))``. The attention is scaled
cosine attention: ``q.k / max(|q||k|, 1e-6) / max(tau, 0.01)`` per head, plus a relative position
bias that a small meta network (``Linear(2, 384)-ReLU-Linear(384, heads)``, dropout 0.1) computes
from the log-spaced offsets ``sign(d) log(1 + |d|)`` of every token pair of a window. A shifted
block rolls the grid by ``-shift`` before windowing (and back after) and forbids attention
(-100) between tokens that the roll brought together from different regions. A grid the windows
do not divide is padded at the end; padding is never attended to (the official model has no
such case: its grid is fixed at 64 x 8 with 4 x 4 windows).

Parameter names follow the official model (``attn.qkv``, ``attn.proj``, ``attn.tau``,
``attn.meta_mlp.fc1/fc2``, ``norm1``, ``mlp.fc1/fc2``, ``norm2``), so checkpoints map one to one.
"""

from __future__ import annotations

from functools import lru_cache, partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmim.timm_compat import import_timm


def fit_window(grid: tuple[int, int], window: tuple[int, int],
               shift: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Clip the window to the grid and drop the shift along an axis the window already covers."""
    win = tuple(min(g, w) for g, w in zip(grid, window))
    sft = tuple(0 if g <= w else s for g, w, s in zip(grid, win, shift))
    return win, sft  # type: ignore[return-value]


@lru_cache(maxsize=32)
def relative_offsets_log(window: tuple[int, int]) -> Tensor:
    """``(N*N, 2)`` offsets ``(dt, df)`` of every token pair of a window, as ``sign(d) log(1 + |d|)``.

    Pair ``(i, j)`` is row ``i * N + j`` with ``d = coord_i - coord_j``; tokens row-major in the window.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).reshape(-1, 2).float()
    return torch.sign(offsets) * torch.log(1.0 + offsets.abs())


def window_partition(x: Tensor, window: tuple[int, int]) -> Tensor:
    """``(B, T', F', C)`` -> ``(B * nW, w_t * w_f, C)``; windows time-major, tokens row-major inside."""
    b, t, f, c = x.shape
    x = x.view(b, t // window[0], window[0], f // window[1], window[1], c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window[0] * window[1], c)


def window_merge(windows: Tensor, window: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, w_t * w_f, C)`` -> ``(B, T', F', C)``."""
    (t, f), c = grid, windows.shape[-1]
    x = windows.view(-1, t // window[0], f // window[1], window[0], window[1], c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, t, f, c)


def padded_size(grid: tuple[int, int], window: tuple[int, int]) -> tuple[int, int]:
    """The grid rounded up to whole windows (windows hang over the end of a grid they do not divide)."""
    return tuple(-(-n // w) * w for n, w in zip(grid, window))  # type: ignore[return-value]


@lru_cache(maxsize=32)
def window_attention_mask(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> Tensor | None:
    """``(nW, N, N)`` additive attention mask of a rolled, padded grid, or ``None`` when nothing is masked.

    Along an axis of length ``n`` rolled by ``s > 0``, the last ``s`` positions wrapped round from
    the start: tokens on either side of ``n - s`` get -100 (the official value) between them.
    Padding positions (``>= n``, when the window does not divide the grid) are never attended to.
    For a grid the windows divide this equals Swin's three-region mask.
    """
    padded = padded_size(grid, window)
    if not any(shift) and padded == tuple(grid):
        return None
    axes = [torch.arange(p) for p in padded]
    wrapped = [(idx >= n - s).long() if s > 0 else torch.zeros_like(idx) for idx, n, s in zip(axes, grid, shift)]
    region = wrapped[0][:, None] * 2 + wrapped[1][None, :]  # (T_pad, F_pad)
    valid = (axes[0] < grid[0])[:, None] & (axes[1] < grid[1])[None, :]
    cells = window_partition(torch.stack([region, valid.long()], -1)[None], window)  # (nW, N, 2)
    mask = torch.zeros(cells.shape[0], cells.shape[1], cells.shape[1])
    mask = mask.masked_fill(cells[:, None, :, 0] != cells[:, :, None, 0], -100.0)
    return mask.masked_fill(cells[:, None, :, 1] == 0, float("-inf"))


class WindowAttention(nn.Module):
    """Scaled cosine multi-head attention inside windows, with a meta-network position bias.

    Its parameters do not depend on the window or grid size, so one module serves any grid.

    Args:
        dim: token width ``C``.
        num_heads: heads (``C`` divisible by it).
        meta_hidden_dim: hidden width of the position-bias network.
        meta_dropout: dropout of that network (0.1 in the official model, active in training).
    """

    def __init__(self, dim: int, num_heads: int, meta_hidden_dim: int = 384, meta_dropout: float = 0.1) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        mlp = import_timm().layers.Mlp
        self.meta_mlp = mlp(2, hidden_features=meta_hidden_dim, out_features=num_heads, act_layer=nn.ReLU,
                            drop=meta_dropout)
        self.tau = nn.Parameter(torch.ones(num_heads))

    def position_bias(self, window: tuple[int, int]) -> Tensor:
        """``(heads, N, N)`` relative position bias of a window of ``N = w_t * w_f`` tokens."""
        n = window[0] * window[1]
        offsets = relative_offsets_log(window).to(self.tau.device, self.meta_mlp.fc1.weight.dtype)
        return self.meta_mlp(offsets).transpose(0, 1).reshape(self.num_heads, n, n)

    def forward(self, x: Tensor, window: tuple[int, int], mask: Tensor | None = None) -> Tensor:
        """``x`` ``(B * nW, N, C)`` windows of size ``window``, ``mask`` ``(nW, N, N)`` or None
        -> ``(B * nW, N, C)``."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        norms = q.norm(dim=-1, keepdim=True) @ k.norm(dim=-1, keepdim=True).transpose(-2, -1)
        attn = (q @ k.transpose(-2, -1)) / norms.clamp(min=1e-6)
        attn = attn / self.tau.clamp(min=0.01).view(1, -1, 1, 1) + self.position_bias(window).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]).view(bw, -1, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


class LocalWindowBlock(nn.Module):
    """One post-norm (shifted-)window attention block over a 2-D token grid given at call time.

    Args:
        dim, num_heads: width and heads.
        window: ``(w_t, w_f)`` tokens (clipped to the grid).
        shift: roll ``(s_t, s_f)`` before windowing; ``(0, 0)`` for a plain window block.
        mlp_ratio: MLP hidden width over ``dim`` (GELU).
        norm_eps: LayerNorm epsilon.
        meta_hidden_dim, meta_dropout: see :class:`WindowAttention`.
    """

    def __init__(self, dim: int, num_heads: int, window: tuple[int, int] = (4, 4), shift: tuple[int, int] = (0, 0),
                 mlp_ratio: float = 4.0, norm_eps: float = 1e-6, meta_hidden_dim: int = 384,
                 meta_dropout: float = 0.1) -> None:
        super().__init__()
        self.window, self.shift = tuple(window), tuple(shift)
        norm = partial(nn.LayerNorm, eps=norm_eps)
        self.attn = WindowAttention(dim, num_heads, meta_hidden_dim, meta_dropout)
        self.norm1 = norm(dim)
        self.mlp = import_timm().layers.Mlp(dim, hidden_features=int(dim * mlp_ratio))
        self.norm2 = norm(dim)

    def _window_attention(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        window, shift = fit_window(grid, self.window, self.shift)
        padded = padded_size(grid, window)
        b, length, c = x.shape
        x = x.view(b, *grid, c)
        if any(shift):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        if padded != grid:
            x = F.pad(x, (0, 0, 0, padded[1] - grid[1], 0, padded[0] - grid[0]))
        mask = window_attention_mask(grid, window, shift)
        mask = mask.to(x.device, x.dtype) if mask is not None else None
        x = window_merge(self.attn(window_partition(x, window), window, mask), window, padded)
        x = x[:, : grid[0], : grid[1]]
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x.reshape(b, length, c)

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """``x`` ``(B, T' * F', C)`` time-major tokens on ``grid = (T', F')`` -> the same shape."""
        x = x + self.norm1(self._window_attention(x, tuple(grid)))
        return x + self.norm2(self.mlp(x))
