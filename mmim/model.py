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
from mmim.fusion.masking import BudgetMasker, FusionConfig
from mmim.interfaces import Decoder, FusionContext, FusionDecoder, Loss, Masker, Target, Tokenizer
from mmim.teacher import Teacher, TeacherConfig
from mmim.trunk.encoder import ViTEncoder
from mmim.trunk.init import xavier_init_
from mmim.types import JointMask, Prediction, StreamMask, Tokens, gather_tokens


class Stream(nn.Module):
    """The components of one named stream."""

    def __init__(self, tokenizer: Tokenizer | None, masker: Masker | None, target: Target | None, loss: Loss | None,
                 decoder: Decoder | FusionDecoder | None, weight: float = 1.0, input_key: str | None = None,
                 mask_in_encoder: bool = False, teacher_input_key: str | None = None, tokens_of: str | None = None) -> None:
        super().__init__()
        self.teacher_input_key = teacher_input_key
        self.tokenizer, self.target, self.loss, self.decoder = tokenizer, target, loss, decoder
        self.masker = masker
        self.weight = weight
        self.input_key = input_key
        self.tokens_of = tokens_of  # fusion: an extra head on another stream's tokens
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
        masks: per stream, the mask used; for a fused model the one :class:`JointMask`.
        tokens: per stream, the tokenizer's output.
    """

    loss: Tensor
    parts: dict[str, float] = field(default_factory=dict)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    targets: dict[str, Tensor] = field(default_factory=dict)
    masks: dict[str, StreamMask] | JointMask = field(default_factory=dict)
    tokens: dict[str, Tokens] = field(default_factory=dict)


class MaskedModel(nn.Module):
    """Encoder + streams. Masks are made outside the trunk and can always be passed in."""

    def __init__(self, encoder: ViTEncoder, streams: Mapping[str, Stream], teacher: TeacherConfig | None = None,
                 fusion: FusionConfig | None = None) -> None:
        super().__init__()
        if not streams:
            raise ValueError("a masked model needs at least one stream")
        self.encoder = encoder
        self.streams = nn.ModuleDict(streams)
        needs_teacher = any(getattr(s.target, "requires_teacher", False) for s in self.streams.values())
        if needs_teacher and fusion is not None:
            raise ValueError("teacher targets (data2vec-style) are not supported in fused models (model.fusion)")
        self.teacher = Teacher(self, teacher or TeacherConfig()) if needs_teacher else None
        self.fusion = fusion
        self.budget: BudgetMasker | None = None
        if fusion is not None:
            self.token_streams = [n for n, s in self.streams.items() if s.tokens_of is None]
            self.fusion_inputs = list(fusion.inputs) if fusion.inputs is not None else list(self.token_streams)
            self.fusion_targets = list(fusion.targets) if fusion.targets is not None else list(self.streams)
            self.modality_embed = nn.ParameterDict(
                {n: nn.Parameter(torch.zeros(1, 1, encoder.embed_dim)) for n in self.token_streams}
            ) if fusion.modality_embedding else None
            if self.modality_embed is not None:
                for p in self.modality_embed.values():
                    nn.init.normal_(p, std=0.02)

    @property
    def fused(self) -> bool:
        return self.fusion is not None

    def encoder_inputs(self) -> list[str] | None:
        """The streams an unmasked encoding reads (a fused model's inputs; None: every stream)."""
        return list(self.fusion_inputs) if self.fused else None

    def restrict_inputs(self, names: list[str]) -> None:
        """A fused model encodes only ``names`` from now on (e.g. RGB-only fine-tuning)."""
        if not self.fused:
            raise ValueError("finetune.streams selects input streams of a fused model (model.fusion)")
        unknown = [n for n in names if n not in self.token_streams]
        if unknown or not names:
            raise ValueError(f"finetune.streams: {unknown or names} are not tokenized streams; streams: {self.token_streams}")
        self.fusion_inputs = list(names)

    def token_source(self, name: str) -> str:
        """The stream whose tokens ``name`` predicts (itself, or its ``tokens_of``)."""
        return self.streams[name].tokens_of or name

    def budget_masker(self, tokens: Mapping[str, Tokens]) -> BudgetMasker:
        """The fusion budget masker for these token counts (built once, rebuilt if they change)."""
        sizes = {n: tokens[n].layout.num_tokens for n in self.token_streams}
        if self.budget is None or self.budget.sizes != sizes:
            self.budget = BudgetMasker(self.fusion, sizes, {t: self.token_source(t) for t in self.fusion_targets})
        return self.budget

    def update_teacher(self, progress: float) -> float | None:
        """EMA step of the teacher after an optimizer step (``progress`` in [0, 1]); its momentum."""
        return self.teacher.update(self, progress) if self.teacher is not None else None

    def raw_inputs(self, batch: Mapping[str, Tensor], names: list[str] | None = None) -> dict[str, Tensor]:
        """Each stream's raw input from the batch (only ``names`` when given)."""
        out = {}
        for name, stream in self.streams.items():
            if names is not None and name not in names:
                continue
            if stream.tokens_of:  # an extra head reads its source stream's input unless told otherwise
                key = stream.input_key or self.streams[stream.tokens_of].input_key or stream.tokens_of
            else:
                key = stream.input_key or name
            if key not in batch:
                raise KeyError(f"stream {name!r} reads batch key {key!r}, but the batch has {sorted(batch)}")
            out[name] = batch[key]
        return out

    def tokenize(self, raw: Mapping[str, Tensor]) -> dict[str, Tokens]:
        return {name: stream.tokenizer(raw[name]) for name, stream in self.streams.items()
                if stream.tokenizer is not None and name in raw}

    def make_masks(self, tokens: Mapping[str, Tokens], generator: torch.Generator) -> dict[str, StreamMask]:
        """Draw every stream's mask from ``generator`` (a stream at a time, in stream order)."""
        return {name: self.streams[name].masker(tokens[name].layout, generator) for name in self.streams}

    def encode(self, tokens: Mapping[str, Tokens], masks: Mapping[str, StreamMask] | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Encode the visible tokens of all streams jointly (a fused model: every token of its
        input streams when ``masks`` is None, see :meth:`encode_fused`).

        Returns:
            ``prefix`` ``(B, P, D)`` and, per stream, its encoded tokens: the visible ones
            ``(B, Lv_s, D)`` in ``mask.visible`` order, or all ``(B, L_s, D)`` in token order when
            ``masks`` is None or the stream encodes mask tokens (``mask_in_encoder``).
        """
        if self.fused:
            if masks is not None:
                raise ValueError("a fused model encodes through encode_fused(tokens, joint_mask)")
            tokens = {n: tokens[n] for n in self.fusion_inputs}
            prefix, encoded = self.encode_fused(tokens, None)
            return prefix, dict(zip(tokens, torch.split(encoded, [t.layout.num_tokens for t in tokens.values()], dim=1)))
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

    def encode_fused(self, tokens: Mapping[str, Tokens], mask: JointMask | None) -> tuple[Tensor, Tensor]:
        """Encode the tokens ``mask.visible`` selects from the concatenation of ``tokens`` (all of
        them when ``mask`` is None): ``(prefix, encoded (B, K, D))``, encoded in ``visible`` order."""
        xs, ps = [], []
        for name, tok in tokens.items():
            x, pos = tok.embeddings, tok.pos.to(tok.embeddings.dtype).expand(tok.embeddings.shape[0], -1, -1)
            if self.modality_embed is not None:
                x = x + self.modality_embed[name].to(x.dtype)
            xs.append(x)
            ps.append(pos)
        x, pos = torch.cat(xs, dim=1), torch.cat(ps, dim=1)
        if mask is not None:
            x, pos = gather_tokens(x, mask.visible), gather_tokens(pos, mask.visible)
        if self.encoder.pos_every_block:
            return self.encoder(x, pos=pos)
        return self.encoder(x + pos)

    def forward(self, batch: Mapping[str, Tensor], masks: Mapping[str, StreamMask] | JointMask | None = None,
                generator: torch.Generator | None = None) -> ModelOutput:
        """Args:
            batch: raw inputs by batch key (see ``Stream.input_key``); other keys are ignored.
            masks: per-stream masks (a :class:`JointMask` for a fused model); drawn with
                ``generator`` when not given.
            generator: source of masking randomness (a fresh unseeded one if neither is given).
        """
        if self.fused:
            return self.forward_fused(batch, masks, generator)
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
            add_stream_loss(out, name, stream, pred, target)
        return out

    def forward_fused(self, batch: Mapping[str, Tensor], mask: JointMask | None = None,
                      generator: torch.Generator | None = None, targets: list[str] | None = None) -> ModelOutput:
        """MultiMAE / 4M: encode the budgeted tokens of all input streams, predict the targets
        (``targets``: a subset of the fusion targets; default all)."""
        if mask is not None and not isinstance(mask, JointMask):
            raise TypeError("a fused model takes one JointMask (see mmim.types.JointMask), not per-stream masks")
        raw = self.raw_inputs(batch)
        tokens = self.tokenize(raw)
        batch_sizes = {n: t.embeddings.shape[0] for n, t in tokens.items()}
        if len(set(batch_sizes.values())) > 1:
            raise ValueError(f"the streams' batch sizes disagree: {batch_sizes}")
        check_sample_ids(batch)
        device = next(iter(tokens.values())).embeddings.device
        budget = self.budget_masker(tokens)
        if mask is None:
            batch_size = next(iter(batch_sizes.values()))
            mask = budget(batch_size, generator if generator is not None else torch.Generator(), device)
        mask = mask.to(device)
        if mask.names != tuple(self.token_streams) or mask.sizes != tuple(budget.sizes.values()):
            raise ValueError(f"JointMask covers streams {dict(zip(mask.names, mask.sizes))}, the model tokenizes "
                             f"{budget.sizes}")
        prefix, encoded = self.encode_fused({n: tokens[n] for n in self.token_streams}, mask)
        context = FusionContext(prefix, encoded, mask, {n: t.layout for n, t in tokens.items()})
        out = ModelOutput(loss=torch.zeros((), device=device), masks=mask, tokens=tokens)
        for name in targets if targets is not None else self.fusion_targets:
            stream, source = self.streams[name], self.token_source(name)
            pred = stream.decoder(context)
            with torch.no_grad():
                target = gather_tokens(stream.target(raw[name], tokens[source]), pred.index)
            add_stream_loss(out, name, stream, pred, target)
        return out

    @torch.no_grad()
    def predict_stream(self, batch: Mapping[str, Tensor], inputs: list[str], target: str) -> ModelOutput:
        """Any-to-any inference: predict every token of stream ``target`` from all tokens of
        ``inputs`` (``[]``: from nothing but the global tokens, the no-input baseline)."""
        if not self.fused:
            raise ValueError("predict_stream needs a fused model (model.fusion)")
        if target not in self.fusion_targets:
            raise ValueError(f"stream {target!r} is not a fusion target; targets: {self.fusion_targets}")
        tokens = self.tokenize(self.raw_inputs(batch))
        source = self.token_source(target)
        budget = self.budget_masker(tokens)
        batch_size = next(iter(tokens.values())).embeddings.shape[0]
        mask = budget.predict_from(batch_size, inputs, source, next(iter(tokens.values())).embeddings.device)
        heads = [t for t in self.fusion_targets if self.token_source(t) == source]
        return self.forward_fused(batch, mask, targets=heads)

    @torch.no_grad()
    def features(self, batch: Mapping[str, Tensor], pool: str = "mean") -> Tensor:
        """Frozen features ``(B, D)`` with every token visible: mean of all stream tokens or cls."""
        prefix, encoded = self.encode(self.tokenize(self.raw_inputs(batch, self.encoder_inputs())), None)
        if pool == "cls":
            if prefix.shape[1] == 0:
                raise ValueError("pool='cls' needs an encoder with a cls token")
            return prefix[:, 0]
        return torch.cat(list(encoded.values()), dim=1).mean(dim=1)


def add_stream_loss(out: ModelOutput, name: str, stream: Stream, pred: Prediction, target: Tensor) -> None:
    """Score one stream's prediction (weighted per token when the decoder says so) into ``out``."""
    result = stream.loss(pred.values, target) if pred.weight is None else \
        weighted_loss(stream.loss, name, pred.values, target, pred.weight)
    out.loss = out.loss + stream.weight * result.total
    out.parts.update({f"{name}/{k}": v for k, v in result.parts.items()})
    out.predictions[name], out.targets[name] = pred, target


def check_sample_ids(batch: Mapping[str, Tensor]) -> None:
    """Paired data may carry ``sample_id/<stream>`` keys; they must agree sample by sample."""
    ids = {k.split("/", 1)[1]: torch.as_tensor(v) for k, v in batch.items() if k.startswith("sample_id/")}
    if len(ids) < 2:
        return
    (first, ref), *rest = ids.items()
    for name, v in rest:
        if v.shape != ref.shape or not torch.equal(v, ref):
            raise ValueError(f"stream {name!r}: sample ids {v.tolist()[:8]} disagree with stream {first!r}'s "
                             f"{ref.tolist()[:8]} (the streams of a batch must describe the same samples)")


def weighted_loss(loss: Loss, stream: str, pred: Tensor, target: Tensor, weight: Tensor):
    """Call ``loss`` with per-token weights, or say clearly that it takes none."""
    import inspect

    if "weight" not in inspect.signature(loss.forward).parameters:
        raise TypeError(f"stream {stream!r}: the decoder gives per-token loss weights, but loss "
                        f"{type(loss).__name__} takes no 'weight' argument; use an element-wise loss (mse, l1, smooth_l1)")
    return loss(pred, target, weight=weight)


def build_stream(name: str, cfg: StreamConfig, embed_dim: int, where: str = "",
                 tokenizers: Mapping[str, Tokenizer] | None = None) -> Stream:
    """Build one stream.

    ``tokenizers`` is given for a fused model: every token stream's tokenizer, already built.
    The stream then takes its own from there (a ``tokens_of`` stream has none and sizes its head
    from its source's), its decoder must be a :class:`FusionDecoder` and gets every stream's
    position embedding (``context_positions``), and it has no masker (the budget masks).
    """
    at = f"{where}model.streams.{name}"
    fused = tokenizers is not None

    def opt(kind: str, **context):
        spec = getattr(cfg, kind)
        return None if spec is None else registry.build(kind, spec, where=f"{at}.{kind}", **context)

    tokenizer = tokenizers.get(name) if fused else opt("tokenizer", embed_dim=embed_dim)
    source_tok = tokenizers[cfg.tokens_of] if fused and cfg.tokens_of else tokenizer
    target = opt("target")
    decoder = None
    if cfg.decoder is not None:
        context = dict(encoder_dim=embed_dim, out_dim=target.dim(source_tok), position=source_tok.position_embedding)
        if fused:
            context.update(context_positions={n: t.position_embedding for n, t in tokenizers.items()},
                           stream=cfg.tokens_of or name)
        decoder = registry.build("decoder", cfg.decoder, where=f"{at}.decoder", **context)
        if fused != isinstance(decoder, FusionDecoder):
            kind = "a fusion decoder (e.g. multimae, joint)" if fused else \
                "a per-stream decoder (fusion decoders need model.fusion)"
            raise ValueError(f"{at}.decoder: {cfg.decoder['name']!r} is not {kind}")
    return Stream(tokenizer, None if fused else opt("masker"), target, opt("loss"), decoder, cfg.weight, cfg.input_key,
                  cfg.mask_in_encoder, cfg.teacher_input_key, cfg.tokens_of)


def build_model(cfg: ModelConfig, source: str = "") -> MaskedModel:
    """Build the encoder and every stream from a validated model config."""
    from mmim.config.recipe import check_stream_slots

    encoder = ViTEncoder(cfg.encoder)
    xavier_init_(encoder.blocks)
    where = f"{source}: " if source else ""
    check_stream_slots(cfg, where)
    tokenizers = None
    if cfg.fusion is not None:
        tokenizers = {name: registry.build("tokenizer", s.tokenizer, where=f"{where}model.streams.{name}.tokenizer",
                                           embed_dim=encoder.embed_dim)
                      for name, s in cfg.streams.items() if s.tokens_of is None}
    streams = {name: build_stream(name, s, encoder.embed_dim, where, tokenizers) for name, s in cfg.streams.items()}
    return MaskedModel(encoder, streams, cfg.teacher, cfg.fusion)
