"""Point-MAE's mini-PointNet patch embedding and its MLP position embedding of patch centers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmim.types import Layout


class PointwiseConv(nn.Conv1d):
    """A ``Conv1d(in, out, 1)`` (official parameter shapes ``(out, in, 1)``) applied channels-last.

    ``forward`` takes ``(..., in)`` and computes ``F.linear`` with the squeezed weight: the same
    maths as the 1x1 convolution on ``(N, in, L)``, much faster on CPU, with no transposes.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in)`` -> ``(..., out)``."""
        return F.linear(x, self.weight.squeeze(-1), self.bias)


class MiniPointNet(nn.Module):
    """Embeds each patch of ``M`` center-relative points into one ``D``-vector.

    Per point ``Conv1d(3, c1)-BN-ReLU-Conv1d(c1, c2)``; max over the patch; the global vector is
    concatenated *before* every per-point vector (``2*c2`` channels); then
    ``Conv1d(2*c2, c3)-BN-ReLU-Conv1d(c3, D)`` and a max over the patch. Parameter names are the
    official ones (``first_conv.{0,1,3}``, ``second_conv.{0,1,3}``); official widths are
    ``(c1, c2, c3) = (128, 256, 512)``.

    Args:
        out_dim: ``D``.
        channels: ``(c1, c2, c3)``.
    """

    def __init__(self, out_dim: int, channels: tuple[int, int, int] = (128, 256, 512)) -> None:
        super().__init__()
        c1, c2, c3 = (int(c) for c in channels)
        self.out_dim = out_dim
        # channels-last throughout: BatchNorm1d on (B*G*M, C) has the statistics of (B*G, C, M)
        self.first_conv = nn.Sequential(PointwiseConv(3, c1), nn.BatchNorm1d(c1), nn.ReLU(inplace=True), PointwiseConv(c1, c2))
        self.second_conv = nn.Sequential(PointwiseConv(2 * c2, c3), nn.BatchNorm1d(c3), nn.ReLU(inplace=True),
                                          PointwiseConv(c3, out_dim))

    def forward(self, groups: Tensor) -> Tensor:
        """``groups`` ``(B, G, M, 3)`` -> tokens ``(B, G, D)``."""
        b, g, m, _ = groups.shape
        x = self.first_conv(groups.reshape(b * g * m, 3)).reshape(b * g, m, -1)  # (BG, M, c2)
        pooled = x.max(dim=1, keepdim=True).values  # (BG, 1, c2)
        x = torch.cat([pooled.expand(-1, m, -1), x], dim=2)  # global first
        x = self.second_conv(x.reshape(b * g * m, -1)).reshape(b * g, m, self.out_dim)
        return x.max(dim=1).values.reshape(b, g, self.out_dim)


class CenterPositionMLP(nn.Sequential):
    """``Linear(3, hidden)-GELU-Linear(hidden, dim)`` on patch centers (official keys ``0.*``, ``2.*``).

    Called on a :class:`~mmim.types.Layout` (uses ``layout.centers``) or on centers directly.

    Args:
        dim: output width.
        hidden: hidden width (128 in Point-MAE).
    """

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, where: Layout | Tensor) -> Tensor:
        """``layout`` (with ``centers`` ``(B, L, 3)``) or centers ``(B, L, 3)`` -> ``(B, L, dim)``."""
        centers = where.centers if isinstance(where, Layout) else where
        if centers is None:
            raise ValueError("CenterPositionMLP needs a layout with centers (B, L, 3)")
        x = centers
        for layer in self:
            x = layer(x)
        return x
