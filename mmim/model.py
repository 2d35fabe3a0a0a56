"""The masked model: named token streams around one shared encoder, on one path.

Every model, one stream or several, fused or not, teacher or not, runs the same loop::

    tokens = tokenizer(raw) per stream                      (B, L_s, D)
    mask   = one JointMask over the concatenated streams     per-stream maskers, or fusion budgets
    enc    = encode(tokens, mask)                            the K visible tokens of all streams
    pred   = decoder(DecoderContext(enc, mask, ...))         per predicted stream
    loss   = sum_s weight_s * loss_s(pred, target_s gathered at pred.index [, pred.weight])

A single-stream MAE is the one-stream case: its JointMask holds the masker's visible tokens in the
masker's (official) order. Fusion (MultiMAE, 4M) only changes who draws the mask: a budget over
all input streams instead of one masker per stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmim import registry
from mmim.config.recipe import ModelConfig, StreamConfig
from mmim.fusion.masking import BudgetMasker, FusionConfig
from mmim.interfaces import Decoder, DecoderContext, Loss, Masker, Target, Tokenizer
from mmim.teacher import Teacher, TeacherConfig
from mmim.trunk.encoder import ViTEncoder
from mmim.trunk.init import xavier_init_
from mmim.trunk.joint import encode
from mmim.types import JointMask, Prediction, StreamMask, Tokens, gather_tokens


class Stream(nn.Module):
    """The components of one named stream.

    ``tokens_of`` names another stream whose tokens (and mask) this one predicts with a head of
    its own (MultiMAE's ``norm_rgb``); such a stream has no tokenizer. ``mask_in_encoder``
    streams encode every token, the masked ones replaced by ``mask_token`` (SimMIM, MaskFeat).
    """

    def __init__(self, tokenizer: Tokenizer | None, masker: Masker | None, target: Target | None, loss: Loss | None,
                 decoder: Decoder | None, weight: float = 1.0, input_key: str | None = None,
                 mask_in_encoder: bool = False, teacher_input_key: str | None = None, tokens_of: str | None = None) -> None:
        super().__init__()
        self.tokenizer, self.masker, self.target, self.loss, self.decoder = tokenizer, masker, target, loss, decoder
        self.weight = weight
        self.input_key = input_key
        self.teacher_input_key = teacher_input_key
        self.tokens_of = tokens_of
        self.mask_token = nn.Parameter(torch.zeros(1, 1, tokenizer.embed_dim)) if mask_in_encoder else None
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)


@dataclass
class ModelOutput:
    """What one forward pass returns.

    Attributes:
        loss: weighted sum of the stream losses (scalar).
        parts: named loss parts (``"<stream>/<part>"``) as detached 0-dim tensors, for logging.
        predictions: per predicted stream, the decoder's prediction.
        targets: per predicted stream, the target gathered at the predicted tokens ``(B, Lp, C)``.
        mask: the joint mask used.
        tokens: per tokenized stream, the tokenizer's output.
        prefix, encoded: the encoder's output ``(B, P, D)`` and ``(B, K, D)`` (the latent).
    """

    loss: Tensor
    mask: JointMask
    parts: dict[str, Tensor] = field(default_factory=dict)
    predictions: dict[str, Prediction] = field(default_factory=dict)
    targets: dict[str, Tensor] = field(default_factory=dict)
    tokens: dict[str, Tokens] = field(default_factory=dict)
    prefix: Tensor | None = None
    encoded: Tensor | None = None

    def stream_mask(self, name: str) -> StreamMask:
        """Stream ``name``'s mask in its own token indices (a ``tokens_of`` stream: its source's)."""
        return self.mask.stream_mask(name)


class MaskedModel(nn.Module):
    """Encoder + streams. Masks are made outside the trunk and can always be passed in.

    Attributes:
        token_streams: streams with a tokenizer, in concatenation order.
        inputs: the streams the encoder reads (fusion: ``model.fusion.inputs``; else all).
        targets: the streams predicted (fusion: ``model.fusion.targets``; else those with a decoder).
    """

    def __init__(self, encoder: ViTEncoder, streams: Mapping[str, Stream], teacher: TeacherConfig | None = None,
                 fusion: FusionConfig | None = None) -> None:
        super().__init__()
        if not streams:
            raise ValueError("a masked model needs at least one stream")
        self.encoder = encoder
        self.streams = nn.ModuleDict(streams)
        self.fusion = fusion
        self.token_streams = [n for n, s in self.streams.items() if s.tokenizer is not None]
        self.inputs = list(fusion.inputs) if fusion is not None and fusion.inputs is not None else list(self.token_streams)
        if fusion is not None and fusion.targets is not None:
            self.targets = list(fusion.targets)
        else:
            self.targets = [n for n, s in self.streams.items() if s.decoder is not None]
        self.modality_embed = nn.ParameterDict(
            {n: nn.Parameter(torch.zeros(1, 1, encoder.embed_dim)) for n in self.token_streams}
        ) if fusion is not None and fusion.modality_embedding else None
        if self.modality_embed is not None:
            for p in self.modality_embed.values():
                nn.init.normal_(p, std=0.02)
        needs_teacher = any(getattr(s.target, "requires_teacher", False) for s in self.streams.values())
        tokenizers = {n: self.streams[n].tokenizer for n in self.token_streams}
        self.teacher = Teacher(teacher or TeacherConfig(), encoder, tokenizers) if needs_teacher else None
        self._budget: BudgetMasker | None = None

    # ------------------------------------------------------------------ streams and inputs
    def restrict_inputs(self, names: list[str]) -> None:
        """Encode only ``names`` from now on (e.g. RGB-only fine-tuning of a fused model)."""
        unknown = [n for n in names if n not in self.token_streams]
        if unknown or not names:
            raise ValueError(f"finetune.streams: {unknown or names} are not tokenized streams; streams: {self.token_streams}")
        self.inputs = list(names)

    def token_source(self, name: str) -> str:
        """The stream whose tokens ``name`` predicts (itself, or its ``tokens_of``)."""
        return self.streams[name].tokens_of or name

    def raw_inputs(self, batch: Mapping[str, Tensor], names: list[str] | None = None) -> dict[str, Tensor]:
        """Each stream's raw input from the batch (only ``names`` when given)."""
        out = {}
        for name, stream in self.streams.items():
            if names is not None and name not in names:
                continue
            key = stream.input_key or name
            if stream.tokens_of:  # an extra head reads its source stream's input unless told otherwise
                key = stream.input_key or self.streams[stream.tokens_of].input_key or stream.tokens_of
            if key not in batch:
                raise KeyError(f"stream {name!r} reads batch key {key!r}, but the batch has {sorted(batch)}")
            out[name] = batch[key]
        return out

    def tokenize(self, raw: Mapping[str, Tensor]) -> dict[str, Tokens]:
        """Tokens of every tokenized stream present in ``raw``, in stream order."""
        tokens = {name: self.streams[name].tokenizer(raw[name]) for name in self.token_streams if name in raw}
        sizes = {n: t.embeddings.shape[0] for n, t in tokens.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the streams' batch sizes disagree: {sizes}")
        return tokens

    # ------------------------------------------------------------------ masks
    def budget_masker(self, sizes: Mapping[str, int]) -> BudgetMasker:
        """The fusion budget masker for these token counts (built once, rebuilt if they change)."""
        if self._budget is None or self._budget.sizes != dict(sizes):
            self._budget = BudgetMasker(self.fusion, dict(sizes), {t: self.token_source(t) for t in self.targets})
        return self._budget

    def make_mask(self, tokens: Mapping[str, Tokens], generator: torch.Generator) -> JointMask:
        """Draw the joint mask from ``generator``: the fusion budget, or each input stream's masker
        in stream order."""
        sizes = {n: t.layout.num_tokens for n, t in tokens.items()}
        batch = next(iter(tokens.values())).embeddings.shape[0]
        device = next(iter(tokens.values())).embeddings.device
        if self.fusion is not None:
            return self.budget_masker(sizes)(batch, generator, device)
        masks = {n: self.streams[n].masker(tokens[n].layout, generator) for n in self.inputs}
        return self.joint_mask(masks, tokens)

    def joint_mask(self, masks: Mapping[str, StreamMask], tokens: Mapping[str, Tokens]) -> JointMask:
        """Per-stream masks as the model's joint mask (``mask_in_encoder`` streams encode every token)."""
        device = next(iter(tokens.values())).embeddings.device
        sizes = {n: t.layout.num_tokens for n, t in tokens.items()}
        unknown = [n for n in masks if n not in sizes]
        if unknown:
            raise ValueError(f"masks given for {unknown}, which are not tokenized streams: {list(sizes)}")
        encode_all = [n for n in masks if self.streams[n].mask_token is not None]
        return JointMask.from_streams({n: m.to(device) for n, m in masks.items()}, sizes, encode_all)

    # ------------------------------------------------------------------ the path
    def encode(self, tokens: Mapping[str, Tokens], mask: JointMask | None = None,
               return_layers: bool = False) -> tuple[Tensor, ...]:
        """Encode ``mask.visible`` of ``tokens`` (every token of the input streams when ``mask`` is
        None); see :func:`encode`."""
        if mask is None:
            tokens = {n: tokens[n] for n in self.inputs if n in tokens}
            if not tokens:
                raise ValueError(f"no input stream to encode; the model reads {self.inputs}")
        mask_tokens = {n: s.mask_token for n, s in self.streams.items() if s.mask_token is not None}
        return encode(self.encoder, tokens, mask, self.modality_embed, mask_tokens or None, return_layers)

    def forward(self, batch: Mapping[str, Tensor], masks: Mapping[str, StreamMask] | JointMask | None = None,
                generator: torch.Generator | None = None, targets: list[str] | None = None,
                full: bool = False) -> ModelOutput:
        """Args:
            batch: raw inputs by batch key (see ``Stream.input_key``); other keys are ignored.
            masks: the joint mask, or per-stream masks (joined in stream order); drawn with
                ``generator`` when not given.
            generator: source of masking (and decoder) randomness; a fresh unseeded one if None.
            targets: the streams to predict (default: all of :attr:`targets`).
            full: ask decoders for predictions of every token (``Prediction.full``).

        The step runs in three parts: :meth:`tokenize`, then every random draw on the host from
        ``generator`` (the mask, a decoder's :meth:`~mmim.interfaces.Decoder.draw`), then
        :meth:`predict` (encode, decode, targets, losses). The first and the last hold no host
        synchronisation and no randomness of their own, so :meth:`compile` compiles them whole.
        """
        generator = generator if generator is not None else torch.Generator()
        raw = self.raw_inputs(batch)
        check_sample_ids(batch)
        tokens = self._part("tokenize")(raw)
        if masks is None:
            mask = self.make_mask(tokens, generator)
        elif isinstance(masks, JointMask):
            mask = masks.to(next(iter(tokens.values())).embeddings.device)
        else:
            mask = self.joint_mask(masks, tokens)
        sizes = tuple(t.layout.num_tokens for t in tokens.values())
        if mask.names != tuple(tokens) or mask.sizes != sizes:
            raise ValueError(f"the mask covers streams {dict(zip(mask.names, mask.sizes))}, the model tokenizes "
                             f"{dict(zip(tokens, sizes))}")
        targets = list(targets if targets is not None else self.targets)
        draws = {}
        for name in targets:
            source = self.token_source(name)
            drawn = self.streams[name].decoder.draw(tokens[source].layout, generator, full)
            if drawn is not None:
                draws[source] = drawn.to(mask.visible.device)
        views = None
        if self.teacher is not None:
            views = {n: batch[s.teacher_input_key] if s.teacher_input_key else raw[n]
                     for n, s in self.streams.items() if n in tokens}
        return self._part("predict")(raw, tokens, mask, tuple(targets), draws, views, full)

    def predict(self, raw: Mapping[str, Tensor], tokens: Mapping[str, Tokens], mask: JointMask, targets: tuple[str, ...],
                draws: Mapping[str, Tensor], views: Mapping[str, Tensor] | None = None, full: bool = False) -> ModelOutput:
        """Encode the mask's visible tokens, decode every target stream from the one context,
        and score each against its target: the deterministic body of :meth:`forward`."""
        prefix, encoded = self.encode(tokens, mask)
        teacher_layers = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_layers = self.teacher(views, self.encoder, {n: self.streams[n].tokenizer for n in tokens})
        context = DecoderContext(prefix, encoded, mask, {n: t.layout for n, t in tokens.items()}, dict(draws), full)
        out = ModelOutput(loss=prefix.new_zeros((), dtype=torch.float32), mask=mask, tokens=dict(tokens),
                          prefix=prefix, encoded=encoded)
        for name in targets:
            stream, source = self.streams[name], self.token_source(name)
            pred = stream.decoder(context)
            with torch.no_grad():
                if getattr(stream.target, "requires_teacher", False):
                    full_target = stream.target(raw[name], tokens[source], teacher_layers=teacher_layers[source])
                else:
                    full_target = stream.target(raw[name], tokens[source])
                target = gather_tokens(full_target, pred.index)
            add_stream_loss(out, name, stream, pred, target)
        return out

    def compile(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - torch.compile's options
        """Compile the two deterministic parts of :meth:`forward` (:meth:`tokenize` and
        :meth:`predict`) with ``torch.compile(*args, **kwargs)``; the host-side random draws
        between them stay eager. Parameters and state-dict keys are unchanged."""
        self._compiled = {"tokenize": torch.compile(self.tokenize, *args, **kwargs),
                          "predict": torch.compile(self.predict, *args, **kwargs)}

    @property
    def compiled(self) -> bool:
        return bool(self.__dict__.get("_compiled"))

    def _part(self, name: str):  # noqa: ANN202 - a bound method or its compiled version
        compiled = self.__dict__.get("_compiled")
        return compiled[name] if compiled else getattr(self, name)

    # ------------------------------------------------------------------ uses of the path
    def update_teacher(self, progress: float) -> float | None:
        """EMA step of the teacher after an optimizer step (``progress`` in [0, 1]); its momentum."""
        if self.teacher is None:
            return None
        return self.teacher.update(self.encoder, {n: self.streams[n].tokenizer for n in self.token_streams}, progress)

    @torch.no_grad()
    def predict_stream(self, batch: Mapping[str, Tensor], inputs: list[str], target: str) -> ModelOutput:
        """Any-to-any inference: predict every token of stream ``target`` from every token of
        ``inputs`` (``[]``: from the prefix tokens alone, the blind baseline)."""
        if target not in self.targets:
            raise ValueError(f"stream {target!r} is not predicted by this model; targets: {self.targets}")
        tokens = self.tokenize(self.raw_inputs(batch))
        sizes = {n: t.layout.num_tokens for n, t in tokens.items()}
        source = self.token_source(target)
        first = next(iter(tokens.values())).embeddings
        mask = JointMask.from_inputs(first.shape[0], sizes, inputs, [source], first.device)
        heads = [t for t in self.targets if self.token_source(t) == source]
        return self.forward(batch, mask, targets=heads)

    @torch.no_grad()
    def features(self, batch: Mapping[str, Tensor], pool: str = "mean") -> Tensor:
        """Frozen features ``(B, D)`` with every input token visible: mean of the tokens, or cls."""
        prefix, encoded = self.encode(self.tokenize(self.raw_inputs(batch, self.inputs)))
        if pool == "cls":
            if prefix.shape[1] == 0:
                raise ValueError("pool='cls' needs an encoder with a cls token")
            return prefix[:, 0]
        return encoded.mean(dim=1)


def add_stream_loss(out: ModelOutput, name: str, stream: Stream, pred: Prediction, target: Tensor) -> None:
    """Score one stream's prediction (weighted per token when the decoder says so) into ``out``."""
    if pred.weight is not None and not stream.loss.supports_weight:
        raise TypeError(f"stream {name!r}: the decoder gives per-token loss weights, but loss "
                        f"{type(stream.loss).__name__} does not support them (supports_weight); use an "
                        "element-wise loss (mse, l1, smooth_l1) or cross_entropy")
    result = stream.loss(pred.values, target) if pred.weight is None else \
        stream.loss(pred.values, target, weight=pred.weight)
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


def build_model(cfg: ModelConfig, source: str = "") -> MaskedModel:
    """Build the encoder and every stream from a model config validated at recipe load
    (:func:`mmim.config.recipe.check_model`)."""
    encoder = ViTEncoder(cfg.encoder)
    xavier_init_(encoder.blocks)
    fused = cfg.fusion is not None
    where = f"{source}: " if source else ""
    tokenizers = {name: registry.build("tokenizer", s.tokenizer, where=f"{where}model.streams.{name}.tokenizer",
                                       embed_dim=encoder.embed_dim)
                  for name, s in cfg.streams.items() if s.tokens_of is None}
    streams = {name: build_stream(name, s, encoder.embed_dim, tokenizers, fused, where) for name, s in cfg.streams.items()}
    return MaskedModel(encoder, streams, cfg.teacher, cfg.fusion)


def build_stream(name: str, cfg: StreamConfig, embed_dim: int, tokenizers: Mapping[str, Tokenizer],
                 fused: bool, where: str = "") -> Stream:
    """Build one stream; ``tokenizers`` are every token stream's (a ``tokens_of`` stream sizes its
    head from its source's). Under fusion the budget masks every stream: no masker is built."""
    at = f"{where}model.streams.{name}"

    def opt(kind: str):
        spec = getattr(cfg, kind)
        return None if spec is None else registry.build(kind, spec, where=f"{at}.{kind}")

    source = cfg.tokens_of or name
    target = opt("target")
    decoder = None
    if cfg.decoder is not None:
        decoder = registry.build("decoder", cfg.decoder, where=f"{at}.decoder", encoder_dim=embed_dim,
                                 out_dim=target.dim(tokenizers[source]), position=tokenizers[source].position_embedding,
                                 context_positions={n: t.position_embedding for n, t in tokenizers.items()},
                                 stream=source)
    return Stream(tokenizers.get(name), None if fused else opt("masker"), target, opt("loss"), decoder, cfg.weight,
                  cfg.input_key, cfg.mask_in_encoder, cfg.teacher_input_key, cfg.tokens_of)
