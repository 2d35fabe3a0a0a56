"""Conformance kit: contract checks every registered component must pass.

The main test suite runs these over every tokenizer, masker, target, loss and decoder of every
installed plugin (``tests/test_conformance.py``), so a new component is tested for free. Each
check builds the component with its default options and uses its ``example_*`` hook.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmim import registry
from mmim.components.random_masker import RandomMasker
from mmim.fusion.masking import BudgetMasker, FusionConfig
from mmim.interfaces import DecoderContext
from mmim.trunk.position import FixedPositionTable, sincos_1d
from mmim.types import JointMask, Layout, Prediction, StreamMask, Tokens

EMBED_DIM = 32


def _finite(x: Tensor, what: str) -> None:
    assert torch.isfinite(x).all(), f"{what} has non-finite values"


def _grad_reached(module: nn.Module, what: str) -> None:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if params:
        missing = [n for n, p in params if p.grad is None]
        assert len(missing) < len(params), f"{what}: no gradient reached any parameter"


def check_tokenizer(name: str) -> None:
    tok = registry.build("tokenizer", {"name": name}, embed_dim=EMBED_DIM)
    x = tok.example_input(2, torch.Generator().manual_seed(0))
    out: Tokens = tok(x)
    b, length, d = out.embeddings.shape
    assert (b, d) == (2, EMBED_DIM), f"embeddings {tuple(out.embeddings.shape)}, expected (2, L, {EMBED_DIM})"
    assert out.layout.num_tokens == length and out.layout.batch_size == 2, "layout disagrees with the embeddings"
    assert out.pos.shape[0] in (1, b) and out.pos.shape[1:] == (length, d), f"pos {tuple(out.pos.shape)}"
    if out.content is not None:
        assert out.content.shape == (b, length, tok.content_dim), f"content {tuple(out.content.shape)}"
        _finite(out.content, "content")
    _finite(out.embeddings, "embeddings")
    again = tok(x)
    assert torch.equal(again.embeddings, out.embeddings), "tokenizer is not deterministic"
    pos = tok.position_embedding(16)(out.layout)
    assert pos.shape[0] in (1, b) and pos.shape[1:] == (length, 16), f"position_embedding(16) gave {tuple(pos.shape)}"
    (out.embeddings.square().mean() + out.pos.float().square().mean() * 0).backward()
    _grad_reached(tok, f"tokenizer {name}")


def check_masker(name: str) -> None:
    masker = registry.build("masker", {"name": name})
    layout: Layout = masker.example_layout()
    m1: StreamMask = masker(layout, torch.Generator().manual_seed(0))
    m2: StreamMask = masker(layout, torch.Generator().manual_seed(0))
    assert torch.equal(m1.visible, m2.visible) and torch.equal(m1.masked, m2.masked), "not deterministic under a fixed generator"
    assert m1.visible.dtype == torch.int64 and m1.masked.dtype == torch.int64, "indices must be int64"
    assert m1.visible.shape[0] == layout.batch_size, "batch size"
    assert m1.num_tokens == layout.num_tokens, f"visible + masked = {m1.num_tokens}, layout has {layout.num_tokens}"
    assert m1.visible.shape[1] > 0 and m1.masked.shape[1] > 0, "needs both visible and masked tokens"
    everything = torch.sort(torch.cat([m1.visible, m1.masked], 1), 1).values
    expected = torch.arange(layout.num_tokens).expand(layout.batch_size, -1)
    assert torch.equal(everything, expected), "visible and masked must partition the tokens of every sample"
    others = [masker(layout, torch.Generator().manual_seed(s)).masked for s in range(1, 6)]
    assert any(not torch.equal(torch.sort(o, 1).values, torch.sort(m1.masked, 1).values) for o in others), \
        "masks do not depend on the generator"


def check_target(name: str) -> None:
    target = registry.build("target", {"name": name, **registry.resolve("target", name).example_options()})
    g = torch.Generator().manual_seed(0)
    raw, tokens = target.example_inputs(g)
    extra = {}
    if target.requires_teacher:  # teacher block outputs (B, L, D) of the unmasked input
        extra["teacher_layers"] = [torch.randn(tokens.embeddings.shape, generator=g) for _ in range(12)]
    with torch.no_grad():
        out = target(raw, tokens, **extra)
        again = target(raw, tokens, **extra)
    assert out.shape[:2] == tokens.embeddings.shape[:2], f"target {tuple(out.shape)} vs tokens {tuple(tokens.embeddings.shape)}"
    _finite(out, "target")
    assert torch.equal(out, again), "target is not deterministic"


def check_loss(name: str) -> None:
    loss_fn = registry.build("loss", {"name": name, **registry.resolve("loss", name).example_options()})
    pred, target = loss_fn.example_inputs(torch.Generator().manual_seed(0))
    pred = pred.clone().requires_grad_(True)
    out = loss_fn(pred, target)
    assert out.total.dim() == 0, "loss must be a scalar"
    _finite(out.total, "loss")
    out.total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0, "no gradient reaches the prediction"
    same = loss_fn(loss_fn.example_perfect(target), target)
    assert float(same.total.detach()) <= float(out.total.detach()), "loss of a perfect prediction exceeds that of a random one"
    assert all(isinstance(v, Tensor) and v.dim() == 0 and not v.requires_grad for v in out.parts.values()), \
        "parts must be detached 0-dim tensors (the step never waits on the device for them)"
    if loss_fn.supports_weight:  # a zero weight removes a token from the loss
        w = torch.ones(pred.shape[:2])
        w[:, 0] = 0
        kept = loss_fn(pred.detach()[:, 1:], target[:, 1:]).total
        weighted = loss_fn(pred.detach(), target, weight=w).total
        assert torch.allclose(weighted, kept, rtol=1e-5, atol=1e-6), "supports_weight, but a zero weight still counts"


def _position(dim: int) -> nn.Module:
    return FixedPositionTable(sincos_1d(dim, torch.arange(48)).float())


def check_decoder(name: str, options: dict[str, Any] | None = None) -> None:
    """A decoder predicts stream ``b`` of a two-stream model from one :class:`DecoderContext`:
    per-stream masks for a ``per_stream`` decoder (mask tokens encoded when it ``needs_all_tokens``),
    a per-sample fusion budget for a joint-context one."""
    spec = {"name": name, **(options or {})}
    grids = {"a": (3, 4), "b": (6, 8)}
    sizes = {n: g[0] * g[1] for n, g in grids.items()}

    def table(n: int):
        return lambda dim: FixedPositionTable(sincos_1d(dim, torch.arange(n)).float())

    positions = {n: table(s) for n, s in sizes.items()}
    decoder = registry.build("decoder", spec, encoder_dim=EMBED_DIM, out_dim=7, position=positions["b"],
                             context_positions=positions, stream="b").eval()
    assert decoder.stream == "b", "a decoder keeps the stream it predicts as .stream"
    layouts = {n: Layout(batch_size=2, grid=g) for n, g in grids.items()}
    if decoder.per_stream:
        masks = {n: RandomMasker(0.75)(layouts[n], torch.Generator().manual_seed(i)) for i, n in enumerate(grids)}
        mask = JointMask.from_streams(masks, sizes, ["b"] if decoder.needs_all_tokens else [])
    else:
        mask = BudgetMasker(FusionConfig(input_budget=12), sizes, {"b": "b"})(2, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    prefix = torch.randn(2, 1, EMBED_DIM, generator=g)
    encoded = torch.randn(2, mask.visible.shape[1], EMBED_DIM, generator=g, requires_grad=True)
    drawn = decoder.draw(layouts["b"], torch.Generator().manual_seed(2))
    draws = {} if drawn is None else {"b": drawn}
    context = DecoderContext(prefix, encoded, mask, layouts, draws)
    pred: Prediction = decoder(context)
    assert pred.values.dim() == 3 and pred.values.shape[0] == 2 and pred.values.shape[2] == 7, f"values {tuple(pred.values.shape)}"
    assert pred.index.shape == pred.values.shape[:2], "index must be (B, Lp)"
    assert int(pred.index.min()) >= 0 and int(pred.index.max()) < sizes["b"], "index out of range of the stream"
    if pred.weight is not None:
        assert pred.weight.shape == pred.index.shape, "weight must be (B, Lp)"
    _finite(pred.values, "prediction")
    assert torch.equal(decoder(context).values, pred.values), "decoder is not deterministic in eval mode"
    if decoder.gives_full:
        full = decoder(DecoderContext(prefix, encoded, mask, layouts, full=True)).full
        assert full is not None and full.shape == (2, sizes["b"], 7), "gives_full, but no (B, L, C) full prediction"
    pred.values.square().mean().backward()
    assert encoded.grad is not None and encoded.grad.abs().sum() > 0, "no gradient reaches the encoded tokens"
    _grad_reached(decoder, f"decoder {name}")


CHECKS = {"tokenizer": check_tokenizer, "masker": check_masker, "target": check_target, "loss": check_loss,
          "decoder": check_decoder}
