"""The five plug points of a masked model: Tokenizer, Masker, Target, Loss, Decoder.

Every method in the family is the same loop::

    raw batch ─► Tokenizer ─► Masker ─► encoder on visible tokens ─► Decoder ─► Loss(pred, Target)

Plugins subclass these and register them by name (see :mod:`mmim.registry`). The core never
looks inside a stream: what a pixel, a frame, a point or a mel bin is lives in the plugins.

Each class also offers a small ``example_*`` hook so the conformance kit
(:mod:`mmim.testing.conformance`) can exercise any registered component without special cases.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmim.types import JointMask, Layout, LossOutput, Prediction, StreamMask, Tokens


class Tokenizer(nn.Module, ABC):
    """Turns a raw batch of one modality into :class:`~mmim.types.Tokens`.

    Subclasses take ``embed_dim`` (the encoder width, injected by the model builder) as their
    first constructor argument; every other argument needs a default.
    """

    embed_dim: int

    @abstractmethod
    def forward(self, x: Tensor) -> Tokens:
        """``x``: the stream's raw batch (modality specific) -> tokens ``(B, L, D)``."""

    @property
    @abstractmethod
    def content_dim(self) -> int:
        """``C``: size of one token's raw content (``Tokens.content.shape[-1]``)."""

    @abstractmethod
    def position_embedding(self, dim: int) -> nn.Module:
        """A module mapping a :class:`Layout` to positions ``(1 or B, L, dim)``; used by decoders."""

    @abstractmethod
    def example_input(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """A valid raw batch for this tokenizer's configuration (used by the conformance kit)."""

    def content_to_raw(self, content: Tensor, layout: Layout) -> Tensor:
        """Inverse of the content layout (e.g. unpatchify), for visualisation. Optional."""
        raise NotImplementedError(f"{type(self).__name__} cannot map token content back to raw input")


class Masker(ABC):
    """Chooses visible and masked tokens of one stream; every random choice uses ``generator``."""

    @abstractmethod
    def __call__(self, layout: Layout, generator: torch.Generator) -> StreamMask:
        """Return a mask with the same visible count for every sample of ``layout.batch_size``."""

    @classmethod
    def example_layout(cls) -> Layout:
        """A layout this masker supports (conformance kit)."""
        return Layout(batch_size=3, grid=(6, 8))


class Target(nn.Module, ABC):
    """Computes the per-token regression/classification target of one stream (outside the trunk).

    A target with ``requires_teacher = True`` makes the model keep a teacher
    (:mod:`mmim.teacher`) and is called as ``forward(raw, tokens, teacher_layers=[...])`` with the
    teacher's per-block features ``(B, L, D)`` of the unmasked input.
    """

    requires_teacher: bool = False

    @abstractmethod
    def forward(self, raw: Tensor, tokens: Tokens) -> Tensor:
        """``raw`` batch and its ``tokens`` -> target ``(B, L, C_t)`` for every token."""

    def dim(self, tokenizer: Tokenizer) -> int:
        """``C_t``: the size of one token's target, for sizing the decoder head."""
        return tokenizer.content_dim

    @classmethod
    def example_options(cls) -> dict:
        """Options the conformance kit builds this target with (for targets with required options)."""
        return {}

    def example_inputs(self, generator: torch.Generator) -> tuple[Tensor, Tokens]:
        """A valid ``(raw, tokens)`` pair for this target (conformance kit). The default gives
        tokens ``(2, 12, 8)`` with content ``(2, 12, 10)`` on a ``(3, 4)`` grid."""
        layout = Layout(batch_size=2, grid=(3, 4))
        content = torch.randn(2, 12, 10, generator=generator)
        return content, Tokens(torch.randn(2, 12, 8, generator=generator), torch.zeros(1, 12, 8), content, layout)


class Loss(nn.Module, ABC):
    """Compares predictions with targets on the predicted tokens.

    A decoder may attach per-token weights to its prediction (``Prediction.weight``); the model
    then calls ``forward(pred, target, weight=w)`` with ``w`` ``(B, n)``. Losses that support
    weights take that keyword (the element-wise losses do); the others are only ever called
    without it, and a weighted prediction reaching them is an error naming the loss.
    """

    @abstractmethod
    def forward(self, pred: Tensor, target: Tensor) -> LossOutput:
        """``pred`` and ``target`` ``(B, n, C)`` -> scalar loss and named parts."""

    def example_inputs(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A valid ``(pred, target)`` pair (conformance kit); the default is ``(2, 5, 6)`` each."""
        return torch.randn(2, 5, 6, generator=generator), torch.randn(2, 5, 6, generator=generator)

    def example_perfect(self, target: Tensor) -> Tensor:
        """A prediction that matches ``target`` perfectly (conformance kit); default: a copy."""
        return target.clone()

    @classmethod
    def example_options(cls) -> dict:
        """Options the conformance kit builds this loss with (for losses with required options)."""
        return {}


class Decoder(nn.Module, ABC):
    """Predicts token targets from the encoded visible tokens of one stream.

    Subclasses take ``encoder_dim``, ``out_dim`` and ``position`` as their first arguments;
    ``position(dim)`` is the stream tokenizer's :meth:`Tokenizer.position_embedding`, which the
    decoder calls with its own width to get its position module.
    """

    #: True for heads that predict from encoded mask tokens (a ``mask_in_encoder`` stream).
    needs_all_tokens: bool = False

    @abstractmethod
    def forward(self, prefix: Tensor, visible: Tensor, mask: StreamMask, layout: Layout) -> Prediction:
        """Args:
            prefix: ``(B, P, D_enc)`` encoded prefix tokens (cls/global tokens; ``P`` may be 0).
            visible: ``(B, Lv, D_enc)`` encoded visible tokens, in ``mask.visible`` order; for a
                stream that encodes mask tokens (``mask_in_encoder``, SimMIM) every token
                ``(B, L, D_enc)`` in token order (``visible.shape[1] == layout.num_tokens``).
            mask: the stream's mask.
            layout: the stream's layout.

        Returns:
            predictions with the token indices they refer to.
        """


@dataclass
class FusionContext:
    """What a fused model's decoders see: every encoded token of every stream.

    Attributes:
        prefix: ``(B, P, D_enc)`` encoded global tokens (``P`` may be 0).
        encoded: ``(B, K, D_enc)`` encoded tokens in ``mask.visible`` order.
        mask: the joint mask (which tokens were encoded, which are predicted).
        layouts: every tokenized stream's layout.
    """

    prefix: Tensor
    encoded: Tensor
    mask: JointMask
    layouts: dict[str, Layout]


class FusionDecoder(nn.Module, ABC):
    """Predicts one stream's tokens from all encoded tokens of a fused model (MultiMAE, 4M).

    Subclasses take ``encoder_dim``, ``out_dim``, ``position``, ``context_positions`` (every
    tokenized stream's :meth:`Tokenizer.position_embedding`, in concatenation order) and
    ``stream`` (the token stream whose tokens it predicts) from the model builder.
    """

    @abstractmethod
    def forward(self, context: FusionContext) -> Prediction:
        """Predictions for the tokens of ``stream``; ``index`` into that stream, ``weight`` (B, Lp)
        marking the tokens that count (``context.mask.predict``)."""
