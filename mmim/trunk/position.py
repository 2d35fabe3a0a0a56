"""Fixed sine-cosine position tables over token grids (no modality knowledge here).

All tables are computed in float64 and returned as float32, as the official MAE code does.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmim.types import Layout


def sincos_1d(dim: int, positions: Tensor) -> Tensor:
    """MAE's 1-D table: ``positions`` ``(M,)`` -> ``(M, dim)`` = ``[sin(p*w_k), cos(p*w_k)]``.

    ``w_k = 1 / 10000**(k / (dim/2))`` for ``k < dim/2``; sines in the first half, cosines after.
    """
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dim, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([out.sin(), out.cos()], dim=1)


def sincos_2d(dim: int, grid: tuple[int, int]) -> Tensor:
    """MAE's 2-D table for a row-major ``(H, W)`` token grid -> ``(H*W, dim)`` float32.

    The first ``dim/2`` channels encode the column index, the last ``dim/2`` the row index
    (the official ``get_2d_sincos_pos_embed`` layout). Needs ``dim % 4 == 0``.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding needs dim divisible by 4, got {dim}")
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    table = torch.cat([sincos_1d(dim // 2, cols.flatten()), sincos_1d(dim // 2, rows.flatten())], dim=1)
    return table.to(torch.float32)


class FixedPositionTable(nn.Module):
    """A fixed table ``(1, L, D)`` kept as a non-trainable buffer; ``forward(layout)`` returns it."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.reshape(1, *table.shape[-2:]), persistent=False)

    def forward(self, layout: Layout) -> Tensor:
        if layout.num_tokens != self.table.shape[1]:
            raise ValueError(f"position table has {self.table.shape[1]} tokens, layout has {layout.num_tokens}")
        return self.table


class LearnedPositionTable(nn.Module):
    """A position table ``(1, L, D)`` trained as a parameter, initialised from a (fixed) table: timm's
    ViT ``pos_embed`` loaded from MAE's sin-cos table and fine-tuned. ``forward(layout)`` returns it."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table.detach().clone().reshape(1, *table.shape[-2:]))

    def forward(self, layout: Layout) -> Tensor:
        if layout.num_tokens != self.table.shape[1]:
            raise ValueError(f"position table has {self.table.shape[1]} tokens, layout has {layout.num_tokens}")
        return self.table
