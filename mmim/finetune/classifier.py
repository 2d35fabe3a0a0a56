"""A classifier over a pretrained mmim encoder (MAE's fine-tuning model)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmim.model import MaskedModel
from mmim.timm_compat import import_timm
from mmim.trunk.position import FixedPositionTable, LearnedPositionTable


def set_drop_path(model: MaskedModel, rate: float) -> None:
    """Stochastic depth rising linearly over the encoder blocks to ``rate`` (timm's DropPath)."""
    drop_path_cls = import_timm().layers.DropPath
    blocks = model.encoder.blocks
    for i, block in enumerate(blocks):
        r = rate * i / max(1, len(blocks) - 1)
        block.drop_path1 = drop_path_cls(r) if r > 0 else nn.Identity()
        block.drop_path2 = drop_path_cls(r) if r > 0 else nn.Identity()


def train_positions(model: MaskedModel) -> None:
    """Make the encoder's positions trainable (``finetune.train_positions``), as timm's ViT trains
    ``pos_embed`` when MAE fine-tunes: every input stream's fixed table becomes a
    :class:`~mmim.trunk.position.LearnedPositionTable` holding the same values, and the cls token
    gets a position of its own (``encoder.cls_pos``, zero: the cls row of MAE's sin-cos table),
    added to it before the blocks. A model that already has ``cls_pos`` keeps it."""
    encoder = model.encoder
    for name in model.inputs:
        tokenizer = model.streams[name].tokenizer
        pos = getattr(tokenizer, "pos", None)
        if isinstance(pos, LearnedPositionTable):
            continue
        if not isinstance(pos, FixedPositionTable):
            raise ValueError(f"finetune.train_positions: stream {name!r}'s tokenizer {type(tokenizer).__name__} has no "
                             f"fixed position table (.pos) to train")
        tokenizer.pos = LearnedPositionTable(pos.table)
    if encoder.cls_token is not None and encoder.cls_pos is None:
        encoder.cls_pos = nn.Parameter(torch.zeros_like(encoder.cls_token))


HEADS = ("linear", "mlp")


def pooled_dim(backbone: MaskedModel, pool: str) -> int:
    """Width of the pooled features the head sees: ``2 * D`` for ``cls_max``, else ``D``."""
    return 2 * backbone.encoder.embed_dim if pool == "cls_max" else backbone.encoder.embed_dim


def build_head(kind: str, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.5) -> nn.Module:
    """A classification head ``(B, in_features) -> (B, num_classes)``.

    ``linear``: one ``Linear``, MAE's init (weights ``trunc_normal(std=2e-5)``, zero bias).
    ``mlp``: Point-MAE's ``cls_head_finetune``: ``Linear(in, h) - BatchNorm1d - ReLU - Dropout -
    Linear(h, h) - BatchNorm1d - ReLU - Dropout - Linear(h, C)``, PyTorch's default init (as the
    official fine-tuning from a checkpoint). Its indices (``0, 1, 4, 5, 8`` hold weights) are the
    official ones, so ``head.N.*`` is ``cls_head_finetune.N.*``.
    """
    if kind == "linear":
        head = nn.Linear(in_features, num_classes)
        nn.init.trunc_normal_(head.weight, std=2e-5)  # MAE's head init
        nn.init.zeros_(head.bias)
        return head
    if kind == "mlp":
        if hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"mlp head needs head_hidden >= 1 and 0 <= head_dropout < 1, got {hidden}, {dropout}")
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
    raise ValueError(f"head must be one of {HEADS}, got {kind!r}")


class EncoderClassifier(nn.Module):
    """Tokenizers + encoder of a :class:`MaskedModel` (decoders dropped), pooled, then a head.

    ``pool="mean"`` averages every stream's tokens and applies a fresh ``fc_norm`` instead of the
    encoder's final norm (MAE ``global_pool``); ``pool="cls"`` uses the normed cls token;
    ``pool="cls_max"`` concatenates the cls token and the max over tokens (Point-MAE), so the head
    sees ``2 * D`` features.

    Args:
        backbone: a masked model whose encoder is to be fine-tuned.
        num_classes: output classes.
        pool: ``"mean"``, ``"cls"`` or ``"cls_max"``.
        head: ``"linear"``, ``"mlp"`` (see :func:`build_head`) or a ready module taking the pooled
            features (e.g. one a converter already filled with official weights).
        head_hidden, head_dropout: the ``mlp`` head's width and dropout.
    """

    def __init__(self, backbone: MaskedModel, num_classes: int, pool: str = "mean", head: str | nn.Module = "linear",
                 head_hidden: int = 256, head_dropout: float = 0.5) -> None:
        super().__init__()
        if pool not in ("mean", "cls", "cls_max"):
            raise ValueError(f"pool must be 'mean', 'cls' or 'cls_max', got {pool!r}")
        if pool != "mean" and backbone.encoder.cls_token is None:
            raise ValueError(f"pool={pool!r} needs an encoder with a cls token (model.encoder.cls_token: true)")
        for stream in backbone.streams.values():
            stream.decoder = nn.Identity()
            stream.target = nn.Identity()
        self.backbone, self.pool = backbone, pool
        dim = backbone.encoder.embed_dim
        if pool == "mean":
            eps = backbone.encoder.config.norm_eps
            backbone.encoder.norm = nn.Identity()
            self.fc_norm = nn.LayerNorm(dim, eps=eps)
        else:
            self.fc_norm = nn.Identity()
        self.head = head if isinstance(head, nn.Module) else build_head(head, pooled_dim(backbone, pool), num_classes,
                                                                       head_hidden, head_dropout)

    def set_token_masker(self, masker: object | None) -> None:
        """Drop tokens before the encoder while training (Audio-MAE fine-tunes with 20% of the time
        and 20% of the frequency token rows masked); ``masker`` is any registered masker, applied
        to each input stream."""
        self.token_masker = masker

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Raw inputs by batch key -> logits ``(B, num_classes)`` (features ``(B, D)`` or ``(B, 2D)`` pooled).

        With a token masker, training forwards encode only the tokens it keeps (masks drawn from
        ``generator``, the step's, so resumed runs repeat them); evaluation sees every token.
        """
        backbone = self.backbone
        tokens = backbone.tokenize(backbone.raw_inputs(batch, backbone.inputs))
        mask = None
        if getattr(self, "token_masker", None) is not None and self.training:
            gen = generator if generator is not None else torch.Generator()
            mask = backbone.joint_mask({n: self.token_masker(t.layout, gen) for n, t in tokens.items()}, tokens)
        prefix, encoded = backbone.encode(tokens, mask)
        if self.pool == "cls":
            feats = prefix[:, 0]
        elif self.pool == "cls_max":
            feats = torch.cat([prefix[:, 0], encoded.max(dim=1).values], dim=-1)
        else:
            feats = encoded.mean(dim=1)
        return self.head(self.fc_norm(feats))
