"""VideoMAE's decoder, with VideoMAE v2's running-cell decoder masking (dual masking).

The official decoder sees ``[visible tokens + pos, mask_token + pos of each decoded token]``
(visible first; no scatter back into the grid) and predicts only the decoded ones:

- ``decode="masked"`` (VideoMAE): the decoded tokens are the encoder-masked ones.
- ``decode="running_cell"`` (VideoMAE v2): the decoded tokens are those a running-cell map marks
  for reconstruction (``running_cell_maps`` rows, False = decoded), which can include encoder-visible
  positions; they are fed as mask tokens all the same. ``Prediction.index`` lists them in
  ascending order, and ``Prediction.weight`` is 1 for the decoded tokens the encoder masked and 0
  for those it saw (official ``cal_loss_mask``), so an element-wise loss averages over the decoded
  and masked tokens of the whole batch (a count that varies per sample), as official VideoMAE v2.

:func:`running_cell_loss` is that reduction written out (for checks without a loss component).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mmim.interfaces import Decoder, DecoderContext
from mmim.trunk.encoder import make_blocks
from mmim.trunk.init import xavier_init_
from mmim.types import Layout, Prediction, StreamMask, gather_tokens
from mmim_video.maskers import running_cell_maps

DECODE_MODES = ("masked", "running_cell")


class VideoMAEDecoder(Decoder):
    """Linear ``embed`` (no bias: the official ``encoder_to_decoder``), mask tokens for the decoded
    positions, ``depth`` pre-norm blocks, LayerNorm and a linear ``head``.

    Args:
        encoder_dim: width of the encoded tokens (injected).
        out_dim: target size per token (injected).
        position: ``position(embed_dim)`` builds the layout -> ``(1, L, embed_dim)`` module (injected).
        stream: the stream it predicts (injected).
        embed_dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps: decoder trunk (VideoMAE: 384/4/6
            for ViT-B; eps 1e-6).
        final_norm_eps: eps of the norm before the head (default ``norm_eps``); transformers'
            ``VideoMAEForPreTraining`` builds that norm with 1e-5 whatever its config says.
        decode: ``"masked"`` or ``"running_cell"`` (see the module docstring).
        decode_ratio: running-cell ratio of tokens *not* decoded (VideoMAE v2: 0.5).
        predict: ``"masked"``, or ``"all"`` to also return ``Prediction.full`` for every token (for
            visualisation; decodes the encoder-masked tokens, VideoMAE v2's ``decode_mask=None`` branch).
    """

    gives_full = True

    def __init__(self, encoder_dim: int, out_dim: int, position: Callable[[int], nn.Module], stream: str, embed_dim: int = 384,
                 depth: int = 4, num_heads: int = 6, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 norm_eps: float = 1e-6, decode: str = "masked", decode_ratio: float = 0.5,
                 predict: str = "masked", final_norm_eps: float | None = None) -> None:
        super().__init__()
        self.stream = stream
        if predict not in ("masked", "all"):
            raise ValueError(f"predict must be 'masked' or 'all', got {predict!r}")
        self.predict = predict
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        if decode == "running_cell" and not 0 < int(4 * decode_ratio) < 4:
            raise ValueError(f"decode_ratio must give 1-3 of 4 cell positions, got {decode_ratio}")
        self.decode, self.decode_ratio = decode, decode_ratio
        self.embed = nn.Linear(encoder_dim, embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.position = position(embed_dim)
        self.blocks = make_blocks(embed_dim, depth, num_heads, mlp_ratio, qkv_bias, norm_eps)
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps if final_norm_eps is None else final_norm_eps)
        self.head = nn.Linear(embed_dim, out_dim)
        xavier_init_(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    def running_cell_index(self, layout: Layout, starts: Tensor) -> Tensor:
        """``(B, Ld)`` ascending indices of the tokens running-cell map ``starts[b]`` (in ``0..3``) decodes."""
        if len(layout.grid) != 3:
            raise ValueError(f"running-cell decoding needs a (T', H', W') grid, got {layout.grid}")
        maps = running_cell_maps(layout.grid, self.decode_ratio)[starts.cpu()]  # (B, L), True = not decoded
        return StreamMask.from_bool(maps).visible.to(layout.device)

    def draw(self, layout: Layout, generator: torch.Generator, full: bool = False) -> Tensor | None:
        """Running-cell decoding: the ``(B, Ld)`` tokens each sample decodes, from a cell map drawn
        per sample from the step's generator in training (map 0 in eval mode); on the host, before
        the forward, so the forward itself has no data-dependent shapes or randomness."""
        if self.decode == "masked" or self.predict == "all" or full:
            return None
        batch = layout.batch_size
        starts = torch.randint(4, (batch,), generator=generator) if self.training else torch.zeros(batch, dtype=torch.long)
        return self.running_cell_index(layout, starts)

    def decode_index(self, mask: StreamMask, decoded: Tensor | None = None, full: bool = False) -> Tensor:
        """The ``(B, Ld)`` tokens to reconstruct: the masked ones, or the running-cell choice ``decoded``
        that :meth:`draw` made."""
        if self.decode == "masked" or self.predict == "all" or full:
            return mask.masked
        if decoded is None:
            raise ValueError(f"stream {self.stream!r}: running-cell decoding needs the tokens drawn by draw() "
                             "(the model passes them as context.draws)")
        return decoded

    def forward(self, context: DecoderContext) -> Prediction:
        if context.encodes_all(self.stream):
            raise ValueError(f"stream {self.stream!r}: the videomae decoder takes the encoded visible tokens only "
                             "(not mask_in_encoder)")
        mask, layout = context.stream_mask(self.stream), context.layouts[self.stream]
        decoded = self.decode_index(mask, context.draws.get(self.stream), context.full)
        return self.forward_decode(context.prefix, context.stream_encoded(self.stream), mask, layout, decoded,
                                   full=context.full)

    def forward_decode(self, prefix: Tensor, visible: Tensor, mask: StreamMask, layout: Layout,
                       decoded: Tensor, full: bool = False) -> Prediction:
        """Decode chosen tokens.

        Args:
            prefix: ``(B, P, D_enc)`` encoded prefix tokens (decoded alongside with a zero position; ``P = 0`` officially).
            visible: ``(B, Lv, D_enc)`` encoded visible tokens in ``mask.visible`` order.
            mask: the encoder mask.
            layout: the stream's layout.
            decoded: ``(B, Ld)`` indices of the tokens to reconstruct.
            full: also return ``Prediction.full`` (when ``decoded`` are the masked tokens).

        Returns:
            ``values`` ``(B, Ld, out_dim)`` for ``index = decoded``; with ``decode="running_cell"``,
            ``weight`` ``(B, Ld)`` = 1 where the encoder masked the decoded token, else 0.
        """
        pos = self.position(layout).to(visible.dtype)
        x_vis = self.embed(visible) + gather_tokens(pos, mask.visible)
        x_dec = self.mask_token.to(visible.dtype) + gather_tokens(pos, decoded)
        x = torch.cat([self.embed(prefix), x_vis, x_dec], dim=1)
        for block in self.blocks:
            x = block(x)
        if (self.predict == "all" or full) and decoded is mask.masked:
            out = self.head(self.norm(x[:, prefix.shape[1]:]))  # (B, Lv + Lm, C) in [visible, masked] order
            order = torch.cat([mask.visible, mask.masked], dim=1).unsqueeze(-1).expand(-1, -1, out.shape[-1])
            full = torch.empty_like(out).scatter_(1, order, out)
            return Prediction(out[:, mask.visible.shape[1]:], decoded, full)
        values = self.head(self.norm(x[:, -decoded.shape[1]:]))
        weight = None
        if self.decode == "running_cell" and decoded is not mask.masked:
            weight = torch.gather(mask.bool_mask(), 1, decoded).to(values.dtype)  # official cal_loss_mask
        return Prediction(values, decoded, weight=weight)


def running_cell_loss(pred: Prediction, target: Tensor, mask: StreamMask) -> Tensor:
    """VideoMAE v2's loss: per-token MSE over the decoded tokens, averaged over those the encoder masked.

    Args:
        pred: the decoder's prediction ``(B, Ld, C)`` at ``pred.index``.
        target: ``(B, Ld, C)`` targets at ``pred.index``.
        mask: the encoder mask.

    Returns:
        scalar ``sum(per_token * counted) / sum(counted)`` over the whole batch.
    """
    per_token = (pred.values.float() - target.float()).pow(2).mean(dim=-1)
    counted = torch.gather(mask.bool_mask(), 1, pred.index).to(per_token.dtype)
    return (per_token * counted).sum() / counted.sum()
