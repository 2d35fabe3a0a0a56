"""Weight initialisation shared by encoders and decoders (MAE's ``_init_weights``)."""

from __future__ import annotations

from torch import nn


def xavier_init_(module: nn.Module) -> None:
    """Xavier-uniform for every ``nn.Linear`` (bias 0) and unit/zero LayerNorms, in place."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
