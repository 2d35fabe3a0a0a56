"""3-D tubelet tokens for video clips ``(B, C, T, H, W)`` (VideoMAE's ``PatchEmbed``)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from mmim.interfaces import Tokenizer
from mmim.types import Layout, Tokens
from mmim_video.position import LAYOUTS, VideoPositionTable


def _triple(v: int | tuple[int, ...] | list[int], what: str) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    if len(v) != 3:
        raise ValueError(f"{what} must be an int or (t, p, q), got {v}")
    return (int(v[0]), int(v[1]), int(v[2]))


def _pair(v: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class TubeletEmbed(nn.Module):
    """``Conv3d`` with kernel = stride = tubelet, named ``proj`` as in the official ``PatchEmbed``.

    Args:
        in_chans: input channels ``C``.
        embed_dim: output width ``D``.
        tubelet: ``(t, p, q)``.
    """

    def __init__(self, in_chans: int, embed_dim: int, tubelet: tuple[int, int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=tubelet, stride=tubelet)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, T'H'W', D)`` in time-major token order."""
        return self.proj(x).flatten(2).transpose(1, 2)


class TubeletTokenizer(Tokenizer):
    """Non-overlapping ``t x p x q`` tubelets embedded by a strided ``Conv3d``.

    Tokens are time-major: ``n = (t*H' + h)*W' + w`` over the ``(T', H', W') = (T/t, H/p, W/q)`` grid.
    Each token's content is its tubelet in VideoMAE's target order: frame, pixel row, pixel
    column, then channel (channel fastest), so ``content_dim = t*p*q*C`` and feature index
    ``((dt*p + y)*q + x)*C + c``. Any clip whose ``T, H, W`` the tubelet divides is accepted;
    ``num_frames``/``img_size`` only set the example input.

    Args:
        embed_dim: encoder width ``D`` (injected by the model builder).
        num_frames: ``T`` of :meth:`example_input`.
        img_size: ``H`` or ``(H, W)`` of :meth:`example_input` (frames need not be square).
        tubelet: ``(t, p, q)``; an int ``k`` means ``(2, k, k)``.
        in_chans: input channels ``C``.
        pos_layout: ``"videomae"`` (the official 1-D table over time-major tokens) or ``"factorized"``.
    """

    def __init__(self, embed_dim: int, num_frames: int = 16, img_size: int | tuple[int, int] = 224,
                 tubelet: int | tuple[int, int, int] = (2, 16, 16), in_chans: int = 3,
                 pos_layout: str = "videomae") -> None:
        super().__init__()
        if pos_layout not in LAYOUTS:
            raise ValueError(f"unknown pos_layout {pos_layout!r}; choices: {', '.join(LAYOUTS)}")
        self.embed_dim, self.in_chans, self.pos_layout = embed_dim, in_chans, pos_layout
        self.tubelet = (2, tubelet, tubelet) if isinstance(tubelet, int) else _triple(tubelet, "tubelet")
        self.num_frames, self.img_size = num_frames, _pair(img_size)
        self.grid = self.grid_for(num_frames, *self.img_size)
        self.patch_embed = TubeletEmbed(in_chans, embed_dim, self.tubelet)
        self.pos = VideoPositionTable(embed_dim, pos_layout)

    def grid_for(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The ``(T', H', W')`` token grid of a ``T x H x W`` clip; raises if the tubelet does not divide it."""
        t, p, q = self.tubelet
        if frames % t or height % p or width % q:
            raise ValueError(f"clip size (T, H, W) = {(frames, height, width)} is not divisible by tubelet {self.tubelet}")
        return (frames // t, height // p, width // q)

    @property
    def content_dim(self) -> int:
        t, p, q = self.tubelet
        return t * p * q * self.in_chans

    def forward(self, x: Tensor) -> Tokens:
        """``x`` ``(B, C, T, H, W)`` -> tokens ``(B, L, D)`` with ``L = T'H'W'``.

        A batch of repeated-augmentation items ``(B, n, C, T, H, W)`` is read as ``B n`` clips.
        """
        if x.dim() == 6:
            x = x.flatten(0, 1)
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"TubeletTokenizer expects clips (B, {self.in_chans}, T, H, W), got {tuple(x.shape)}")
        grid = self.grid_for(*x.shape[2:])
        layout = Layout(batch_size=x.shape[0], grid=grid, device=x.device)
        return Tokens(self.patch_embed(x), self.pos(layout), self.tubeletify(x), layout)

    def tubeletify(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, L, t*p*q*C)`` in VideoMAE's order (frame, row, column, channel)."""
        t, p, q = self.tubelet
        return rearrange(x, "b c (n t) (h p) (w q) -> b (n h w) (t p q c)", t=t, p=p, q=q)

    def content_to_raw(self, content: Tensor, layout: Layout) -> Tensor:
        """``(B, L, t*p*q*C)`` -> ``(B, C, T, H, W)`` (the inverse of :meth:`tubeletify`)."""
        (t, p, q), (n, h, w) = self.tubelet, layout.grid
        return rearrange(content, "b (n h w) (t p q c) -> b c (n t) (h p) (w q)", n=n, h=h, w=w, t=t, p=p, q=q)

    def position_embedding(self, dim: int) -> nn.Module:
        return VideoPositionTable(dim, self.pos_layout)

    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.randn(batch_size, self.in_chans, self.num_frames, *self.img_size, generator=generator)
