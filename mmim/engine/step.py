"""The trainer's optimizer step: micro-batches, accumulation, seeds, the finiteness check shared by all
processes, and a collective's timeout turned into an error naming the hung rank."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from mmim.data.device import to_device
from mmim.data.loading import SKIPPED_KEY, mix_seed
from mmim.data.skips import SKIPPED_WHERE_KEY
from mmim.engine import checkpoint as ckpt
from mmim.engine.parallel import set_micro_batch


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite (on any process); every process stops and the run keeps its
    last good checkpoint."""


class CollectiveTimeoutError(RuntimeError):
    """A collective waited longer than ``train.collective_timeout`` for another process (hung, or
    much slower); the message names the step and the processes that are behind."""


class StepMixin:
    """Part of :class:`~mmim.engine.trainer.Trainer`: one optimizer step and what it checks."""

    def _train_step(self, batches: Iterator[tuple[int, dict[str, Any]]]) -> tuple[torch.Tensor, int, dict[str, torch.Tensor], int]:
        """One optimizer step over ``accum`` micro-batches -> (loss, samples, parts, epoch).

        The loss and its parts stay on the device (no host synchronisation in a step): the loop
        reads them, and checks that they are finite, on logging and checkpoint steps only.
        """
        net: nn.Module = self.ddp or self.model
        seed = self.recipe.seed
        self.schedule.apply(self.step, self.optimizer.param_groups, self.decayed_groups)
        total = torch.zeros((), device=self.rt.device)
        samples, parts, epoch = 0, {}, 0
        for micro in range(self.accum):
            self._heartbeat(0)
            epoch, batch = next(batches)
            skipped = int(batch.pop(SKIPPED_KEY, 0))
            self.skipped += skipped
            self.skip_budget.update(self.settings.batch_size, skipped, batch.pop(SKIPPED_WHERE_KEY, None))
            if not batch:
                continue
            batch = to_device(batch, self.rt.device, self.device_transforms)
            # seeds depend on the micro-batch's place in the step, not on how the step is split
            chunk = micro * self.rt.world_size + self.rt.rank
            torch.manual_seed(mix_seed(seed, self.step, chunk, 3))
            np.random.seed(mix_seed(seed, self.step, chunk, 4) % 2**32)  # e.g. timm's Mixup draws from numpy
            gen = torch.Generator().manual_seed(mix_seed(seed, self.step, chunk, 2))
            no_sync = self.ddp is not None and micro < self.accum - 1
            if self.fsdp:
                set_micro_batch(self.model, last=micro == self.accum - 1)
            with self.ddp.no_sync() if no_sync else contextlib.nullcontext():
                with self.rt.autocast():
                    loss, step_parts, n = self.task.step(net, batch, gen)
                self._heartbeat(1)
                # "sum": each micro-batch's gradient added as is (Point-MAE's step_per_update)
                scaled = loss if self.recipe.train.grad_accumulation == "sum" else loss / self.accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            self._bad_loss = torch.where(self._nonfinite, self._bad_loss, loss.detach().float())
            self._nonfinite = self._nonfinite | ~torch.isfinite(loss.detach())
            total = total + loss.detach() / self.accum
            samples += n * self.rt.world_size
            for k, v in step_parts.items():
                parts[k] = parts.get(k, 0.0) + v / self.accum
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._heartbeat(2)
        self.step += 1
        after = getattr(self.task, "after_step", None)
        if after is not None:
            parts.update(after(self.step / self.total_steps))
        return total, samples, parts, epoch

    def _read(self, loss: torch.Tensor, parts: dict[str, Any], steps: int, epoch: int) -> tuple[float, dict[str, float]]:
        """Host values of a logging window's summed loss and parts, averaged over ``steps`` and over
        processes (as one process would see the whole batch); stops the run on a non-finite loss."""
        self._check_finite(epoch)
        names = sorted(parts)
        values = torch.stack([torch.as_tensor(loss, dtype=torch.float64, device=self.rt.device)] +
                             [torch.as_tensor(parts[k], dtype=torch.float64, device=self.rt.device) for k in names])
        if self.rt.distributed:
            torch.distributed.all_reduce(values)
            values = values / self.rt.world_size
        total, *rest = (values / max(steps, 1)).tolist()
        return total, dict(zip(names, rest))

    PHASES = ("loading data / forward", "backward (gradient sync)", "after the step (logging, checkpoint)")

    def _heartbeat(self, phase: int) -> None:
        """Record in the process group's store where this rank is (step, :attr:`PHASES` index), so that a
        collective that times out can name the ranks that are behind (with ``train.collective_timeout``)."""
        if self.rt.distributed and self.recipe.train.collective_timeout:
            store = torch.distributed.distributed_c10d._get_default_store()
            store.set(f"mmim/where/{self.rt.rank}", str((self.step + 1) * len(self.PHASES) + phase))

    def _raise_if_timeout(self, err: RuntimeError) -> None:
        """Turn a collective's timeout into :class:`CollectiveTimeoutError` naming the step and the hung ranks.

        A rank whose collective timed out says so in the process group's store and waits a moment
        for the others to do the same: the ranks that do not are the ones that never reached the
        collective (hung, or much slower). Their last position comes from :meth:`_heartbeat`.
        """
        text = str(err).lower()
        if isinstance(err, CollectiveTimeoutError) or not self.rt.distributed or \
                not ("timed out" in text or "timeout" in text):
            return
        here, hung = f"after step {self.step}", ""
        n = len(self.PHASES)
        say = lambda w: f"step {w // n}, {self.PHASES[w % n]}" if w else "before its first step"  # noqa: E731
        try:
            store = torch.distributed.distributed_c10d._get_default_store()
            where = {}
            for r in range(self.rt.world_size):
                key = f"mmim/where/{r}"
                where[r] = int(store.get(key)) if store.check([key]) else 0
            here = say(where[self.rt.rank])
            store.set(f"mmim/timed_out/{self.rt.rank}", "1")
            others = [f"mmim/timed_out/{r}" for r in range(self.rt.world_size) if r != self.rt.rank]
            deadline = time.monotonic() + min(5.0, self.recipe.train.collective_timeout or 5.0)
            while others and time.monotonic() < deadline:
                others = [k for k in others if not store.check([k])]
                time.sleep(0.05)
            late = [int(k.rsplit("/", 1)[1]) for k in others]
            hung = (f"; rank {', '.join(map(str, late))} never reached it (hung or much slower; last seen at "
                    f"{'; '.join(say(where[r]) for r in late)})" if late else
                    "; every rank timed out waiting (a network problem, or ranks in different collectives)")
        except Exception:  # noqa: BLE001 - the store may be gone with the hung process's node
            pass
        limit = self.recipe.train.collective_timeout
        raise CollectiveTimeoutError(
            f"a collective timed out on rank {self.rt.rank} of {self.rt.world_size} at {here}{hung} "
            f"(train.collective_timeout={f'{limit:g}s' if limit else 'not set: torch default'}): {err}"
        ) from err

    def _check_finite(self, epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` on every process when the loss of any process was not
        finite since the last check (logging and checkpoint steps; a checkpoint is only written
        after a passing check, so the last one on disk is good).

        Every process checks at the same steps, so none waits in a collective for one that stopped.
        """
        bad = torch.zeros(self.rt.world_size, device=self.rt.device)
        bad[self.rt.rank] = self._nonfinite.float()
        if self.rt.distributed:
            torch.distributed.all_reduce(bad)
        ranks = bad.nonzero().flatten().tolist()
        if ranks:
            last = ckpt.latest_checkpoint(self.run_dir) if self.run_dir.exists() else None
            where = f" on process {', '.join(map(str, ranks))} of {self.rt.world_size}" if self.rt.distributed else ""
            value = f" ({self._bad_loss.item()})" if self.rt.rank in ranks else ""
            steps = f"at step {self.step}" if self.step == self._checked_step + 1 else \
                f"in steps {self._checked_step + 1}..{self.step}"
            raise NonFiniteLossError(
                f"non-finite loss{value}{where} {steps} (epoch {epoch}); last good checkpoint: {last or 'none yet'}"
            )
        self._checked_step = self.step
