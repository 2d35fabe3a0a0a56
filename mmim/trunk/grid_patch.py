"""Non-overlapping patches of a 2-D grid of values ``(B, C, H, W)``: the shared base of the image
and spectrogram tokenizers (what the axes mean is the subclass's business)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from mmim.interfaces import Tokenizer
from mmim.timm_compat import import_timm
from mmim.trunk.position import FixedPositionTable, sincos_2d
from mmim.types import Layout, Tokens


def as_pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class GridPatchTokenizer(Tokenizer):
    """``p x q`` patches embedded by a strided convolution (timm's ``PatchEmbed``, parameters
    ``patch_embed.proj``), with a fixed sin-cos position table (MAE's 2-D layout unless a subclass
    overrides :meth:`position_table`).

    Tokens are row-major over the ``(H/p, W/q)`` grid; each token's content is its patch in MAE's
    ``patchify`` order (row, column, channel fastest): ``content_dim = p * q * C``.

    Args:
        embed_dim: encoder width ``D`` (injected by the model builder).
        input_size: ``H`` or ``(H, W)``.
        patch_size: ``p`` or ``(p, q)``; must divide ``input_size``.
        in_chans: channels ``C``.
    """

    #: what the inputs are called in error messages
    input_name = "inputs"

    def __init__(self, embed_dim: int, input_size: int | tuple[int, int], patch_size: int | tuple[int, int],
                 in_chans: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_size, self.patch_size, self.in_chans = as_pair(input_size), as_pair(patch_size), in_chans
        (h, w), (p, q) = self.input_size, self.patch_size
        if h % p or w % q:
            raise ValueError(f"{self.input_name} size {self.input_size} is not divisible by patch size {self.patch_size}")
        self.grid = (h // p, w // q)
        self.patch_embed = import_timm().layers.PatchEmbed(self.input_size, self.patch_size, in_chans, embed_dim)
        self.pos = FixedPositionTable(self.position_table(embed_dim))
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))

    def position_table(self, dim: int) -> Tensor:
        """``(L, dim)`` float32 positions in token order."""
        return sincos_2d(dim, self.grid)

    @property
    def content_dim(self) -> int:
        return self.patch_size[0] * self.patch_size[1] * self.in_chans

    def layout(self, batch_size: int, device: torch.device) -> Layout:
        return Layout(batch_size=batch_size, grid=self.grid, device=device)

    def forward(self, x: Tensor) -> Tokens:
        """``x`` ``(B, C, H, W)`` -> tokens ``(B, L, D)`` with ``L = (H/p) * (W/q)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_chans, *self.input_size):
            raise ValueError(f"{type(self).__name__} expects {self.input_name} (B, {self.in_chans}, "
                             f"{self.input_size[0]}, {self.input_size[1]}), got {tuple(x.shape)}")
        layout = self.layout(x.shape[0], x.device)
        return Tokens(self.patch_embed(x), self.pos(layout), self.patchify(x), layout)

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, L, p*q*C)`` in MAE's order (row, column, channel)."""
        p, q = self.patch_size
        return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=q)

    def content_to_raw(self, content: Tensor, layout: Layout | None = None) -> Tensor:
        """``(B, L, p*q*C)`` -> ``(B, C, H, W)`` (MAE's ``unpatchify``)."""
        (p, q), (h, w) = self.patch_size, self.grid
        return rearrange(content, "b (h w) (p q c) -> b c (h p) (w q)", h=h, w=w, p=p, q=q)

    def position_embedding(self, dim: int) -> nn.Module:
        """The same table layout at width ``dim`` (a decoder's positions)."""
        return FixedPositionTable(self.position_table(dim))

    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.randn(batch_size, self.in_chans, *self.input_size, generator=generator)
