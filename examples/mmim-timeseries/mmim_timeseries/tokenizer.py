"""Patch tokens for multichannel time series (PatchTST's patching, without channel independence)."""

from __future__ import annotations

import torch
from mmim.interfaces import Tokenizer
from mmim.trunk.position import FixedPositionTable, sincos_1d
from mmim.types import Layout, Tokens
from torch import Tensor, nn


def series_positions(dim: int, num_patches: int) -> FixedPositionTable:
    """Fixed 1-D sin-cos table over patch indices ``0 .. num_patches - 1`` -> ``(1, L, dim)`` float32."""
    return FixedPositionTable(sincos_1d(dim, torch.arange(num_patches)).to(torch.float32))


class SeriesPatchTokenizer(Tokenizer):
    """Non-overlapping time patches of a ``(B, C, T)`` series, one token per patch across all channels.

    A token is the window ``x[:, :, i*p : (i+1)*p]`` of every channel, flattened in
    ``(time, channel)`` order (channel fastest) and embedded by a linear map ``proj``
    ``(p*C -> D)``. Positions are MAE's fixed 1-D sin-cos table over the patch index, so the
    layout grid is ``(T // p,)`` and tokens come in time order.

    Args:
        embed_dim: encoder width ``D`` (injected by the model builder).
        seq_len: series length ``T`` the model is built for.
        patch_len: patch length ``p`` in time steps; must divide ``seq_len``.
        in_chans: number of channels ``C``.
    """

    def __init__(self, embed_dim: int, seq_len: int = 96, patch_len: int = 8, in_chans: int = 3) -> None:
        super().__init__()
        if seq_len <= 0 or patch_len <= 0 or in_chans <= 0:
            raise ValueError(f"seq_len, patch_len and in_chans must be positive, got {seq_len}, {patch_len}, {in_chans}")
        if seq_len % patch_len:
            raise ValueError(f"series length {seq_len} is not divisible by patch_len {patch_len}")
        self.embed_dim = embed_dim
        self.seq_len, self.patch_len, self.in_chans = seq_len, patch_len, in_chans
        self.grid = (seq_len // patch_len,)
        self.proj = nn.Linear(patch_len * in_chans, embed_dim)
        self.pos = series_positions(embed_dim, self.grid[0])
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @property
    def content_dim(self) -> int:
        return self.patch_len * self.in_chans

    def layout(self, batch_size: int, device: torch.device) -> Layout:
        return Layout(batch_size=batch_size, grid=self.grid, device=device)

    def forward(self, x: Tensor) -> Tokens:
        """``x`` ``(B, C, T)`` -> tokens ``(B, L, D)`` with ``L = T / patch_len``.

        Raises:
            ValueError: wrong rank or channel count, ``T`` not divisible by ``patch_len``, or
                ``T`` different from the ``seq_len`` the position table was built for.
        """
        if x.dim() != 3 or x.shape[1] != self.in_chans:
            raise ValueError(f"SeriesPatchTokenizer expects series (B, {self.in_chans}, T), got {tuple(x.shape)}")
        if x.shape[2] % self.patch_len:
            raise ValueError(f"series length {x.shape[2]} is not divisible by patch_len {self.patch_len}")
        if x.shape[2] != self.seq_len:
            raise ValueError(f"SeriesPatchTokenizer was built for seq_len={self.seq_len}, got series of length {x.shape[2]}")
        layout = self.layout(x.shape[0], x.device)
        content = self.patchify(x)
        return Tokens(self.proj(content), self.pos(layout), content, layout)

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, T)`` -> ``(B, L, p*C)`` in ``(time, channel)`` order."""
        b, c, t = x.shape
        return x.reshape(b, c, t // self.patch_len, self.patch_len).permute(0, 2, 3, 1).reshape(b, -1, self.content_dim)

    def content_to_raw(self, content: Tensor, layout: Layout | None = None) -> Tensor:
        """``(B, L, p*C)`` -> ``(B, C, L*p)``: the inverse of :meth:`patchify`."""
        b, length = content.shape[:2]
        x = content.reshape(b, length, self.patch_len, self.in_chans).permute(0, 3, 1, 2)
        return x.reshape(b, self.in_chans, length * self.patch_len)

    def position_embedding(self, dim: int) -> nn.Module:
        return series_positions(dim, self.grid[0])

    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.randn(batch_size, self.in_chans, self.seq_len, generator=generator)
