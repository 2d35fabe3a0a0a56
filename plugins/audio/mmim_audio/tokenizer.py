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

import torch
from einops import rearrange
from torch import Tensor, nn

from mmim.interfaces import Tokenizer
from mmim.timm_compat import import_timm
from mmim.trunk.position import FixedPositionTable, sincos_2d
from mmim.types import Layout, Tokens

POS_LAYOUTS = ("audiomae", "grid")


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


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


class SpectrogramPatchTokenizer(Tokenizer):
    """Non-overlapping ``p x q`` patches of a ``(B, C, T, F)`` spectrogram, embedded by a strided
    convolution (``patch_embed.proj``, as timm and Audio-MAE name it), with a fixed sin-cos table.

    Args:
        embed_dim: encoder width ``D`` (injected by the model builder).
        input_size: ``(T, F)`` frames x mel bins (Audio-MAE AudioSet: ``(1024, 128)``).
        patch_size: ``p`` or ``(p_time, p_freq)``; must divide ``input_size``.
        in_chans: ``C`` (1 for a fbank).
        pos_layout: ``"audiomae"`` (official table) or ``"grid"`` (see the module docstring).
    """

    def __init__(self, embed_dim: int, input_size: int | tuple[int, int] = (1024, 128),
                 patch_size: int | tuple[int, int] = 16, in_chans: int = 1, pos_layout: str = "audiomae") -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_size, self.patch_size, self.in_chans = _pair(input_size), _pair(patch_size), in_chans
        (t, f), (p, q) = self.input_size, self.patch_size
        if t % p or f % q:
            raise ValueError(f"spectrogram size {self.input_size} is not divisible by patch size {self.patch_size}")
        self.grid = (t // p, f // q)
        self.pos_layout = pos_layout
        timm = import_timm()
        self.patch_embed = timm.layers.PatchEmbed(self.input_size, self.patch_size, in_chans, embed_dim)
        self.pos = FixedPositionTable(spectrogram_position_table(embed_dim, self.grid, pos_layout))
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))

    @property
    def content_dim(self) -> int:
        return self.patch_size[0] * self.patch_size[1] * self.in_chans

    def layout(self, batch_size: int, device: torch.device) -> Layout:
        """The ``(T', F')`` time-major token grid."""
        return Layout(batch_size=batch_size, grid=self.grid, device=device)

    def forward(self, x: Tensor) -> Tokens:
        """``x`` ``(B, C, T, F)`` -> tokens ``(B, T' * F', D)``, content ``(B, L, p * q * C)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_chans, *self.input_size):
            raise ValueError(f"SpectrogramPatchTokenizer expects (B, {self.in_chans}, {self.input_size[0]}, "
                             f"{self.input_size[1]}) spectrograms (batch, channel, time, mel), got {tuple(x.shape)}")
        layout = self.layout(x.shape[0], x.device)
        return Tokens(self.patch_embed(x), self.pos(layout), self.patchify(x), layout)

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, T, F)`` -> ``(B, L, p*q*C)``: time-major tokens, patch row-major (time, mel, channel)."""
        p, q = self.patch_size
        return rearrange(x, "b c (t p) (f q) -> b (t f) (p q c)", p=p, q=q)

    def content_to_raw(self, content: Tensor, layout: Layout | None = None) -> Tensor:
        """``(B, L, p*q*C)`` -> ``(B, C, T, F)`` (Audio-MAE's ``unpatchify`` for any size)."""
        (p, q), (t, f) = self.patch_size, self.grid
        return rearrange(content, "b (t f) (p q c) -> b c (t p) (f q)", t=t, f=f, p=p, q=q)

    def position_embedding(self, dim: int) -> nn.Module:
        """The same table layout at width ``dim`` (Audio-MAE's ``decoder_pos_embed``)."""
        return FixedPositionTable(spectrogram_position_table(dim, self.grid, self.pos_layout))

    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.randn(batch_size, self.in_chans, *self.input_size, generator=generator)
