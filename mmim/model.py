"""The masked model: named token streams around one shared encoder.

``forward`` runs the whole loop for any set of streams::

    tokens = tokenizer(raw) per stream          (B, L_s, D)
    masks  = masker(layout) per stream           (given, or drawn from a generator)
    enc    = encoder(cat of visible tokens + positions over streams)
    pred   = decoder(prefix, stream's encoded visible tokens, mask)
    loss   = sum_s weight_s * loss_s(pred, target_s gathered at pred.index)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmim import registry
from mmim.config.recipe import ModelConfig, StreamConfig
from mmim.interfaces import Decoder, Loss, Masker, Target, Tokenizer
from mmim.teacher import Teacher, TeacherConfig
from mmim.trunk.encoder import ViTEncoder
from mmim.trunk.init import xavier_init_
from mmim.types import Prediction, StreamMask, Tokens, gather_tokens


class Stream(nn.Module):
    """The components of one named stream."""

    def __init__(self, tokenizer: Tokenizer, masker: Masker, target: Target, loss: Loss, decoder: Decoder,
                 weight: float = 1.0, input_key: str | None = None, mask_in_encoder: bool = False,
                 teacher_input_key: str | None = None) -> None:
        super().__init__()
        self.teacher_input_key = teacher_input_key
        self.tokenizer, self.target, self.loss, self.decoder = tokenizer, target, loss, decoder
        self.masker = masker
        self.weight = weight
        self.input_key = input_key
        # SimMIM/MaskFeat: the encoder sees every token, masked ones replaced by this learned token
        self.mask_token = nn.Parameter(torch.zeros(1, 1, tokenizer.embed_dim)) if mask_in_encoder else None
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)

    def encoder_input(self, tokens: Tokens, mask: StreamMask | None) -> tuple[Tensor, Tensor]:
        """Token embeddings ``(B, n, D)`` the encoder gets and their positions ``(1 or B, n, D)``.

        Visible tokens only (MAE), or every token with masked ones replaced by the mask token
        (``mask_in_encoder``); all tokens when ``mask`` is None.
        """
        x, pos = tokens.embeddings, tokens.pos.to(tokens.embeddings.dtype)
        if mask is None:
            return x, pos
        if self.mask_token is not None:
            masked = mask.bool_mask().unsqueeze(-1)
            return torch.where(masked, self.mask_token.to(x.dtype), x), pos
        return gather_tokens(x, mask.visible), gather_tokens(pos, mask.visible)


@dataclass
class ModelOutput:
    """What one forward pass returns.

    Attributes:
        loss: weighted sum of the stream losses (scalar).
        parts: named loss parts (``"<stream>/<part>"``) as floats, for logging.
        predictions: per stream, the decoder's prediction.
        targets: per stream, the target gathered at the predicted tokens ``(B, Lp, C)``.
        masks: per stream, the mask used.
        tokens: per stream, the tokenizer's output.
    """

    loss: Tensor
    parts: dict[str, float] = field(default_factory=dict)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    targets: dict[str, Tensor] = field(default_factory=dict)
    masks: dict[str, StreamMask] = field(default_factory=dict)
    tokens: dict[str, Tokens] = field(default_factory=dict)


class MaskedModel(nn.Module):
    """Encoder + streams. Masks are made outside the trunk and can always be passed in."""

    def __init__(self, encoder: ViTEncoder, streams: Mapping[str, Stream], teacher: TeacherConfig | None = None) -> None:
        super().__init__()
        if not streams:
            raise ValueError("a masked model needs at least one stream")
        self.encoder = encoder
        self.streams = nn.ModuleDict(streams)
        needs_teacher = any(getattr(s.target, "requires_teacher", False) for s in self.streams.values())
        self.teacher = Teacher(self, teacher or TeacherConfig()) if needs_teacher else None

    def update_teacher(self, progress: float) -> float | None:
        """EMA step of the teacher after an optimizer step (``progress`` in [0, 1]); its momentum."""
        return self.teacher.update(self, progress) if self.teacher is not None else None

    def raw_inputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for name, stream in self.streams.items():
            key = stream.input_key or name
            if key not in batch:
                raise KeyError(f"stream {name!r} reads batch key {key!r}, but the batch has {sorted(batch)}")
            out[name] = batch[key]
        return out

    def tokenize(self, raw: Mapping[str, Tensor]) -> dict[str, Tokens]:
        return {name: stream.tokenizer(raw[name]) for name, stream in self.streams.items()}

    def make_masks(self, tokens: Mapping[str, Tokens], generator: torch.Generator) -> dict[str, StreamMask]:
        """Draw every stream's mask from ``generator`` (a stream at a time, in stream order)."""
        return {name: self.streams[name].masker(tokens[name].layout, generator) for name in self.streams}

    def encode(self, tokens: Mapping[str, Tokens], masks: Mapping[str, StreamMask] | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Encode the visible tokens of all streams jointly.

        Returns:
            ``prefix`` ``(B, P, D)`` and, per stream, its encoded tokens: the visible ones
            ``(B, Lv_s, D)`` in ``mask.visible`` order, or all ``(B, L_s, D)`` in token order when
            ``masks`` is None or the stream encodes mask tokens (``mask_in_encoder``).
        """
        separate = self.encoder.pos_every_block
        pieces, positions, sizes = [], [], []
        for name, tok in tokens.items():
            x, pos = self.streams[name].encoder_input(tok, masks[name] if masks is not None else None)
            if separate:
                positions.append(pos.expand(x.shape[0], -1, -1))
            else:
                x = x + pos
            pieces.append(x)
            sizes.append(x.shape[1])
        pos_all = torch.cat(positions, dim=1) if separate else None
        prefix, encoded = self.encoder(torch.cat(pieces, dim=1), pos=pos_all)
        return prefix, dict(zip(tokens, torch.split(encoded, sizes, dim=1)))

    def forward(self, batch: Mapping[str, Tensor], masks: Mapping[str, StreamMask] | None = None,
                generator: torch.Generator | None = None) -> ModelOutput:
        """Args:
            batch: raw inputs by batch key (see ``Stream.input_key``); other keys are ignored.
            masks: per-stream masks; drawn with ``generator`` when not given.
            generator: source of masking randomness (a fresh unseeded one if neither is given).
        """
        raw = self.raw_inputs(batch)
        tokens = self.tokenize(raw)
        if masks is None:
            masks = self.make_masks(tokens, generator if generator is not None else torch.Generator())
        masks = {name: m.to(tokens[name].embeddings.device) for name, m in masks.items()}
        prefix, encoded = self.encode(tokens, masks)
        out = ModelOutput(loss=torch.zeros((), device=prefix.device), masks=masks, tokens=tokens)
        teacher = None
        if self.teacher is not None:
            views = {n: batch[s.teacher_input_key] if s.teacher_input_key else raw[n] for n, s in self.streams.items()}
            teacher = self.teacher.layer_features(views)
        for name, stream in self.streams.items():
            pred = stream.decoder(prefix, encoded[name], masks[name], tokens[name].layout)
            with torch.no_grad():
                if getattr(stream.target, "requires_teacher", False):
                    full = stream.target(raw[name], tokens[name], teacher_layers=teacher[name])
                else:
                    full = stream.target(raw[name], tokens[name])
                target = gather_tokens(full, pred.index)
            result = stream.loss(pred.values, target) if pred.weight is None else \
                weighted_loss(stream.loss, name, pred.values, target, pred.weight)
            out.loss = out.loss + stream.weight * result.total
            out.parts.update({f"{name}/{k}": v for k, v in result.parts.items()})
            out.predictions[name], out.targets[name] = pred, target
        return out

    @torch.no_grad()
    def features(self, batch: Mapping[str, Tensor], pool: str = "mean") -> Tensor:
        """Frozen features ``(B, D)`` with every token visible: mean of all stream tokens or cls."""
        prefix, encoded = self.encode(self.tokenize(self.raw_inputs(batch)), None)
        if pool == "cls":
            if prefix.shape[1] == 0:
                raise ValueError("pool='cls' needs an encoder with a cls token")
            return prefix[:, 0]
        return torch.cat(list(encoded.values()), dim=1).mean(dim=1)


def weighted_loss(loss: Loss, stream: str, pred: Tensor, target: Tensor, weight: Tensor):
    """Call ``loss`` with per-token weights, or say clearly that it takes none."""
    import inspect

    if "weight" not in inspect.signature(loss.forward).parameters:
        raise TypeError(f"stream {stream!r}: the decoder gives per-token loss weights, but loss "
                        f"{type(loss).__name__} takes no 'weight' argument; use an element-wise loss (mse, l1, smooth_l1)")
    return loss(pred, target, weight=weight)


def build_stream(name: str, cfg: StreamConfig, embed_dim: int, where: str = "") -> Stream:
    at = f"{where}model.streams.{name}"
    tokenizer = registry.build("tokenizer", cfg.tokenizer, where=f"{at}.tokenizer", embed_dim=embed_dim)
    masker = registry.build("masker", cfg.masker, where=f"{at}.masker")
    target = registry.build("target", cfg.target, where=f"{at}.target")
    loss = registry.build("loss", cfg.loss, where=f"{at}.loss")
    decoder = registry.build("decoder", cfg.decoder, where=f"{at}.decoder", encoder_dim=embed_dim,
                             out_dim=target.dim(tokenizer), position=tokenizer.position_embedding)
    return Stream(tokenizer, masker, target, loss, decoder, cfg.weight, cfg.input_key, cfg.mask_in_encoder,
                  cfg.teacher_input_key)


def build_model(cfg: ModelConfig, source: str = "") -> MaskedModel:
    """Build the encoder and every stream from a validated model config."""
    encoder = ViTEncoder(cfg.encoder)
    xavier_init_(encoder.blocks)
    where = f"{source}: " if source else ""
    streams = {name: build_stream(name, s, encoder.embed_dim, where) for name, s in cfg.streams.items()}
    return MaskedModel(encoder, streams, cfg.teacher)
