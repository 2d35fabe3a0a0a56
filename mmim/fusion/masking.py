"""MultiMAE / 4M token budgets: a fixed number of encoded (and, optionally, predicted) tokens per
sample, split across streams by a symmetric Dirichlet draw that differs per sample.

The random numbers are drawn first (:func:`draw_budget_noise`, from a ``torch.Generator``), then
turned into indices by pure functions, so the official MultiMAE draws can be replayed exactly.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmim.types import JointMask


@dataclass
class FusionConfig:
    """How several streams share one encoder (``model.fusion`` in a recipe).

    Attributes:
        inputs: streams whose tokens may be encoded (default: every tokenized stream).
        targets: streams that are predicted (default: every stream).
        input_budget: ``K``, encoded tokens per sample, split across ``inputs`` (MultiMAE: 98).
        input_alpha: Dirichlet concentration (one value, or one per input stream).
        sample_streams_uniformly: first pick a random non-empty subset of the input streams per
            sample, then split the budget over it (MultiMAE's ``sample_tasks_uniformly``).
        target_budget: 4M: predicted tokens per sample, split across ``targets`` and chosen among
            the tokens not encoded; ``None``: every not-encoded token of a target stream (MultiMAE).
        target_alpha: Dirichlet concentration of the target split.
        modality_embedding: add a learned per-stream embedding to the encoder's input tokens.
    """

    inputs: list[str] | None = None
    targets: list[str] | None = None
    input_budget: int = 98
    input_alpha: float | list[float] = 1.0
    sample_streams_uniformly: bool = False
    target_budget: int | None = None
    target_alpha: float | list[float] = 1.0
    modality_embedding: bool = False


def sample_gamma(alpha: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma(alpha, 1) samples of ``alpha``'s shape from ``generator`` (Marsaglia-Tsang).

    ``torch.distributions`` only draws from the global RNG; masks here must come from the step's
    generator so that a resumed run repeats them.
    """
    alpha = alpha.to(torch.float64)
    boost = alpha < 1  # Gamma(a) = Gamma(a + 1) * U^(1/a)
    a = torch.where(boost, alpha + 1, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.zeros_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    for _ in range(64):  # acceptance is >95% per round; 64 rounds never run out in practice
        x = torch.randn(a.shape, generator=generator, dtype=torch.float64)
        u = torch.rand(a.shape, generator=generator, dtype=torch.float64)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * x**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
        if not todo.any():
            break
    out = torch.where(todo, d, out)  # unreachable in practice: fall back to the mode
    u = torch.rand(a.shape, generator=generator, dtype=torch.float64)
    return torch.where(boost, out * u ** (1.0 / alpha.clamp_min(1e-12)), out)


def sample_dirichlet(alpha: Tensor, generator: torch.Generator) -> Tensor:
    """Dirichlet samples ``(B, S)`` for concentrations ``alpha`` ``(B, S)`` (normalised gammas)."""
    g = sample_gamma(alpha, generator)
    total = g.sum(dim=-1, keepdim=True)
    # all-zero rows can happen for tiny alphas (1e-5) in float64 underflow: put the mass on one stream
    safe = torch.where(total > 0, g / total.clamp_min(1e-300), torch.nn.functional.one_hot(
        g.argmax(-1), g.shape[-1]).to(g.dtype))
    return safe.to(torch.float32)


def stream_alphas(alpha: float | list[float], num: int, what: str) -> Tensor:
    if isinstance(alpha, (int, float)):
        return torch.full((num,), float(alpha))
    if len(alpha) != num:
        raise ValueError(f"model.fusion.{what}: {len(alpha)} values for {num} streams")
    return torch.tensor([float(a) for a in alpha])


def uniform_subset_alphas(batch: int, alphas: Tensor, generator: torch.Generator, eps: float = 1e-5) -> Tensor:
    """MultiMAE's ``sample_alphas``: a random non-empty subset of streams per sample."""
    n = alphas.shape[0]
    choices = torch.tensor(list(itertools.product([0, 1], repeat=n))[1:], dtype=torch.float32)
    pick = torch.randint(0, choices.shape[0], (batch,), generator=generator)
    return choices[pick] * alphas + eps


def budget_select(split: Tensor, noises: list[Tensor], shuffle_noise: Tensor, budget: int,
                  available: Tensor | None = None) -> Tensor:
    """Choose ``budget`` tokens per sample from the concatenated streams, as MultiMAE does.

    Args:
        split: ``(B, S)`` Dirichlet proportions per stream.
        noises: per stream ``(B, L_s)`` uniform noise; the first ``round(split * budget)``
            positions of its argsort order are the stream's preferred tokens.
        shuffle_noise: ``(B, N)`` uniform noise that orders the final choice (preferred tokens
            first, then the others at random) and fixes up rounding so exactly ``budget`` remain.
        available: optional ``(B, N)`` bool; tokens that may be chosen (others never are).

    Returns:
        ``(B, budget)`` indices into the concatenated sequence, in MultiMAE's ``ids_keep`` order.
    """
    per_stream = (split * budget).round().long()
    pre = []
    for i, noise in enumerate(noises):
        ranks = torch.argsort(noise, dim=1)  # as the official code: compare the argsort values
        pre.append((ranks >= per_stream[:, i : i + 1]).to(torch.float32))
    score = torch.cat(pre, dim=1) + shuffle_noise
    if available is not None:
        short = available.sum(1) < budget
        if short.any():
            raise ValueError(f"a budget of {budget} tokens exceeds the {int(available.sum(1).min())} tokens "
                             f"available to it in sample {int(short.nonzero()[0])}")
        score = torch.where(available, score, torch.full_like(score, 4.0))
    return torch.argsort(score, dim=1)[:, :budget]


@dataclass
class BudgetNoise:
    """The random numbers one MultiMAE/4M masking draw uses (all replayable)."""

    split: Tensor
    noises: list[Tensor]
    shuffle: Tensor
    target_split: Tensor | None = None
    target_noises: list[Tensor] = field(default_factory=list)
    target_shuffle: Tensor | None = None


class BudgetMasker:
    """Makes a :class:`JointMask` for named streams from :class:`FusionConfig` budgets.

    Args:
        config: the fusion settings.
        sizes: tokens per tokenized stream, in concatenation order.
        targets: streams predicted by the model and the token stream each one reads
            (``{"norm_rgb": "rgb"}`` for an extra head on rgb's tokens).
    """

    def __init__(self, config: FusionConfig, sizes: dict[str, int], targets: dict[str, str]) -> None:
        self.config, self.sizes = config, dict(sizes)
        self.names = tuple(sizes)
        ends = torch.tensor(list(self.sizes.values())).cumsum(0).tolist()
        self.starts = {n: end - self.sizes[n] for n, end in zip(self.names, ends)}
        self.inputs = list(config.inputs) if config.inputs is not None else list(self.names)
        for name in self.inputs:
            if name not in self.sizes:
                raise ValueError(f"model.fusion.inputs: {name!r} is not a tokenized stream; streams: {list(self.names)}")
        # the token streams that are predicted (aliases read their source's tokens)
        self.target_tokens = sorted({targets[t] for t in targets}, key=self.names.index)
        total_in = sum(self.sizes[n] for n in self.inputs)
        if not 0 < config.input_budget <= total_in:
            raise ValueError(f"model.fusion.input_budget={config.input_budget}: must be in 1..{total_in} "
                             f"(the tokens of the input streams {self.inputs})")
        self.input_alpha = stream_alphas(config.input_alpha, len(self.inputs), "input_alpha")
        self.target_alpha = stream_alphas(config.target_alpha, len(self.target_tokens), "target_alpha")
        if config.target_budget is not None:
            room = sum(self.sizes[n] for n in self.target_tokens)
            if not 0 < config.target_budget <= room:
                raise ValueError(f"model.fusion.target_budget={config.target_budget}: must be in 1..{room} "
                                 f"(the tokens of the target streams {self.target_tokens})")

    def draw(self, batch: int, generator: torch.Generator) -> BudgetNoise:
        alphas = self.input_alpha.expand(batch, -1)
        if self.config.sample_streams_uniformly:
            alphas = uniform_subset_alphas(batch, self.input_alpha, generator)
        split = sample_dirichlet(alphas, generator)
        noises = [torch.rand(batch, self.sizes[n], generator=generator) for n in self.inputs]
        shuffle = torch.rand(batch, sum(self.sizes[n] for n in self.inputs), generator=generator)
        out = BudgetNoise(split, noises, shuffle)
        if self.config.target_budget is not None:
            out.target_split = sample_dirichlet(self.target_alpha.expand(batch, -1), generator)
            out.target_noises = [torch.rand(batch, self.sizes[n], generator=generator) for n in self.target_tokens]
            out.target_shuffle = torch.rand(batch, sum(self.sizes[n] for n in self.target_tokens), generator=generator)
        return out

    def __call__(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> JointMask:
        return self.from_noise(self.draw(batch, generator)).to(device)

    def columns(self, streams: list[str]) -> Tensor:
        """Positions in the concatenation of all streams of the tokens of ``streams``, in order:
        maps indices into the concatenation of ``streams`` to indices into all streams."""
        return torch.cat([torch.arange(self.sizes[n]) + self.starts[n] for n in streams])

    def from_noise(self, noise: BudgetNoise) -> JointMask:
        batch = noise.split.shape[0]
        local = budget_select(noise.split, noise.noises, noise.shuffle, self.config.input_budget)
        visible = self.columns(self.inputs)[local]
        n = sum(self.sizes.values())
        seen = torch.zeros(batch, n, dtype=torch.bool).scatter_(1, visible, True)
        target_cols = self.columns(self.target_tokens)
        if self.config.target_budget is None:
            predict = torch.zeros(batch, n, dtype=torch.bool)
            predict[:, target_cols] = ~seen[:, target_cols]
        else:
            local_t = budget_select(noise.target_split, noise.target_noises, noise.target_shuffle,
                                    self.config.target_budget, available=~seen[:, target_cols])
            predict = torch.zeros(batch, n, dtype=torch.bool).scatter_(1, target_cols[local_t], True)
        return JointMask(visible, predict, self.names, tuple(self.sizes.values()))

    def predict_from(self, batch: int, inputs: list[str], target: str, device: torch.device | str = "cpu") -> JointMask:
        """Any-to-any inference: encode every token of ``inputs``, predict every token of ``target``."""
        for name in [*inputs, target]:
            if name not in self.sizes:
                raise ValueError(f"no tokenized stream {name!r}; streams: {list(self.names)}")
        masked = {n: torch.full((batch, self.sizes[n]), n not in inputs, dtype=torch.bool) for n in self.names}
        predict = {n: torch.zeros(batch, self.sizes[n], dtype=torch.bool) for n in self.names}
        predict[target] = torch.ones(batch, self.sizes[target], dtype=torch.bool)
        return JointMask.from_stream_masks(masked, self.sizes, predict).to(device)
