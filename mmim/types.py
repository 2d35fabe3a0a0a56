"""The small data types that mmim's plug points exchange.

Shapes use: ``B`` batch, ``L`` tokens of one stream, ``D`` width, ``C`` per-token content size,
``Lv`` visible tokens, ``Lm`` masked tokens (``Lv + Lm == L``, the same for every sample).
"""

from __future__ import annotations

import math
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
    """Which tokens of several streams the encoder sees, and which are predicted (fusion).

    Tokens of all tokenized streams are concatenated in stream order (``names``/``sizes``);
    indices refer to that ``N``-token sequence. The encoder sees exactly ``K`` tokens per sample,
    but how they split across streams varies per sample (MultiMAE's Dirichlet budgets).

    Attributes:
        visible: ``(B, K)`` int64 indices of the encoded tokens, in the order the encoder gets them.
        predict: ``(B, N)`` bool, True for tokens whose targets count in the loss.
        names: the tokenized streams in concatenation order.
        sizes: tokens per stream, same order.
    """

    visible: Tensor
    predict: Tensor
    names: tuple[str, ...]
    sizes: tuple[int, ...]

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

    def offset(self, name: str) -> int:
        """Index of ``name``'s first token in the concatenated sequence."""
        if name not in self.names:
            raise KeyError(f"JointMask has no stream {name!r}; streams: {list(self.names)}")
        i = self.names.index(name)
        return sum(self.sizes[:i])

    def visible_bool(self) -> Tensor:
        """``(B, N)`` bool, True where the token is encoded."""
        out = torch.zeros_like(self.predict)
        return out.scatter_(1, self.visible, True)

    def stream_slice(self, x: Tensor, name: str) -> Tensor:
        """The part of a ``(B, N, ...)`` tensor that belongs to stream ``name``."""
        start = self.offset(name)
        return x[:, start : start + self.sizes[self.names.index(name)]]

    def stream_masked(self, name: str) -> Tensor:
        """``(B, L_s)`` bool, True where a token of ``name`` is not encoded."""
        return ~self.stream_slice(self.visible_bool(), name)

    def to(self, device: torch.device | str) -> JointMask:
        return JointMask(self.visible.to(device), self.predict.to(device), self.names, self.sizes)

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
    """A scalar loss plus named parts for logging (detached floats)."""

    total: Tensor
    parts: dict[str, float] = field(default_factory=dict)


def gather_tokens(x: Tensor, index: Tensor) -> Tensor:
    """Gather tokens: ``x`` ``(B or 1, L, D)``, ``index`` ``(B, n)`` -> ``(B, n, D)``."""
    if x.shape[0] == 1 and index.shape[0] != 1:
        x = x.expand(index.shape[0], -1, -1)
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
