"""One training loop for every method and modality.

Each optimizer step ``s`` draws its masks from ``Generator(mix_seed(seed, s, micro))`` and
seeds the global RNG (drop-path) the same way, and the data order is a pure function of
``(seed, epoch)``; so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmim.config.recipe import Recipe
from mmim.data.device import device_transforms, to_device
from mmim.data.loading import SKIPPED_KEY, ResumableSampler, make_loader, mix_seed
from mmim.data.skips import SKIPPED_WHERE_KEY, SkipBudget
from mmim.engine import checkpoint as ckpt
from mmim.engine.flops import FlopCounter, peak_tflops
from mmim.engine.metrics import MetricsWriter
from mmim.engine.optim import build_adamw
from mmim.engine.parallel import full_state, load_full_state, set_micro_batch, shard_fsdp2
from mmim.engine.progress import Progress
from mmim.engine.run import check_resumable, run_dir_for, save_recipe, saved_recipe
from mmim.engine.runtime import Runtime, setup_runtime
from mmim.engine.schedule import lr_at, scaled_lr
from mmim.engine.speed import apply_tf32, resolve_compile, resolve_fused_attention, resolve_tf32, set_fused_attention
from mmim.engine.task import PretrainTask, Task

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite (on any process); every process stops and the run keeps its
    last good checkpoint."""


