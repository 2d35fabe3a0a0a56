"""2-D patch tokens for images of any channel count and aspect ratio."""

from __future__ import annotations

from mmim.trunk.grid_patch import GridPatchTokenizer


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
                 patch_size: int | tuple[int, int] = 16, in_chans: int = 3) -> None:
        super().__init__(embed_dim, img_size, patch_size, in_chans)
        self.img_size = self.input_size
