"""The small data types that mmim's plug points exchange.

Shapes use: ``B`` batch, ``L`` tokens of one stream, ``D`` width, ``C`` per-token content size,
``Lv`` visible tokens, ``Lm`` masked tokens (``Lv + Lm == L``, the same for every sample).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class Layout:
    """Where the ``L`` tokens of one stream sit; what maskers and position tables need.

    Attributes:
        batch_size: ``B``.
        grid: token grid shape in row-major token order, e.g. ``(H', W')`` for images or
            ``(T', H', W')`` for video; empty for unstructured tokens.
        num_tokens: ``L``; equals ``prod(grid)`` when a grid is given.
        centers: optional per-token coordinates ``(B, L, k)`` (point-patch centers).
        device: device on which index tensors are created.
    """

    batch_size: int
    grid: tuple[int, ...] = ()
    num_tokens: int = 0
    centers: Tensor | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self) -> None:
        if self.grid:
            n = math.prod(self.grid)
            if self.num_tokens and self.num_tokens != n:
                raise ValueError(f"Layout: num_tokens={self.num_tokens} but grid {self.grid} has {n}")
            object.__setattr__(self, "num_tokens", n)
        if self.num_tokens <= 0:
            raise ValueError("Layout needs a grid or a positive num_tokens")


@dataclass
class Tokens:
    """A tokenizer's output for one stream.

    Attributes:
        embeddings: ``(B, L, D)`` token embeddings, positions not yet added.
        pos: ``(1 or B, L, D)`` position embeddings for the encoder.
        content: ``(B, L, C)`` raw per-token content (what reconstruction targets are made of),
            or ``None`` when the modality has no such thing.
        layout: the token layout.
    """

    embeddings: Tensor
    pos: Tensor
    content: Tensor | None
    layout: Layout


@dataclass
class StreamMask:
    """Which tokens of one stream the encoder sees.

    Attributes:
        visible: ``(B, Lv)`` int64 indices of visible tokens, in the order the encoder gets them.
        masked: ``(B, Lm)`` int64 indices of masked tokens.
    """

    visible: Tensor
    masked: Tensor

    def __post_init__(self) -> None:
        if self.visible.dim() != 2 or self.masked.dim() != 2:
            raise ValueError("StreamMask.visible and .masked must be (B, n) index tensors")
        if self.visible.shape[0] != self.masked.shape[0]:
            raise ValueError("StreamMask.visible and .masked disagree on the batch size")

    @property
    def num_tokens(self) -> int:
        return self.visible.shape[1] + self.masked.shape[1]

    def to(self, device: torch.device | str) -> StreamMask:
        return StreamMask(self.visible.to(device), self.masked.to(device))

    def bool_mask(self) -> Tensor:
        """``(B, L)`` bool, True where the token is masked (MAE's ``mask`` as bool)."""
        out = torch.zeros(self.visible.shape[0], self.num_tokens, dtype=torch.bool, device=self.visible.device)
        return out.scatter_(1, self.masked, True)

    def restore_order(self) -> Tensor:
        """``(B, L)`` inverse permutation of ``cat([visible, masked])`` (MAE's ``ids_restore``)."""
        return torch.argsort(torch.cat([self.visible, self.masked], dim=1), dim=1)

    @staticmethod
    def from_bool(mask: Tensor) -> StreamMask:
        """Build from a ``(B, L)`` bool mask (True = masked); every row must mask the same count."""
        counts = mask.sum(1)
        if (counts != counts[0]).any():
            raise ValueError(f"every sample must mask the same number of tokens, got counts {counts.tolist()}")
        order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
        n_masked = int(counts[0])
        n_vis = mask.shape[1] - n_masked
        return StreamMask(order[:, :n_vis], order[:, n_vis:])


@dataclass
class JointMask:
    """The model's one mask: which tokens of its streams the encoder sees, and which are predicted.

    Tokens of all tokenized streams are concatenated in stream order (``names``/``sizes``);
    indices refer to that ``N``-token sequence. The encoder sees exactly ``K`` tokens per sample.
    A single-stream model is the one-stream case. Under per-stream maskers every stream keeps a
    fixed count (its :class:`StreamMask`, kept in ``streams``, official visible order included);
    under fusion budgets (MultiMAE, 4M) the split across streams varies per sample.

    A token that is both encoded and predicted enters the encoder as its stream's mask token
    (SimMIM/MaskFeat's ``mask_in_encoder``: every token is encoded, the masked ones hidden).

    Attributes:
        visible: ``(B, K)`` int64 indices of the encoded tokens, in the order the encoder gets them.
        predict: ``(B, N)`` bool, True for tokens whose targets count in the loss.
        names: the tokenized streams in concatenation order.
        sizes: tokens per stream, same order.
        streams: per-stream masks this joint mask was made from (``None`` for budget masks).
    """

    visible: Tensor
    predict: Tensor
    names: tuple[str, ...]
    sizes: tuple[int, ...]
    streams: dict[str, StreamMask] | None = field(default=None, compare=False)
    _encode_all: frozenset = field(default=frozenset(), compare=False, repr=False)
    def __post_init__(self) -> None:
        n = sum(self.sizes)
        if len(self.names) != len(self.sizes):
            raise ValueError("JointMask: names and sizes differ in length")
        if self.visible.dim() != 2 or self.predict.shape != (self.visible.shape[0], n):
            raise ValueError(f"JointMask: visible must be (B, K) and predict (B, {n}); got "
                             f"{tuple(self.visible.shape)} and {tuple(self.predict.shape)}")

    @property
    def num_tokens(self) -> int:
        return sum(self.sizes)

    @property
    def batch_size(self) -> int:
        return self.visible.shape[0]

    def offset(self, name: str) -> int:
        """Index of ``name``'s first token in the concatenated sequence."""
        if name not in self.names:
            raise KeyError(f"JointMask has no stream {name!r}; streams: {list(self.names)}")
        i = self.names.index(name)
        return sum(self.sizes[:i])

    def size(self, name: str) -> int:
        return self.sizes[self.names.index(name)]

    def visible_bool(self) -> Tensor:
        """``(B, N)`` bool, True where the token is encoded."""
        out = torch.zeros_like(self.predict)
        return out.scatter_(1, self.visible, True)

    def stream_slice(self, x: Tensor, name: str) -> Tensor:
        """The part of a ``(B, N, ...)`` tensor that belongs to stream ``name``."""
        start = self.offset(name)
        return x[:, start : start + self.size(name)]

    def stream_masked(self, name: str) -> Tensor:
        """``(B, L_s)`` bool, True where a token of ``name`` is not encoded."""
        return ~self.stream_slice(self.visible_bool(), name)

    def stream_mask(self, name: str) -> StreamMask:
        """Stream ``name``'s mask in the stream's own indices: its visible tokens in encoder order
        and its masked (predicted) tokens. Needs a fixed count per sample (per-stream maskers, or
        budgets that happen to split evenly); a per-sample split raises an error naming the stream."""
        if self.streams is not None and name in self.streams:
            return self.streams[name]
        visible = torch.gather(self.visible, 1, self._encoded_positions(name)) - self.offset(name)
        predicted = self.stream_slice(self.predict, name)
        n_pred = predicted.sum(1)
        if (n_pred != n_pred[:1]).any():
            raise ValueError(f"stream {name!r}: the predicted token count varies per sample ({n_pred.tolist()})")
        masked = torch.argsort((~predicted).to(torch.int8), dim=1, stable=True)[:, : int(n_pred[0])]
        return StreamMask(visible, masked)

    def stream_positions(self, name: str) -> Tensor | slice:
        """Where stream ``name``'s encoded tokens sit among the ``K`` encoded ones: a slice when the
        mask was made from per-stream masks (a contiguous block), else ``(B, Lv_s)`` indices."""
        if self.streams is not None and name in self.streams:
            start = 0
            for other in self.names:
                n = self.encoded_count(other)
                if other == name:
                    return slice(start, start + n)
                start += n
        return self._encoded_positions(name)

    def _encoded_positions(self, name: str) -> Tensor:
        """``(B, Lv_s)``: positions among the ``K`` encoded tokens of stream ``name``'s, in encoder
        order; the count must be the same in every sample (else an error naming the stream)."""
        start = self.offset(name)
        inside = (self.visible >= start) & (self.visible < start + self.size(name))
        counts = inside.sum(1)
        if (counts != counts[:1]).any():
            raise ValueError(f"stream {name!r}: the encoded token count varies per sample ({counts.tolist()}); "
                             "this needs a decoder that reads the joint context (e.g. multimae, joint)")
        # stable order: the stream's encoded tokens keep the encoder order
        return torch.argsort((~inside).to(torch.int8), dim=1, stable=True)[:, : int(counts[0])]

    def encoded_count(self, name: str) -> int:
        """Encoded tokens of ``name`` per sample (per-stream masks only; a stream joined without a
        mask is not encoded: 0)."""
        if self.streams is None:
            raise ValueError(f"stream {name!r} has no fixed encoded count in this mask")
        m = self.streams.get(name)
        if m is None:
            return 0
        return m.num_tokens if self.encode_all(name) else m.visible.shape[1]

    def encode_all(self, name: str) -> bool:
        """True when every token of ``name`` is encoded (masked ones as mask tokens)."""
        return bool(self.streams is not None and name in self.streams and name in self._encode_all)

    def to(self, device: torch.device | str) -> JointMask:
        streams = None if self.streams is None else {n: m.to(device) for n, m in self.streams.items()}
        return JointMask(self.visible.to(device), self.predict.to(device), self.names, self.sizes, streams,
                         self._encode_all)

    @staticmethod
    def from_streams(masks: Mapping[str, StreamMask], sizes: Mapping[str, int],
                     encode_all: Iterable[str] = ()) -> JointMask:
        """Join per-stream masks: the encoder sees each stream's visible tokens in its
        ``mask.visible`` order, stream after stream; the masked tokens are predicted. Streams in
        ``encode_all`` have every token encoded (the masked ones as mask tokens, SimMIM). A stream
        of ``sizes`` without a mask is not encoded at all and not predicted."""
        encode_all = frozenset(encode_all)
        ref = next(iter(masks.values()))
        batch, device = ref.visible.shape[0], ref.visible.device
        visible, predict, start = [], [], 0
        for name, size in sizes.items():
            m = masks.get(name)
            if m is None:
                predict.append(torch.zeros(batch, size, dtype=torch.bool, device=device))
            else:
                if m.num_tokens != size or m.visible.shape[0] != batch:
                    raise ValueError(f"mask of stream {name!r} covers {m.visible.shape[0]} x {m.num_tokens} tokens; "
                                     f"the stream has {batch} x {size}")
                enc = torch.arange(size, device=device).expand(batch, -1) if name in encode_all else m.visible
                visible.append(enc + start)
                predict.append(m.bool_mask())
            start += size
        vis = torch.cat(visible, dim=1) if visible else torch.zeros(batch, 0, dtype=torch.long, device=device)
        return JointMask(vis, torch.cat(predict, dim=1), tuple(sizes), tuple(sizes.values()), dict(masks), encode_all)

    @staticmethod
    def from_inputs(batch: int, sizes: Mapping[str, int], inputs: Iterable[str], predict: Iterable[str] = (),
                    device: torch.device | str = "cpu") -> JointMask:
        """Encode every token of ``inputs``, predict every token of ``predict`` (any-to-any
        inference; ``inputs=[]`` is the blind baseline, every token visible is ``predict=[]``)."""
        inputs, predict = set(inputs), set(predict)
        for name in inputs | predict:
            if name not in sizes:
                raise ValueError(f"no tokenized stream {name!r}; streams: {list(sizes)}")
        streams = {n: StreamMask(torch.arange(s, device=device).expand(batch, -1) if n in inputs else
                                 torch.zeros(batch, 0, dtype=torch.long, device=device),
                                 torch.zeros(batch, 0, dtype=torch.long, device=device) if n in inputs else
                                 torch.arange(s, device=device).expand(batch, -1))
                   for n, s in sizes.items() if n in inputs or n in predict}
        return JointMask.from_streams(streams, sizes)

    @staticmethod
    def from_stream_masks(masked: dict[str, Tensor], sizes: dict[str, int] | None = None,
                          predict: dict[str, Tensor] | None = None) -> JointMask:
        """Build from per-stream ``(B, L_s)`` bool masks (True = not encoded); the encoder then sees
        the visible tokens in ascending index order. Every sample must keep the same total.

        ``predict`` defaults to the masked tokens. ``sizes`` adds streams that are absent from
        ``masked`` (fully masked, e.g. target-only streams) — listed in ``sizes`` order.
        """
        names = list(sizes) if sizes is not None else list(masked)
        parts, pred_parts = [], []
        batch = next(iter(masked.values())).shape[0]
        device = next(iter(masked.values())).device
        for name in names:
            n = sizes[name] if sizes is not None else masked[name].shape[1]
            m = masked.get(name)
            m = torch.ones(batch, n, dtype=torch.bool, device=device) if m is None else m.bool()
            if m.shape != (batch, n):
                raise ValueError(f"mask of stream {name!r} has shape {tuple(m.shape)}, expected ({batch}, {n})")
            parts.append(m)
            pred_parts.append(m if predict is None or name not in predict else predict[name].bool())
        full = torch.cat(parts, dim=1)
        counts = (~full).sum(1)
        if (counts != counts[0]).any():
            raise ValueError(f"every sample must keep the same number of visible tokens in total, got {counts.tolist()}")
        order = torch.argsort(full.to(torch.int8), dim=1, stable=True)
        return JointMask(order[:, : int(counts[0])], torch.cat(pred_parts, dim=1), tuple(names),
                         tuple(p.shape[1] for p in parts))


@dataclass
class Prediction:
    """A decoder's output for one stream.

    Attributes:
        values: ``(B, Lp, C)`` predictions the loss is computed on.
        index: ``(B, Lp)`` int64 token indices ``values`` refer to (usually the masked ones).
        full: optional ``(B, L, C)`` predictions for every token (visualisation, parity checks).
        weight: optional ``(B, Lp)`` non-negative per-token loss weights (e.g. VideoMAE v2 counts
            only the decoded tokens that the encoder did not see); the loss is then
            ``sum(w * loss_token) / sum(w)``. ``None``: every predicted token counts equally.
    """

    values: Tensor
    index: Tensor
    full: Tensor | None = None
    weight: Tensor | None = None


@dataclass
class LossOutput:
    """A scalar loss plus named parts for logging: detached 0-dim tensors, so a training step never
    waits on the device; the trainer reads them on logging steps only."""

    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Gather tokens: ``x`` ``(B or 1, L, D)``, ``index`` ``(B, n)`` -> ``(B, n, D)``."""
    if x.shape[0] == 1 and index.shape[0] != 1:
        x = x.expand(index.shape[0], -1, -1)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
