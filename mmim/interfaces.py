"""The five plug points of a masked model: Tokenizer, Masker, Target, Loss, Decoder.

Every method in the family is the same loop::

    raw batch ─► Tokenizer ─► Masker ─► encoder on visible tokens ─► Decoder ─► Loss(pred, Target)

over a set of named streams: the masks of all streams form one :class:`~mmim.types.JointMask`,
the encoder sees the visible tokens of every stream together, and every decoder receives the same
:class:`DecoderContext`.

Plugins subclass these and register them by name (see :mod:`mmim.registry`). The core never
looks inside a stream: what a pixel, a frame, a point or a mel bin is lives in the plugins.

Each class also offers a small ``example_*`` hook so the conformance kit
(:mod:`mmim.testing.conformance`) can exercise any registered component without special cases.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmim.types import JointMask, Layout, LossOutput, Prediction, StreamMask, Tokens, gather_tokens


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
    then calls ``forward(pred, target, weight=w)`` with ``w`` ``(B, n)``. A loss that honours
    weights says so with ``supports_weight = True`` (the element-wise losses do); the model
    refuses a weighted prediction for any other loss with an error naming the stream and loss.
    """

    #: True when ``forward`` honours a per-token ``weight``.
    supports_weight: bool = False

    @abstractmethod
    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> LossOutput:
        """``pred`` and ``target`` ``(B, n, C)``, optional ``weight`` ``(B, n)`` -> scalar loss and named parts."""

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


@dataclass
class DecoderContext:
    """What every decoder sees: every encoded token of every stream, and the one joint mask.

    Attributes:
        prefix: ``(B, P, D_enc)`` encoded prefix tokens (cls/global tokens; ``P`` may be 0).
        encoded: ``(B, K, D_enc)`` encoded tokens in ``mask.visible`` order.
        mask: the joint mask (which tokens were encoded, which are predicted).
        layouts: every tokenized stream's layout.
        draws: per stream, what its decoder's :meth:`Decoder.draw` drew from the step's generator
            before the forward (VideoMAE v2's running cells), so a resumed run repeats the draw
            and the forward itself holds no randomness.
        full: the caller asks for predictions of every token (``Prediction.full``), e.g. to draw
            reconstructions; decoders with ``gives_full = True`` honour it.
    """

    prefix: Tensor
    encoded: Tensor
    mask: JointMask
    layouts: dict[str, Layout]
    draws: dict[str, Tensor] = field(default_factory=dict)
    full: bool = False

    @staticmethod
    def for_stream(name: str, prefix: Tensor, encoded: Tensor, mask: StreamMask, layout: Layout,
                   draws: Tensor | None = None, full: bool = False, encode_all: bool = False) -> DecoderContext:
        """The context of a one-stream model: ``encoded`` ``(B, Lv, D)`` in ``mask.visible`` order
        (every token when ``encode_all``); for testing a decoder on its own."""
        joint = JointMask.from_streams({name: mask}, {name: layout.num_tokens}, [name] if encode_all else [])
        return DecoderContext(prefix, encoded, joint, {name: layout}, {} if draws is None else {name: draws}, full)

    def stream_mask(self, name: str) -> StreamMask:
        """Stream ``name``'s mask in its own token indices (see :meth:`JointMask.stream_mask`)."""
        return self.mask.stream_mask(name)

    def stream_encoded(self, name: str) -> Tensor:
        """``(B, Lv_s, D_enc)``: stream ``name``'s encoded tokens, in the order of its
        ``stream_mask(name).visible`` (every token ``(B, L_s, D_enc)`` in token order when the
        stream encodes mask tokens)."""
        where = self.mask.stream_positions(name)
        if isinstance(where, slice):
            return self.encoded[:, where]
        return gather_tokens(self.encoded, where)

    def encodes_all(self, name: str) -> bool:
        """True when every token of ``name`` was encoded (masked ones as mask tokens, SimMIM)."""
        return self.mask.encode_all(name)


class Decoder(nn.Module, ABC):
    """Predicts one stream's token targets from a :class:`DecoderContext`.

    The model builder passes, by keyword, what a decoder's constructor names of: ``encoder_dim``,
    ``out_dim``, ``stream`` (the token stream whose tokens it predicts), ``position``
    (``position(dim)`` is that stream tokenizer's :meth:`Tokenizer.position_embedding`, called
    with the decoder's own width) and ``context_positions`` (every tokenized stream's, in
    concatenation order, for decoders that embed the whole joint sequence).

    Capabilities are declared, not discovered:
    """

    #: True for heads that predict from encoded mask tokens (the stream must set ``mask_in_encoder``).
    needs_all_tokens: bool = False
    #: True when the decoder honours ``context.full`` (returns ``Prediction.full`` for every token).
    gives_full: bool = False
    #: True when it reads only its own stream's encoded tokens (``context.stream_encoded``): it then
    #: needs a fixed per-sample count in its stream, which per-stream maskers give and budgets may not.
    per_stream: bool = True

    stream: str

    @abstractmethod
    def forward(self, context: DecoderContext) -> Prediction:
        """Predictions for tokens of ``self.stream``, with the token indices they refer to."""

    def draw(self, layout: Layout, generator: torch.Generator, full: bool = False) -> Tensor | None:
        """Random numbers the decoder needs for one forward, drawn on the host from the step's
        ``generator`` before the (compilable) forward; they reach it as ``context.draws[stream]``.
        Default: none."""
        return None
