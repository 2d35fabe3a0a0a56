"""Replaying an official training trajectory through mmim's real training loop.

A fixture (``tests/fixtures/trajectories/<loop>/``) holds what the official loop read and drew
(data order, masks) and what it did (per-step losses, every group's lr and weight decay, the
gradient norm, the parameters before and after). :func:`run` trains mmim on the same data and
masks with the real :class:`~mmim.engine.trainer.Trainer`, its task, optimizer and schedule
builders, built from a shipped recipe; the only substitutes are sources of data and randomness:

- the dataset is the fixture's data pool (instead of the recipe's files);
- :class:`ReplaySampler` yields the official loader's order instead of mmim's permutation;
- :class:`ReplayMasker` returns the official mask of each micro-batch, found from the seed mmim
  gives that micro-batch's generator (so the loop's own seeding decides which one is used);
- :class:`ReplayBudget` does the same for a fusion model's token budget (MultiMAE): it hands
  mmim's :class:`~mmim.fusion.masking.BudgetMasker` the official random numbers (Dirichlet split,
  per-stream noise, shuffle noise) in place of its own draw, and mmim's masker turns them into the mask.

What the loop did is observed, never recomputed: the loss of each micro-batch from the task's
``step``, and lr, weight decay and gradient norm from an optimizer step pre-hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from mmim.data.loading import ResumableSampler, mix_seed
from mmim.engine.trainer import Trainer
from mmim.fusion.masking import BudgetMasker, BudgetNoise
from mmim.types import StreamMask

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trajectories"


def fixture_sets(pattern: str) -> list[str]:
    """The sets of ``tests/fixtures/trajectories`` whose name matches ``pattern`` (e.g. ``mae_pretrain(-.+)?``)."""
    import re

    return sorted(p.name for p in FIXTURES.iterdir() if re.fullmatch(pattern, p.name))


def load_fixture(name: str) -> tuple[dict, dict, dict, dict]:
    """Set ``name`` of ``tests/fixtures/trajectories``: its config, trajectory, initial and final state."""
    import json

    root = FIXTURES / name
    return (json.loads((root / "config.json").read_text()), load_file(root / "trajectory.safetensors"),
            load_file(root / "initial_state.safetensors"), load_file(root / "final_state.safetensors"))


def max_relative(ours: Tensor, theirs: Tensor, floor: float | None = None) -> float:
    """Largest ``|ours - theirs| / |theirs|`` (the denominator at least ``floor`` where given: an lr or weight
    decay of 0 compares absolutely)."""
    scale = theirs.abs() if floor is None else theirs.abs().clamp_min(floor)
    return float(((ours - theirs).abs() / scale).max())


def loss_and_norm(loss: list[float], grad_norm: list[float], official_loss: Tensor,
                  official_norm: Tensor) -> dict[str, float]:
    """``{"loss", "grad_norm"}``: the largest relative differences of mmim's per-micro-batch losses and per-step
    gradient norms from the official ones; ``{"steps": inf}`` when even their counts differ."""
    ours_loss = torch.tensor(loss, dtype=torch.float64)
    ours_norm = torch.tensor(grad_norm, dtype=torch.float64)
    official_loss = official_loss.flatten()
    if ours_loss.shape != official_loss.shape or ours_norm.shape != official_norm.shape:
        return {"steps": float("inf")}
    return {"loss": max_relative(ours_loss, official_loss), "grad_norm": max_relative(ours_norm, official_norm)}


class ReplaySampler(ResumableSampler):
    """Yields the official order ``flat_order`` (pool indices), in micro-batches of the trainer's
    batch size, continuing where the previous epoch stopped; steps and epochs are the trainer's."""

    def __init__(self, base: ResumableSampler, flat_order: list[int]) -> None:
        self.__dict__.update(base.__dict__)
        self.flat_order = flat_order

    def __iter__(self) -> Iterator[tuple[int, int]]:
        per_step = self.step_size
        start = (self.epoch * self.steps_per_epoch + self.start_step) * per_step
        stop = (self.epoch + 1) * self.steps_per_epoch * per_step
        for pos in range(start, stop):
            yield self.flat_order[pos % len(self.flat_order)], 0