class Trainer:
    """Trains ``recipe``'s model on its dataset; see :meth:`fit`.

    Args:
        recipe: a validated recipe.
        resume: ``True`` to continue from the newest checkpoint of the run directory, or a
            checkpoint path; ``False`` to start fresh (the run directory must hold no checkpoint).
    """

    def __init__(self, recipe: Recipe, resume: bool | str = False, runtime: Runtime | None = None,
                 task: Task | None = None, run_dir: str | Path | None = None) -> None:
        self.recipe = recipe
        self.rt = runtime or setup_runtime(recipe.train.device, recipe.train.precision, recipe.train.threads)
        self.run_dir = Path(run_dir) if run_dir is not None else run_dir_for(recipe)
        torch.manual_seed(recipe.seed)
        self.task: Task = task or PretrainTask(recipe)
        self.settings = cfg = self.task.settings
        self.model = self.task.module.to(self.rt.device)
        t = recipe.train
        self.fused_attention = resolve_fused_attention(t.fused_attention, self.rt.device, self.rt.precision)
        set_fused_attention(self.model, self.fused_attention)
        self.tf32 = resolve_tf32(t.tf32, self.rt.device, self.rt.precision)
        apply_tf32(self.tf32)
        self.compiled = resolve_compile(t.compile, self.rt.device)
        if self.compiled:
            self.model.compile(mode=t.compile_mode)
        self.fsdp = recipe.train.distributed == "fsdp2"
        if self.fsdp:
            shard_fsdp2(self.model, self.rt)  # before the optimizer: sharding replaces the parameters
        self.dataset = self.task.dataset
        self.device_transforms = device_transforms(self.dataset)  # e.g. uint8 pixels normalised on the device
        world = self.rt.world_size
        self.effective_batch = cfg.effective_batch_size or cfg.batch_size * world
        if self.effective_batch % (cfg.batch_size * world):
            raise ValueError(
                f"effective batch size {self.effective_batch} is not a multiple of the per-process batch size "
                f"({cfg.batch_size}) x processes ({world})"
            )
        self.accum = self.effective_batch // (cfg.batch_size * world)
        self.stream = None  # training from shards (data.shards, finetune.train_shards) instead of the sampler
        if cfg.shards:
            from mmim.data.stream import ShardTrainingData
            self.stream = ShardTrainingData.for_loop(cfg, self.dataset, recipe.seed, self.rt.rank, world, self.accum,
                                                     self.pin_memory)
            self.steps_per_epoch = self.stream.steps_per_epoch
        else:
            self.sampler = ResumableSampler(len(self.dataset), recipe.seed, cfg.batch_size, self.accum, self.rt.rank,
                                            world, weights=cfg.sample_weights, epoch_samples=cfg.epoch_samples,
                                            replacement=cfg.replacement)
            self.steps_per_epoch = self.sampler.steps_per_epoch
        self.skip_budget = SkipBudget(recipe.data.max_skip_fraction)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the dataset has {self.stream.shards.num_samples if self.stream else len(self.dataset)} samples, "
                f"fewer than one optimizer step needs "
                f"({self.effective_batch}); lower the batch size or the effective batch size"
            )
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.peak_lr = cfg.lr if cfg.lr is not None else scaled_lr(cfg.base_lr, self.effective_batch)
        self.optimizer = build_adamw(self.task.param_groups(), self.peak_lr, cfg.betas, cfg.eps, cfg.fused, self.rt.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.rt.precision == "fp16" else None
        self.step = 0
        self.skipped = 0
        # since the last finiteness check: was any loss non-finite, and the first such value (on the device)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.rt.device)
        self._bad_loss = torch.zeros((), device=self.rt.device)
        self.flops = FlopCounter()
        self.peak_tflops = peak_tflops(self.rt.device, self.rt.precision)
        self._prepare_run_dir(resume)
        self.ddp = DistributedDataParallel(self.model) if self.rt.distributed and not self.fsdp else None

    # ------------------------------------------------------------------ state
    def _prepare_run_dir(self, resume: bool | str) -> None:
        existing = ckpt.latest_checkpoint(self.run_dir) if self.run_dir.exists() else None
        if resume:
            path = Path(resume) if isinstance(resume, str) else existing
            if path is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.run_dir}")
            self.check_recipe(saved_recipe(self.run_dir))
            self.load_state(ckpt.load_checkpoint(path, map_location=self.rt.device))
            log.info("resumed from %s at step %d", path, self.step)
        elif existing is not None:
            key = "train.out_dir" if isinstance(self.task, PretrainTask) else "finetune.out_dir"
            raise FileExistsError(
                f"{self.run_dir} already holds checkpoints ({existing.name}); pass --resume to continue that run, "
                f"or give this one another directory: {key}={self.run_dir}_2"
            )
        if self.rt.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(self.recipe, self.run_dir)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint contents, in the one-process format whatever the sharding.

        Under FSDP2 this is a collective (every rank calls it) and only rank 0 gets the state.
        """
        stream = self.stream.state() if self.stream else None  # a collective with several processes
        if self.fsdp:
            model_state, optim_state = full_state(self.model, self.optimizer)
            if not self.rt.is_main:
                return {}
        else:
            model_state, optim_state = self.model.state_dict(), self.optimizer.state_dict()
        return {
            "model": model_state,
            "optimizer": optim_state,
            "scheduler": {"step": self.step, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                          "peak_lr": self.peak_lr},
            "scaler": self.scaler.state_dict() if self.scaler else {},
            "rng": ckpt.rng_state(),
            "data": {"samples_done": self.step * self.effective_batch, "skipped": self.skipped,
                     **({"stream": stream} if stream else {})},
            "step": self.step,
        }

    def unsharded_model(self) -> nn.Module | None:
        """The trained model as a plain module for evaluation on rank 0 (``None`` on other ranks).

        Without FSDP2 this is :attr:`model`. Under FSDP2 it is a collective (call it on every
        rank): the full weights are gathered and loaded into a fresh module from the task's
        ``build_module()``, so rank 0 can evaluate alone without waiting on the other ranks.
        """
        if not self.fsdp:
            return self.model
        model_state, _ = full_state(self.model, self.optimizer)
        if not self.rt.is_main:
            return None
        build = getattr(self.task, "build_module", None)
        if build is None:
            raise NotImplementedError(f"{type(self.task).__name__} has no build_module(): cannot gather an FSDP2 model "
                                      "for evaluation; evaluate from the final checkpoint instead")
        fresh = build()
        fresh.load_state_dict(model_state)
        return fresh.to(self.rt.device).train(self.model.training)

    def check_recipe(self, saved: dict[str, Any]) -> None:
        """Raise :class:`~mmim.engine.run.RecipeMismatchError` naming the fields in which the run's
        saved recipe differs from this one (beyond the engine's and the task's resumable fields)."""
        check_resumable(saved, self.recipe, tuple(getattr(self.task, "resumable_changes", ())))

    def load_state(self, state: dict[str, Any]) -> None:
        if self.fsdp:
            load_full_state(self.model, self.optimizer, state["model"], state["optimizer"])
        else:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.skipped = int(state["data"].get("skipped", 0))
        if self.stream:
            self.stream.load_state(state["data"].get("stream"))

    def save(self) -> Path | None:
        path = None
        state = self.state_dict()  # a collective under FSDP2
        if self.rt.is_main:
            path = ckpt.save_atomic(state, self.run_dir / f"ckpt-{self.step:08d}.pt")
            ckpt.prune_checkpoints(self.run_dir, self.recipe.train.keep_checkpoints)
        if self.rt.distributed:
            torch.distributed.barrier()
        return path

    # ------------------------------------------------------------------ loop
    @property
    def pin_memory(self) -> bool:
        """``data.pin_memory``, or on for CUDA when not set."""
        pin = self.settings.pin_memory
        return self.rt.device.type == "cuda" if pin is None else bool(pin)

    def _micro_batches(self, start_step: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """Micro-batches from optimizer step ``start_step`` on, with their epoch.

        With persistent workers one loader serves the whole run: the sampler (iterated in this
        process) is moved to the next epoch before each pass, so the workers, their imports and
        open files are kept; otherwise each epoch starts fresh workers.
        """
        data = self.settings
        if self.stream:
            yield from self.stream.micro_batches(start_step)
            return
        epoch, offset = divmod(start_step, self.steps_per_epoch)
        loader = None
        while True:
            self.sampler.set_epoch(epoch, offset)
            if loader is None or not (data.persistent_workers and data.num_workers > 0):
                loader = make_loader(self.dataset, self.sampler, data.batch_size, data.num_workers, data.skip_corrupt,
                                     pin_memory=self.pin_memory, persistent_workers=data.persistent_workers,
                                     prefetch_factor=data.prefetch_factor)
            for batch in loader:
                yield epoch, batch
            epoch, offset = epoch + 1, 0

    def _train_step(self, batches: Iterator[tuple[int, dict[str, Any]]]) -> tuple[torch.Tensor, int, dict[str, torch.Tensor], int]:
        """One optimizer step over ``accum`` micro-batches -> (loss, samples, parts, epoch).

        The loss and its parts stay on the device (no host synchronisation in a step): the loop
        reads them, and checks that they are finite, on logging and checkpoint steps only.
        """
        net: nn.Module = self.ddp or self.model
        seed, lr = self.recipe.seed, lr_at(self.step, self.total_steps, self.warmup_steps, self.peak_lr,
                                          self.settings.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        total = torch.zeros((), device=self.rt.device)
        samples, parts, epoch = 0, {}, 0
        for micro in range(self.accum):
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
                scaled = loss / self.accum
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
        self.step += 1
        after = getattr(self.task, "after_step", None)
        if after is not None:
            parts.update(after(self.step / self.total_steps))
        return total, samples, parts, epoch

    def _count_flops(self, batches: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Count the model's FLOPs per sample on the first micro-batch, outside the training step:
        one eager forward without gradients under torch's FLOP counter (a dispatch mode that would
        keep a compiled step from compiling), buffers (BatchNorm statistics) restored afterwards,
        so the count leaves no trace in training. Returns the micro-batches, the first one kept."""
        if self.flops.per_sample is not None:
            return batches
        first = next(batches)
        batches = itertools.chain([first], batches)
        probe = {k: v for k, v in first[1].items() if k != SKIPPED_KEY}
        if not probe:
            return batches
        saved = [b.detach().clone() for b in self.model.buffers()]
        with torch.no_grad(), self.rt.autocast(), torch.compiler.set_stance("force_eager"):
            with self.flops:
                _, _, n = self.task.step(self.model, to_device(probe, self.rt.device, self.device_transforms), torch.Generator().manual_seed(0))
                self.flops.done(n)
        with torch.no_grad():
            for b, v in zip(self.model.buffers(), saved):
                b.copy_(v)
        return batches

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

    def fit(self) -> dict[str, Any]:
        """Train to the end of the schedule (or ``schedule.max_steps``) and return a summary."""
        cfg, max_steps = self.recipe.train, self.settings.max_steps
        stop = min(self.total_steps, max_steps) if max_steps is not None else self.total_steps
        metrics = MetricsWriter.for_recipe(self.recipe, self.run_dir, enabled=self.rt.is_main)
        progress = Progress(stop, self.step, enabled=self.rt.is_main and cfg.progress)
        batches = self._micro_batches(self.step)
        self.model.train()
        self._checked_step = self.step
        batches = self._count_flops(batches)
        window_loss, window_parts, window_samples, window_start = 0.0, {}, 0, time.perf_counter()
        window_steps, start_time, total_samples, last_loss = 0, time.perf_counter(), 0, math.nan
        try:
            while self.step < stop:
                loss, samples, parts, epoch = self._train_step(batches)
                window_loss, window_samples, window_steps = window_loss + loss, window_samples + samples, window_steps + 1
                for k, v in parts.items():
                    window_parts[k] = window_parts.get(k, 0.0) + v
                total_samples += samples
                if self.step % cfg.log_every == 0 or self.step == stop:
                    mean_loss, mean_parts = self._read(window_loss, window_parts, window_steps, epoch)
                    last_loss = mean_loss
                    elapsed = time.perf_counter() - window_start
                    rate = window_samples / max(elapsed, 1e-9)
                    record = {"epoch": epoch, "loss": mean_loss, "samples_per_s": rate, "skipped": self.skipped,
                              **mean_parts, "lr": self.optimizer.param_groups[0]["lr"] /
                              self.optimizer.param_groups[0].get("lr_scale", 1.0)}
                    if self.flops.per_sample:
                        tflops = self.flops.per_sample * rate / 1e12 / self.rt.world_size
                        record["tflops_per_device"] = tflops
                        if self.peak_tflops:
                            record["mfu"] = tflops / self.peak_tflops
                    metrics.write(record, self.step)
                    progress.update(self.step, record)
                    window_loss, window_parts, window_samples, window_steps = 0.0, {}, 0, 0
                    window_start = time.perf_counter()
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or end_of_epoch or self.step == stop:
                    self._check_finite(epoch)
                    self.save()
        finally:
            progress.close()
            metrics.close()
        elapsed = time.perf_counter() - start_time
        return {"run_dir": str(self.run_dir), "steps": self.step, "total_steps": self.total_steps,
                "final_loss": last_loss, "samples_per_s": total_samples / max(elapsed, 1e-9),
                "skipped": self.skipped, "seconds": elapsed}
