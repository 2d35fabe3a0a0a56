"""2-D patch tokens for images of any channel count and aspect ratio, and for segmentation maps."""

from __future__ import annotations

from typing import Literal

import torch
from einops import rearrange
from torch import Tensor, nn

from mmim.interfaces import Tokenizer
from mmim.trunk.grid_patch import GridPatchTokenizer, as_pair
from mmim.trunk.position import FixedPositionTable, sincos_2d
from mmim.types import Layout, Tokens


def patch_position_table(dim: int, grid: tuple[int, int], layout: str) -> Tensor:
    """``(L, dim)`` fixed 2-D sin-cos table: ``"mae"`` puts the column half first (MAE's
    ``get_2d_sincos_pos_embed``), ``"multimae"`` the row half first (MultiMAE / MoCo v3's
    ``build_2d_sincos_posemb``, same frequencies)."""
    if layout == "mae":
        return sincos_2d(dim, grid)
    if layout == "multimae":
        half = sincos_2d(dim, grid)
        return torch.cat([half[:, dim // 2 :], half[:, : dim // 2]], dim=1)
    raise ValueError(f"pos_layout must be 'mae' or 'multimae', got {layout!r}")


class PatchTokenizer(GridPatchTokenizer):
    """MAE's image tokenizer: ``p x q`` patches of ``(B, C, H, W)`` images, embedded by a strided
    convolution, with MAE's fixed 2-D sin-cos table (the column half first).

    Token order is row-major over the ``(H/p, W/q)`` grid; each token's content is the patch in
    MAE's ``patchify`` order (pixel row, pixel column, channel fastest).

    Args:
        embed_dim: encoder width ``D`` (injected by the model builder).
        img_size: ``H`` or ``(H, W)``.
        patch_size: ``p`` or ``(p, q)``; must divide the image size.
        in_chans: input channels ``C``.
    """

    input_name = "images"

    def __init__(self, embed_dim: int, img_size: int | tuple[int, int] = 224,
                 patch_size: int | tuple[int, int] = 16, in_chans: int = 3,
                 pos_layout: Literal["mae", "multimae"] = "mae") -> None:
        self.pos_layout = pos_layout
        patch_position_table(4, (1, 1), pos_layout)  # validates the choice before any work
        super().__init__(embed_dim, img_size, patch_size, in_chans)
        self.img_size = self.input_size

    def position_table(self, dim: int) -> Tensor:
        return patch_position_table(dim, self.grid, self.pos_layout)


class SegMapTokenizer(Tokenizer):
    """Patches of a semantic map ``(B, H, W)`` of class ids (MultiMAE's ``SemSegInputAdapter``):
    a learned class embedding per pixel, then a ``p x q`` strided convolution to the encoder width,
    plus the fixed 2-D sin-cos table.

    Each token's content is its ``p*q`` class ids (row-major), the target of a ``cross_entropy``
    loss. Parameter names follow MultiMAE (``class_emb``, ``proj``).

    Args:
        embed_dim: encoder width (injected).
        map_size: ``H`` or ``(H, W)`` of the class map (MultiMAE: the image size / 4).
        patch_size: ``p`` or ``(p, q)`` in map pixels (MultiMAE: 16 / 4 = 4).
        num_classes: class ids are ``0 .. num_classes - 1``.
        class_dim: class-embedding width (MultiMAE: 64).
        pos_layout: ``"mae"`` or ``"multimae"`` sin-cos layout.
    """

    def __init__(self, embed_dim: int, map_size: int | tuple[int, int] = 56, patch_size: int | tuple[int, int] = 4,
                 num_classes: int = 133, class_dim: int = 64, pos_layout: Literal["mae", "multimae"] = "multimae") -> None:
        super().__init__()
        self.embed_dim, self.num_classes, self.pos_layout = embed_dim, num_classes, pos_layout
        self.map_size, self.patch_size = as_pair(map_size), as_pair(patch_size)
        (h, w), (p, q) = self.map_size, self.patch_size
        if h % p or w % q:
            raise ValueError(f"segmentation map size {self.map_size} is not divisible by patch size {self.patch_size}")
        self.grid = (h // p, w // q)
        self.class_emb = nn.Embedding(num_classes, class_dim)
        self.proj = nn.Conv2d(class_dim, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.pos = FixedPositionTable(patch_position_table(embed_dim, self.grid, pos_layout))
        nn.init.trunc_normal_(self.class_emb.weight, std=0.02)
        nn.init.xavier_uniform_(self.proj.weight.data.view(embed_dim, -1))
        nn.init.zeros_(self.proj.bias)

    @property
    def content_dim(self) -> int:
        return self.patch_size[0] * self.patch_size[1]

    def forward(self, x: Tensor) -> Tokens:
        """``x`` ``(B, H, W)`` integer class ids -> tokens ``(B, L, D)``."""
        if x.dim() != 3 or tuple(x.shape[1:]) != self.map_size:
            raise ValueError(f"SegMapTokenizer expects class maps (B, {self.map_size[0]}, {self.map_size[1]}), "
                             f"got {tuple(x.shape)}")
        if x.is_floating_point():
            raise ValueError("SegMapTokenizer expects integer class ids, got a floating-point map")
        if not torch.compiler.is_compiling():  # a host read; a compiled step leaves the range to the embedding
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"class ids span {lo}..{hi}, outside 0..{self.num_classes - 1}")
        emb = self.class_emb(x.long()).permute(0, 3, 1, 2)
        tokens = rearrange(self.proj(emb), "b d h w -> b (h w) d")
        layout = Layout(batch_size=x.shape[0], grid=self.grid, device=x.device)
        p, q = self.patch_size
        content = rearrange(x.float(), "b (h p) (w q) -> b (h w) (p q)", p=p, q=q)
        return Tokens(tokens, self.pos(layout), content, layout)

    def content_to_raw(self, content: Tensor, layout: Layout | None = None) -> Tensor:
        """``(B, L, p*q)`` class ids -> ``(B, H, W)``."""
        (p, q), (h, w) = self.patch_size, self.grid
        return rearrange(content, "b (h w) (p q) -> b (h p) (w q)", h=h, w=w, p=p, q=q)

    def position_embedding(self, dim: int) -> nn.Module:
        return FixedPositionTable(patch_position_table(dim, self.grid, self.pos_layout))

    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.num_classes, (batch_size, *self.map_size), generator=generator)
