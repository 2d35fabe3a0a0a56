"""2-D patch tokens for images of any channel count and aspect ratio."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from mmim.interfaces import Tokenizer
from mmim.timm_compat import import_timm
from mmim.trunk.position import FixedPositionTable, sincos_2d
from mmim.types import Layout, Tokens


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PatchTokenizer(Tokenizer):
    """Non-overlapping ``p x q`` patches embedded by a strided convolution (timm's ``PatchEmbed``),
    with MAE's fixed 2-D sin-cos position table.

    Token order is row-major over the ``(H/p, W/q)`` grid. Each token's raw content is the
    patch in MAE's ``patchify`` order: pixel row, pixel column, then channel (channel fastest),
    so ``content_dim = p * q * in_chans``.

    Args:
        embed_dim: encoder width ``D`` (injected by the model builder).
        img_size: ``H`` or ``(H, W)``.
        patch_size: ``p`` or ``(p, q)``; must divide the image size.
        in_chans: input channels ``C``.
    """

    def __init__(self, embed_dim: int, img_size: int | tuple[int, int] = 224,
                 patch_size: int | tuple[int, int] = 16, in_chans: int = 3) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.img_size, self.patch_size, self.in_chans = _pair(img_size), _pair(patch_size), in_chans
        (h, w), (p, q) = self.img_size, self.patch_size
        if h % p or w % q:
            raise ValueError(f"image size {self.img_size} is not divisible by patch size {self.patch_size}")
        self.grid = (h // p, w // q)
        timm = import_timm()
        self.patch_embed = timm.layers.PatchEmbed(self.img_size, self.patch_size, in_chans, embed_dim)
        self.pos = FixedPositionTable(sincos_2d(embed_dim, self.grid))
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))

    @property
    def content_dim(self) -> int:
        return self.patch_size[0] * self.patch_size[1] * self.in_chans

    def layout(self, batch_size: int, device: torch.device) -> Layout:
        return Layout(batch_size=batch_size, grid=self.grid, device=device)

    def forward(self, x: Tensor) -> Tokens:
        """``x`` ``(B, C, H, W)`` -> tokens ``(B, L, D)`` with ``L = (H/p) * (W/q)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_chans, *self.img_size):
            raise ValueError(
                f"PatchTokenizer expects images (B, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}), "
                f"got {tuple(x.shape)}"
            )
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
        return FixedPositionTable(sincos_2d(dim, self.grid))

    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.randn(batch_size, self.in_chans, *self.img_size, generator=generator)
