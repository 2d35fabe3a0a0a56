"""One training loop for every method and modality.

Each optimizer step ``s`` draws its masks from ``Generator(mix_seed(seed, s, micro))`` and
seeds the global RNG (drop-path) the same way, and the data order is a pure function of
``(seed, epoch)``; so a resumed run repeats the uninterrupted one exactly.

The class is assembled from one module per concept: :mod:`mmim.engine.loader` (micro-batches and
the FLOP probe), :mod:`mmim.engine.step` (the optimizer step, the finiteness check, collective
timeouts) and :mod:`mmim.engine.state` (run directory, checkpoints, resuming); this module builds a
trainer and runs the loop (:meth:`Trainer.fit`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from mmim.config.recipe import Recipe
from mmim.data.device import device_transforms
from mmim.data.loading import ResumableSampler
from mmim.data.skips import SkipBudget
from mmim.engine.flops import FlopCounter, peak_tflops
from mmim.engine.loader import LoaderMixin
from mmim.engine.metrics import MetricsWriter
from mmim.engine.optim import build_adamw
from mmim.engine.parallel import shard_fsdp2
from mmim.engine.progress import Progress
from mmim.engine.run import run_dir_for
from mmim.engine.runtime import Runtime, setup_runtime
from mmim.engine.schedule import build_schedule, scaled_lr
from mmim.engine.speed import apply_tf32, resolve_compile, resolve_fused_attention, resolve_tf32, set_fused_attention
from mmim.engine.state import StateMixin
from mmim.engine.step import CollectiveTimeoutError, NonFiniteLossError, StepMixin
from mmim.engine.task import PretrainTask, Task

__all__ = ["CollectiveTimeoutError", "NonFiniteLossError", "Trainer"]
log = logging.getLogger(__name__)


class Trainer(StateMixin, LoaderMixin, StepMixin):
    """Trains ``recipe``'s model on its dataset; see :meth:`fit`.

    Args:
        recipe: a validated recipe.
        resume: ``True`` to continue from the newest readable checkpoint of the run directory (a
            corrupt newest one is skipped with a warning), or a checkpoint path; ``"auto"`` to
            continue when the run directory holds a complete checkpoint and start fresh when it
            holds none (what a torchrun restart needs); ``False`` to start fresh (the run directory
            must hold no checkpoint).
    """

    def __init__(self, recipe: Recipe, resume: bool | str = False, runtime: Runtime | None = None,
                 task: Task | None = None, run_dir: str | Path | None = None) -> None:
        self.recipe = recipe
        self.rt = runtime or setup_runtime(recipe.train.device, recipe.train.precision, recipe.train.threads,
                                           recipe.train.collective_timeout)
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
        self.schedule = build_schedule(cfg, self.total_steps, self.warmup_steps, self.peak_lr, self.effective_batch,
                                       self.steps_per_epoch)
        self.optimizer = build_adamw(self.task.param_groups(), self.peak_lr, cfg.betas, cfg.eps, cfg.fused, self.rt.device)
        # the groups a weight-decay schedule sets: those built decayed (fixed before any resume)
        self.decayed_groups = [g["weight_decay"] > 0 for g in self.optimizer.param_groups]
        self.scaler = torch.amp.GradScaler("cuda") if self.rt.precision == "fp16" else None
        self.step = 0
        self.skipped = 0
        # since the last finiteness check: was any loss non-finite, and the first such value (on the device)
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.rt.device)
        self._bad_loss = torch.zeros((), device=self.rt.device)
        self.flops = FlopCounter()
        self.peak_tflops = peak_tflops(self.rt.device, self.rt.precision)
        self._check_fault_settings()
        self.sharded = None
        if t.checkpoint_format == "sharded":
            from mmim.engine.sharded import ShardedSaver
            self.sharded = ShardedSaver(self.run_dir, self.rt.is_main, t.async_checkpoint)
        self._prepare_run_dir(resume)
        self.ddp = DistributedDataParallel(self.model) if self.rt.distributed and not self.fsdp else None

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
                if self.sharded is not None:
                    self.sharded.poll()  # rename a finished background checkpoint
                try:
                    loss, samples, parts, epoch = self._train_step(batches)
                except RuntimeError as err:
                    self._raise_if_timeout(err)
                    raise
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
            if self.sharded is not None:
                self.sharded.wait()
        except RuntimeError as err:
            self._raise_if_timeout(err)
            raise
        finally:
            progress.close()
            metrics.close()
        elapsed = time.perf_counter() - start_time
        return {"run_dir": str(self.run_dir), "steps": self.step, "total_steps": self.total_steps,
                "final_loss": last_loss, "samples_per_s": total_samples / max(elapsed, 1e-9),
                "skipped": self.skipped, "seconds": elapsed}
