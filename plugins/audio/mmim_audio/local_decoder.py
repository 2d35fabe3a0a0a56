"""Audio-MAE's local decoder: mask tokens on the spectrogram grid, shifted-window attention, a linear head.

It is the global MAE decoder (core ``mae``) with the self-attention blocks replaced by
:class:`~mmim_audio.window_attention.LocalWindowBlock`\\ s, every other one shifted, because
spectrograms are locally correlated in time and frequency (Huang et al. 2022, Sec. 3.3). As in
the official ``decoder_mode=1``, the prefix (cls) tokens are not decoded: only the ``T' x F'``
grid of visible and mask tokens goes through the blocks. Parameters are named like the core
``mae`` decoder's (``embed``, ``mask_token``, ``blocks``, ``norm``, ``head``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mmim.interfaces import Decoder, DecoderContext
from mmim.trunk.grid_patch import as_pair
from mmim.trunk.init import xavier_init_
from mmim.types import Layout, Prediction, StreamMask, gather_tokens
from mmim_audio.window_attention import LocalWindowBlock


class AudioMAELocalDecoder(Decoder):
    """Shifted-window decoder over the stream's 2-D ``(T', F')`` token grid.

    Args:
        encoder_dim: width of the encoded tokens (injected).
        out_dim: target size per token (injected).
        position: ``position(embed_dim)`` builds the decoder's position module (injected; the
            tokenizer's table at the decoder width, Audio-MAE's ``decoder_pos_embed``).
        stream: the stream it predicts (injected).
        embed_dim: decoder width (divisible by ``num_heads``).
        depth: blocks; block ``i`` is shifted by ``shift`` when ``i`` is odd (official: 16).
        num_heads: heads per block (official: 16, whatever the global decoder's setting).
        window: window ``(w_t, w_f)`` in tokens (official: ``(4, 4)``).
        shift: roll of the odd blocks (official: ``(2, 0)``, along time only).
        mlp_ratio: MLP width over ``embed_dim``.
        meta_hidden_dim, meta_dropout: position-bias network (official: 384, 0.1).
        norm_eps: LayerNorm epsilon.
        predict: ``"masked"`` (head on masked tokens) or ``"all"`` (every token, as ``Prediction.full``).
    """

    gives_full = True

    def __init__(self, encoder_dim: int, out_dim: int, position: Callable[[int], nn.Module], stream: str, embed_dim: int = 512,
                 depth: int = 16, num_heads: int = 16, window: int | tuple[int, int] = (4, 4),
                 shift: int | tuple[int, int] = (2, 0), mlp_ratio: float = 4.0, meta_hidden_dim: int = 384,
                 meta_dropout: float = 0.1, norm_eps: float = 1e-6, predict: str = "masked") -> None:
        super().__init__()
        self.stream = stream
        if predict not in ("masked", "all"):
            raise ValueError(f"predict must be 'masked' or 'all', got {predict!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.predict = predict
        self.embed = nn.Linear(encoder_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.position = position(embed_dim)
        shifted = as_pair(shift)
        self.blocks = nn.ModuleList(
            LocalWindowBlock(embed_dim, num_heads, as_pair(window), shifted if i % 2 else (0, 0), mlp_ratio, norm_eps,
                             meta_hidden_dim, meta_dropout) for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.head = nn.Linear(embed_dim, out_dim)
        xavier_init_(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, context: DecoderContext) -> Prediction:
        return self.decode(context.prefix, context.stream_encoded(self.stream), context.stream_mask(self.stream),
                           context.layouts[self.stream], every_token=context.full)

    def decode(self, prefix: Tensor, visible: Tensor, mask: StreamMask, layout: Layout, every_token: bool = False) -> Prediction:
        """Args:
            prefix: ``(B, P, D_enc)``; not decoded (the official local decoder drops cls).
            visible: ``(B, Lv, D_enc)`` in ``mask.visible`` order.
            mask: the stream's mask.
            layout: needs a 2-D ``(T', F')`` grid.

        Returns:
            predictions ``(B, Lm, out_dim)`` at ``mask.masked`` (``full`` ``(B, L, out_dim)`` with ``predict="all"``).
        """
        if len(layout.grid) != 2:
            raise ValueError(f"the local decoder needs a 2-D (time, frequency) token grid, got {layout.grid}")
        x = self.embed(visible)
        batch, dim = x.shape[0], x.shape[2]
        full = self.mask_token.to(x.dtype).expand(batch, layout.num_tokens, dim)
        full = full.scatter(1, mask.visible.unsqueeze(-1).expand(-1, -1, dim), x)
        x = full + self.position(layout)  # fp32 positions: an fp32 residual under autocast, as the official decoder
        for block in self.blocks:
            x = block(x, layout.grid)
        x = self.norm(x)
        if self.predict == "all" or every_token:
            full = self.head(x)
            return Prediction(gather_tokens(full, mask.masked), mask.masked, full)
        return Prediction(self.head(gather_tokens(x, mask.masked)), mask.masked)
