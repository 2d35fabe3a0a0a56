"""Point-patch tokens (Point-MAE): FPS centers, kNN neighbourhoods, mini-PointNet, MLP positions."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmim.interfaces import Tokenizer
from mmim.types import Layout, Tokens
from mmim_points.ops.group import group_points
from mmim_points.pointnet import CenterPositionMLP, MiniPointNet


def trunc_normal_init_(module: nn.Module, std: float = 0.02) -> None:
    """Point-MAE's ``_init_weights`` for Linear/Conv1d: weights ``N(0, std)`` truncated at +-2, zero bias."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.trunc_normal_(m.weight, std=std, a=-2.0, b=2.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PointPatchTokenizer(Tokenizer):
    """A cloud ``(B, N, 3)`` -> ``G`` patch tokens, as Point-MAE's ``Group`` + ``Encoder`` + ``pos_embed``.

    ``G = num_group`` centers are chosen by farthest-point sampling (index 0 first, the official
    kernel's tie-break), each with its ``M = group_size`` nearest points (itself included) made
    relative to it. A mini-PointNet embeds each neighbourhood; an MLP on the center coordinates
    gives the token's position. Tokens come in FPS order.

    Token content is the neighbourhood flattened point-major: ``content[..., 3*i + c]`` is
    coordinate ``c`` of neighbour ``i`` (``content_dim = 3*M``), the layout of Point-MAE's
    ``increase_dim`` predictions. ``Layout.centers`` holds the ``(B, G, 3)`` centers.

    Parameter names are the official ones under ``encoder.`` (``first_conv``, ``second_conv``) and
    ``pos_embed.{0,2}``.

    Args:
        embed_dim: encoder width ``D`` (injected by the model builder).
        num_group: ``G`` patches per cloud.
        group_size: ``M`` points per patch.
        channels: mini-PointNet widths ``(c1, c2, c3)``; Point-MAE uses ``(128, 256, 512)``.
        pos_hidden: hidden width of the position MLPs (128 in Point-MAE).
        skip_near_origin: the FPS kernel's rule that points within ``sqrt(1e-3)`` of the origin are
            never chosen as centers (keep it for parity with official checkpoints).
    """

    def __init__(self, embed_dim: int, num_group: int = 64, group_size: int = 32,
                 channels: tuple[int, int, int] = (128, 256, 512), pos_hidden: int = 128,
                 skip_near_origin: bool = True) -> None:
        super().__init__()
        if num_group < 1 or group_size < 1:
            raise ValueError(f"num_group and group_size must be positive, got {num_group} and {group_size}")
        self.embed_dim, self.num_group, self.group_size = embed_dim, num_group, group_size
        self.pos_hidden, self.skip_near_origin = pos_hidden, skip_near_origin
        self.encoder = MiniPointNet(embed_dim, tuple(channels))
        self.pos_embed = CenterPositionMLP(embed_dim, pos_hidden)
        trunc_normal_init_(self)

    @property
    def content_dim(self) -> int:
        return 3 * self.group_size

    def group(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """``points`` ``(B, N, 3)`` -> centers ``(B, G, 3)`` and neighbourhoods ``(B, G, M, 3)``."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"PointPatchTokenizer expects points (B, N, 3), got {tuple(points.shape)}")
        n = points.shape[1]
        if n < max(self.group_size, self.num_group):
            raise ValueError(f"clouds of {n} points are too small for num_group={self.num_group}, "
                             f"group_size={self.group_size}")
        groups = group_points(points, self.num_group, self.group_size, self.skip_near_origin)
        return groups.centers, groups.neighborhoods

    def forward(self, x: Tensor) -> Tokens:
        """``x`` ``(B, N, 3)`` -> tokens ``(B, G, D)``, positions ``(B, G, D)``, content ``(B, G, 3M)``."""
        centers, neighborhoods = self.group(x)
        b, g = centers.shape[:2]
        layout = Layout(batch_size=b, num_tokens=g, centers=centers, device=x.device)
        embeddings = self.encoder(neighborhoods)
        return Tokens(embeddings, self.pos_embed(centers), neighborhoods.reshape(b, g, -1), layout)

    def content_to_raw(self, content: Tensor, layout: Layout) -> Tensor:
        """Content ``(B, L, 3M)`` (center-relative) -> absolute points ``(B, L*M, 3)`` using ``layout.centers``."""
        if layout.centers is None:
            raise ValueError("content_to_raw needs a layout with centers")
        b, length = content.shape[:2]
        points = content.reshape(b, length, -1, 3) + layout.centers.to(content.dtype).unsqueeze(2)
        return points.reshape(b, -1, 3)

    def position_embedding(self, dim: int) -> nn.Module:
        """A fresh ``CenterPositionMLP(dim)`` (the decoder's own ``decoder_pos_embed``), torch default init."""
        return CenterPositionMLP(dim, self.pos_hidden)

    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        n = max(self.num_group * self.group_size // 2, self.group_size, self.num_group)
        directions = torch.randn(batch_size, n, 3, generator=generator)
        radius = 0.1 + 0.9 * torch.rand(batch_size, n, 1, generator=generator)
        return directions / directions.norm(dim=-1, keepdim=True) * radius