class ReplayMasker:
    """The official masks ``(micro-batches, B, L)`` argsort order, kept first: micro-batch ``k``
    is the one mmim seeds with ``mix_seed(seed, step, chunk, 2)`` for ``k = step * accum + chunk``.
    A generator seeded otherwise (the trainer's FLOP probe) gets the first mask."""

    def __init__(self, ids_shuffle: Tensor, len_keep: int, seed: int, accum: int) -> None:
        self.ids, self.keep = ids_shuffle.long(), len_keep
        self.index = {mix_seed(seed, k // accum, k % accum, 2): k for k in range(len(self.ids))}
        self.used: list[int] = []

    def __call__(self, layout: Any, generator: torch.Generator) -> StreamMask:
        k = self.index.get(generator.initial_seed())
        if k is not None:
            self.used.append(k)
        ids = self.ids[k if k is not None else 0]
        assert ids.shape[0] == layout.batch_size
        return StreamMask(ids[:, : self.keep].contiguous(), ids[:, self.keep:].contiguous())


class ReplayDraw:
    """A decoder's per-micro-batch draw (:meth:`~mmim.interfaces.Decoder.draw`), replayed: the
    official choice ``decoded[k]`` ``(B, Ld)`` for the micro-batch ``k`` that mmim seeds with
    ``mix_seed(seed, step, chunk, 2)`` (the generator the model passes to the masker and to
    ``draw``), e.g. VideoMAE v2's running-cell decoder mask. Another generator gets ``decoded[0]``."""

    def __init__(self, decoded: Tensor, seed: int, accum: int) -> None:
        self.decoded = decoded.long()
        self.index = {mix_seed(seed, k // accum, k % accum, 2): k for k in range(len(self.decoded))}
        self.used: list[int] = []

    def __call__(self, layout: Any, generator: torch.Generator, full: bool = False) -> Tensor:
        k = self.index.get(generator.initial_seed())
        if k is not None:
            self.used.append(k)
        decoded = self.decoded[k if k is not None else 0]
        assert decoded.shape[0] == layout.batch_size
        return decoded.to(layout.device)

class ReplayBudget:
    """In place of ``BudgetMasker.draw``: micro-batch ``k`` (seeded ``mix_seed(seed, step, chunk, 2)``,
    ``k = step * accum + chunk``) gets the official draw ``k`` -- ``split`` ``(micro-batches, B, S)``,
    ``noises`` per stream name ``(micro-batches, B, L_s)``, ``shuffle`` ``(micro-batches, B, N)``.
    The masker's own :meth:`~mmim.fusion.masking.BudgetMasker.from_noise` makes the mask; the
    visible ids it gives are kept in :attr:`visible`.

    The official draws are only a valid replay of mmim's masker when both draw from the same
    distribution: :attr:`alpha_error` is the largest difference between the Dirichlet concentration
    mmim's masker would sample from and the official one (``concentration`` ``(micro-batches, S)``),
    ``inf`` when mmim would first pick a random subset of streams (``sample_streams_uniformly``)."""

    def __init__(self, masker: BudgetMasker, split: Tensor, noises: dict[str, Tensor], shuffle: Tensor,
                 concentration: Tensor, seed: int, accum: int) -> None:
        self.masker, self.split, self.noises, self.shuffle = masker, split, noises, shuffle
        self.concentration = concentration
        self.index = {mix_seed(seed, k // accum, k % accum, 2): k for k in range(len(split))}
        self.used: list[int] = []
        self.visible: list[Tensor] = []
        self.alpha_error = 0.0
        self._from_noise = masker.from_noise
        masker.draw = self  # instance attributes: this masker only
        masker.from_noise = self.from_noise

    def __call__(self, batch: int, generator: torch.Generator) -> BudgetNoise:
        k = self.index.get(generator.initial_seed())
        self._replayed = k is not None
        if k is not None:
            self.used.append(k)
        k = k if k is not None else 0
        ours = self.masker.input_alpha.expand(batch, -1)
        theirs = self.concentration[k].expand(batch, -1)
        error = float("inf") if self.masker.config.sample_streams_uniformly or ours.shape != theirs.shape else \
            float((ours - theirs).abs().max())
        self.alpha_error = max(self.alpha_error, error)
        assert self.split[k].shape[0] == batch
        return BudgetNoise(self.split[k], [self.noises[n][k] for n in self.masker.inputs], self.shuffle[k])

    def from_noise(self, noise: BudgetNoise) -> Any:
        mask = self._from_noise(noise)
        if getattr(self, "_replayed", False):  # not the FLOP probe's
            self.visible.append(mask.visible.detach().clone())
        return mask


@dataclass
class Observed:
    """What mmim's loop did: per micro-batch loss; per optimizer step each group's lr and weight
    decay, and the gradient norm the optimizer stepped with; the groups' parameter names."""

    loss: list[float] = field(default_factory=list)
    lr: list[list[float]] = field(default_factory=list)
    weight_decay: list[list[float]] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    group_names: list[list[str]] = field(default_factory=list)
    final: dict[str, Tensor] = field(default_factory=dict)
    masks_used: list[int] = field(default_factory=list)
    #: with clipping, the total norm ``clip_grad_norm_`` returned (before clipping), per step
    norm_before_clip: list[float] = field(default_factory=list)

    def per_param(self, what: str) -> dict[str, Tensor]:
        """``{parameter name: (steps,)}`` lr or weight decay of the group holding it."""
        values = torch.tensor(getattr(self, what), dtype=torch.float64)
        return {n: values[:, g] for g, names in enumerate(self.group_names) for n in names}


def observe(trainer: Trainer) -> Observed:
    """Attach observers to a built trainer (they only read)."""
    seen = Observed()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    seen.group_names = [[names[id(p)] for p in g["params"]] for g in trainer.optimizer.param_groups]

    def pre_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        seen.lr.append([g["lr"] for g in optimizer.param_groups])
        seen.weight_decay.append([g["weight_decay"] for g in optimizer.param_groups])
        grads = [p.grad.detach() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.grad_norm.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads]))))

    trainer.optimizer.register_step_pre_hook(pre_step)
    task_step: Callable = trainer.task.step

    def step(net: Any, batch: Any, generator: torch.Generator) -> Any:
        loss, parts, n = task_step(net, batch, generator)
        if torch.is_grad_enabled():  # not the FLOP probe
            seen.loss.append(float(loss.detach()))
        return loss, parts, n

    trainer.task.step = step
    return seen


@contextlib.contextmanager
def observe_clipping(seen: Observed) -> Iterator[None]:
    """While open, record in ``seen.norm_before_clip`` the norm ``torch.nn.utils.clip_grad_norm_``
    returns (the one before clipping: what the official loops log); the function is the original."""
    original = torch.nn.utils.clip_grad_norm_

    def clip(*args: Any, **kwargs: Any) -> Tensor:
        norm = original(*args, **kwargs)
        seen.norm_before_clip.append(float(norm))
        return norm

    torch.nn.utils.clip_grad_norm_ = clip
    try:
        yield
    finally:
        torch.nn.utils.clip_grad_norm_ = original


class ReplayNumpyDraws:
    """Recorded numpy draws of every micro-batch (``kinds`` ``(micro, n)``: index into
    ``kind_names`` or -1, ``values`` ``(micro, n, 3)``: value and the two arguments), answered in
    order to whatever draws from it: set as ``Mixup.random`` (mmim's fine-tuning mixup/cutmix).

    Micro-batch ``k`` is the one whose step seeded numpy's global generator with
    ``mix_seed(seed, step, chunk, 4)`` (``k = step * accum + chunk``); it is recognised from that
    generator's state, which nothing draws from in between (MT19937's first key word is the seed,
    position 624: nothing drawn since). The trainer's FLOP probe (gradients off; numpy's state is
    whatever the last run left) and any other state are answered from micro-batch 0, not counted. A draw of another kind or with other arguments than the
    official one, or one more than it made, is counted in :attr:`mismatches` (and answered with
    the recorded value where the kind agrees, else from a fixed generator), so a replay that
    departs from the official draws fails a comparison instead of raising inside the loop.
    """

    def __init__(self, kinds: Tensor, values: Tensor, kind_names: list[str], seed: int, accum: int) -> None:
        self.kinds, self.values, self.names = kinds.long(), values.double(), kind_names
        self.index = {mix_seed(seed, k // accum, k % accum, 4) % 2**32: k for k in range(len(self.kinds))}
        self.used: list[int] = []
        self.mismatches: list[str] = []
        self.state_key: tuple | None = None
        self.current, self.cursor = 0, 0
        self.fallback = __import__("numpy").random.RandomState(0)

    def _next(self, kind: str, args: tuple) -> float:
        import numpy as np

        state = np.random.get_state()
        key = (int(state[1][0]), int(state[2])) if torch.is_grad_enabled() else (-1, -1)  # (-1, -1): the FLOP probe
        if key != self.state_key:  # a new micro-batch (or the probe)
            self.state_key, self.cursor = key, 0
            k = self.index.get(key[0]) if key[1] == 624 else None
            self.current = k if k is not None else 0
            if k is not None:
                self.used.append(k)
        k, j = self.current, self.cursor
        self.cursor += 1
        if j >= self.kinds.shape[1] or self.kinds[k, j] < 0:
            self.mismatches.append(f"micro-batch {k}: draw {j} ({kind}{args}) beyond the official draws")
            return getattr(self.fallback, kind)(*args)
        recorded = self.names[int(self.kinds[k, j])]
        value, a0, a1 = self.values[k, j].tolist()
        if recorded != kind:
            self.mismatches.append(f"micro-batch {k}: draw {j} is {kind}{args}, the official loop drew {recorded}")
            return getattr(self.fallback, kind)(*args)
        if kind != "rand" and (float(args[0]), float(args[1])) != (a0, a1):
            self.mismatches.append(f"micro-batch {k}: draw {j} is {kind}{args}, the official loop drew "
                                   f"{kind}({a0:g}, {a1:g})")
        return int(value) if kind == "randint" else value

    def rand(self) -> float:
        return self._next("rand", ())

    def beta(self, a: float, b: float) -> float:
        return self._next("beta", (a, b))

    def randint(self, low: int, high: int) -> int:
        return self._next("randint", (low, high))
