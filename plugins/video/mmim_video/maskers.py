"""Video maskers over a time-major ``(T', H', W')`` grid: tube (VideoMAE) and running cell (VideoMAE v2).

Both return visible and masked indices in ascending token order, which is the order the
official models use (``x[~mask]``), so official masks convert with :meth:`StreamMask.from_bool`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmim.interfaces import Masker
from mmim.types import Layout, StreamMask


def _grid3(layout: Layout) -> tuple[int, int, int]:
    if len(layout.grid) != 3:
        raise ValueError(f"video maskers need a (T', H', W') grid, got {layout.grid}")
    return layout.grid  # type: ignore[return-value]


def _split(masked: Tensor) -> StreamMask:
    """``(B, L)`` bool (same count per row, True = masked) -> ascending visible/masked indices."""
    return StreamMask.from_bool(masked)


class TubeMasker(Masker):
    """VideoMAE's tube masking: one random spatial mask of ``int(ratio * H'W')`` positions, the same
    for every temporal slice, drawn per sample.

    The spatial choice is the ``int(ratio * H'W')`` lowest of ``torch.rand(B, H'W', generator=...)``.

    Args:
        ratio: fraction of each slice to mask, in ``[0, 1)`` (VideoMAE: 0.9).
    """

    def __init__(self, ratio: float = 0.9) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        t, h, w = _grid3(layout)
        per_slice = h * w
        n_mask = int(self.ratio * per_slice)
        if n_mask >= per_slice:
            raise ValueError(f"ratio {self.ratio} leaves no visible position out of {per_slice} per slice")
        noise = torch.rand(layout.batch_size, per_slice, generator=generator, device=generator.device)
        chosen = torch.argsort(noise, dim=1)[:, :n_mask]
        spatial = torch.zeros(layout.batch_size, per_slice, dtype=torch.bool, device=noise.device)
        spatial.scatter_(1, chosen, True)
        return _split(spatial.repeat(1, t).to(layout.device))

    @classmethod
    def example_layout(cls) -> Layout:
        return Layout(batch_size=3, grid=(4, 6, 8))


def running_cell_maps(grid: tuple[int, int, int], ratio: float = 0.5) -> Tensor:
    """VideoMAE v2's running-cell maps: ``(4, T'H'W')`` bool, True = not decoded, one row per start.

    A 2x2 cell (positions ``i = 2*dy + dx``) holds ``int(4 * ratio)`` ones then zeros in a queue; at
    slice ``t`` of start ``s`` position ``i`` takes ``queue[(i + s + t + 1) % 4]``, i.e. the pattern
    runs one position per slice. The cell is tiled over ``(H'/2, W'/2)`` (``H'`` and ``W'`` even).
    """
    t, h, w = grid
    ones = int(4 * ratio)
    if not 0 < ones < 4:
        raise ValueError(f"running-cell ratio must give 1-3 of 4 cell positions, got {ratio}")
    if h % 2 or w % 2:
        raise ValueError(f"running-cell masking needs even H' and W', got grid {grid}")
    queue = torch.arange(4) < ones
    cell_pos = (2 * (torch.arange(h) % 2)).view(h, 1) + (torch.arange(w) % 2).view(1, w)  # (H', W')
    start = torch.arange(4).view(4, 1, 1, 1)
    frame = torch.arange(t).view(1, t, 1, 1)
    return queue[(cell_pos + start + frame + 1) % 4].reshape(4, t * h * w)


class RunningCellMasker(Masker):
    """Running-cell masking (VideoMAE v2) used as an encoder mask: one of the 4 running-cell maps per
    sample, so every slice masks ``int(4 * ratio) / 4`` of each 2x2 cell. (VideoMAE v2 uses these
    maps to choose what its *decoder* reconstructs: see the ``videomae`` decoder's ``decode`` option.)

    Args:
        ratio: masked fraction of each cell: 0.25, 0.5 or 0.75.
    """

    def __init__(self, ratio: float = 0.5) -> None:
        if not 0 < int(4 * ratio) < 4:
            raise ValueError(f"running-cell ratio must give 1-3 of 4 cell positions, got {ratio}")
        self.ratio = ratio

    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        maps = running_cell_maps(_grid3(layout), self.ratio)
        start = torch.randint(4, (layout.batch_size,), generator=generator, device=generator.device).cpu()
        return _split(maps[start].to(layout.device))

    @classmethod
    def example_layout(cls) -> Layout:
        return Layout(batch_size=3, grid=(4, 6, 8))
