"""Spectrogram patch tokens (Audio-MAE): 16x16 patches over (time, mel) of a log-mel fbank.

Tokens are time-major: token ``i = t * F' + f`` on the ``(T', F') = (T/p, F/q)`` grid, which is
the :class:`~mmim.types.Layout` grid maskers see. Each token's content is the patch flattened
row-major over (time-in-patch, mel-in-patch), Audio-MAE's ``patchify``.

The official fixed sin-cos table is built for a ``(F', T')`` grid (the patch embed's
``patch_hw`` is frequency first) but read in time-major token order, so row ``i`` is
``[sincos(i mod T'), sincos(i div T')]`` rather than the token's own ``(t, f)`` position.
``pos_layout="audiomae"`` (default) reproduces that table, which released checkpoints were
trained with; ``pos_layout="grid"`` gives every token ``[sincos(f), sincos(t)]``.
"""

from __future__ import annotations

from torch import Tensor

from mmim.trunk.grid_patch import GridPatchTokenizer
from mmim.trunk.position import sincos_2d

POS_LAYOUTS = ("audiomae", "grid")


def spectrogram_position_table(dim: int, grid: tuple[int, int], layout: str = "audiomae") -> Tensor:
    """Fixed 2-D sin-cos positions ``(T' * F', dim)`` float32 for time-major tokens on ``grid = (T', F')``.

    Args:
        dim: width (divisible by 4).
        grid: ``(T', F')`` token grid.
        layout: ``"audiomae"``: the official table, MAE's 2-D table of a ``(F', T')`` grid taken
            row by row; ``"grid"``: MAE's table of the ``(T', F')`` grid itself.
    """
    if layout not in POS_LAYOUTS:
        raise ValueError(f"unknown position layout {layout!r}; choices: {', '.join(POS_LAYOUTS)}")
    time, freq = grid
    return sincos_2d(dim, (freq, time) if layout == "audiomae" else (time, freq))


class SpectrogramPatchTokenizer(GridPatchTokenizer):
    """Non-overlapping ``p x q`` patches of a ``(B, C, T, F)`` spectrogram, embedded by a strided
    convolution (``patch_embed.proj``, as timm and Audio-MAE name it), with a fixed sin-cos table
    laid out as ``pos_layout`` says (see the module docstring).

    Args:
        embed_dim: encoder width ``D`` (injected by the model builder).
        input_size: ``(T, F)`` frames x mel bins (Audio-MAE AudioSet: ``(1024, 128)``).
        patch_size: ``p`` or ``(p_time, p_freq)``; must divide ``input_size``.
        in_chans: ``C`` (1 for a fbank).
        pos_layout: ``"audiomae"`` (official table) or ``"grid"``.
    """

    input_name = "spectrograms (batch, channel, time, mel)"

    def __init__(self, embed_dim: int, input_size: int | tuple[int, int] = (1024, 128),
                 patch_size: int | tuple[int, int] = 16, in_chans: int = 1, pos_layout: str = "audiomae") -> None:
        if pos_layout not in POS_LAYOUTS:
            raise ValueError(f"unknown position layout {pos_layout!r}; choices: {', '.join(POS_LAYOUTS)}")
        self.pos_layout = pos_layout  # read by position_table() during the base initialisation
        super().__init__(embed_dim, input_size, patch_size, in_chans)

    def position_table(self, dim: int) -> Tensor:
        """The ``pos_layout`` table for the ``(T', F')`` time-major grid."""
        return spectrogram_position_table(dim, self.grid, self.pos_layout)
