"""Fixed position tables over a ``(T', H', W')`` tubelet grid.

Two layouts:

- ``"videomae"``: VideoMAE's 1-D table over the flattened, time-major token index
  ``n = (t*H' + h)*W' + w``: ``angle[n, j] = n / 10000**(2*(j//2)/D)``, ``sin`` on even channels and
  ``cos`` on odd ones (interleaved), computed in float64 and cast to float32. Official models never
  store it in checkpoints; it depends only on ``L`` and ``D``.
- ``"factorized"``: separate time and space codes, ``[sincos_1d(t) | sincos_2d(h, w)]`` with about a
  quarter of the channels for time, so a clip of another length keeps the same spatial code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmim.trunk.position import sincos_1d, sincos_2d
from mmim.types import Layout

LAYOUTS = ("videomae", "factorized")


def videomae_sinusoid_table(num_tokens: int, dim: int) -> Tensor:
    """VideoMAE's ``get_sinusoid_encoding_table`` layout -> ``(num_tokens, dim)`` float32."""
    pos = torch.arange(num_tokens, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, angle.sin(), angle.cos())
    return table.to(torch.float32)


def factorized_table(grid: tuple[int, int, int], dim: int) -> Tensor:
    """``[time code | space code]`` per token of a time-major ``(T', H', W')`` grid -> ``(L, dim)`` float32.

    ``dim_space = (3*dim // 4) // 4 * 4`` channels hold MAE's 2-D sin-cos of ``(h, w)``, the other
    ``dim_time`` channels the 1-D sin-cos of ``t``. Needs an even ``dim >= 8``.
    """
    if dim % 2 or dim < 8:
        raise ValueError(f"factorized position table needs an even dim >= 8, got {dim}")
    t, h, w = grid
    dim_space = (3 * dim // 4) // 4 * 4
    dim_time = dim - dim_space
    space = sincos_2d(dim_space, (h, w))  # (H'W', dim_space)
    time = sincos_1d(dim_time, torch.arange(t)).to(torch.float32)  # (T', dim_time)
    return torch.cat([time.repeat_interleave(h * w, dim=0), space.repeat(t, 1)], dim=1)


def position_table(layout_name: str, grid: tuple[int, ...], dim: int) -> Tensor:
    """The ``(L, dim)`` table of ``layout_name`` for a ``(T', H', W')`` grid."""
    if layout_name == "videomae":
        return videomae_sinusoid_table(math.prod(grid), dim)
    if layout_name == "factorized":
        if len(grid) != 3:
            raise ValueError(f"factorized position table needs a (T', H', W') grid, got {grid}")
        return factorized_table(tuple(grid), dim)  # type: ignore[arg-type]
    raise ValueError(f"unknown position layout {layout_name!r}; choices: {', '.join(LAYOUTS)}")


class VideoPositionTable(nn.Module):
    """Maps a :class:`Layout` to its fixed table ``(1, L, dim)``, built (and cached) per grid.

    Nothing is stored in the state dict, as in the official models, so one module serves clips of
    any length and frame size.

    Args:
        dim: table width.
        layout: ``"videomae"`` or ``"factorized"``.
    """

    def __init__(self, dim: int, layout: str = "videomae") -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown position layout {layout!r}; choices: {', '.join(LAYOUTS)}")
        self.dim, self.layout = dim, layout
        self._cache: dict[tuple[tuple[int, ...], torch.device], Tensor] = {}

    def forward(self, layout: Layout) -> Tensor:
        grid = layout.grid or (layout.num_tokens,)
        key = (tuple(grid), layout.device)
        if key not in self._cache:
            self._cache[key] = position_table(self.layout, grid, self.dim).unsqueeze(0).to(layout.device)
        return self._cache[key]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, layout={self.layout!r}"
