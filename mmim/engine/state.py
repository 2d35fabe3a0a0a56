"""The trainer's state: the run directory, checkpoints (file or sharded, with retries), resuming
(``--resume``, ``auto``, falling back past a corrupt checkpoint, on another process count)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmim.engine import checkpoint as ckpt
from mmim.engine.parallel import full_state, load_full_state
from mmim.engine.run import check_resumable, save_recipe, saved_recipe

log = logging.getLogger(__name__)


class StateMixin:
    """Part of :class:`~mmim.engine.trainer.Trainer`: its state on disk."""

    def _check_fault_settings(self) -> None:
        t = self.recipe.train
        if t.async_checkpoint and t.checkpoint_format != "sharded":
            raise ValueError("train.async_checkpoint needs train.checkpoint_format=sharded (a file checkpoint is "
                             "gathered and written by rank 0 in the step)")
        if t.save_retries < 0 or t.save_retry_wait < 0:
            raise ValueError(f"train.save_retries and train.save_retry_wait must be >= 0, got {t.save_retries} and "
                             f"{t.save_retry_wait}")

    def _prepare_run_dir(self, resume: bool | str) -> None:
        existing = ckpt.latest_checkpoint(self.run_dir)
        if resume == "auto":
            resume = existing is not None
            if self.rt.is_main:
                log.info("--resume auto: %s", f"resuming {self.run_dir}" if resume else
                         f"no complete checkpoint in {self.run_dir}: starting fresh")
        if self.rt.is_main:
            ckpt.remove_partial(self.run_dir)  # leftovers of a save that a crash interrupted
        if resume:
            self.check_recipe(saved_recipe(self.run_dir))
            if isinstance(resume, str) and not (Path(resume).is_dir() and not ckpt.is_sharded(resume)):
                path = Path(resume)  # one checkpoint, named: no fallback
                self._load(path)
            elif isinstance(resume, str):
                path, _ = ckpt.load_newest(resume, self._load)
            else:
                if existing is None:
                    raise FileNotFoundError(f"--resume: no checkpoint in {self.run_dir}")
                path, _ = ckpt.load_newest(self.run_dir, self._load)
            log.info("resumed from %s at step %d", path, self.step)
        elif existing is not None:
            from mmim.engine.task import PretrainTask

            key = "train.out_dir" if isinstance(self.task, PretrainTask) else "finetune.out_dir"
            raise FileExistsError(
                f"{self.run_dir} already holds checkpoints ({existing.name}); pass --resume to continue that run, "
                f"or give this one another directory: {key}={self.run_dir}_2"
            )
        if self.rt.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(self.recipe, self.run_dir)

    def state_dict(self, tensors: bool = True) -> dict[str, Any]:
        """The checkpoint contents, in the one-process format whatever the sharding.

        Under FSDP2 this is a collective (every rank calls it) and only rank 0 gets the state.
        With ``tensors=False`` the model and optimizer are left out (a sharded checkpoint writes
        them itself) and every rank gets the rest.
        """
        stream = self.stream.state() if self.stream else None  # a collective with several processes
        if not tensors:
            model_state, optim_state = None, None
        elif self.fsdp:
            model_state, optim_state = full_state(self.model, self.optimizer)
            if not self.rt.is_main:
                return {}
        else:
            model_state, optim_state = self.model.state_dict(), self.optimizer.state_dict()
        return {
            **({"model": model_state, "optimizer": optim_state} if tensors else {}),
            "scheduler": {"step": self.step, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                          "peak_lr": self.peak_lr, "effective_batch": self.effective_batch,
                          "world_size": self.rt.world_size},
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

    def _load(self, path: Path) -> None:
        """Load a checkpoint file or sharded directory (:class:`~mmim.engine.checkpoint.CheckpointError`
        when it cannot be read, so that :func:`~mmim.engine.checkpoint.load_newest` tries an older one)."""
        if ckpt.is_sharded(path):
            from mmim.engine.sharded import load_into, read_trainer_state

            self._check_resume_shape(path, read_trainer_state(path, "cpu"))
            self.load_state(load_into(path, self.model, self.optimizer, self.rt.device), tensors=False)
        else:
            state = ckpt.read_file(path, map_location=self.rt.device)
            ckpt.check_keys(path, state)
            self._check_resume_shape(path, state)
            self.load_state(state)

    def _check_resume_shape(self, path: Path, state: dict[str, Any]) -> None:
        """A checkpoint resumes on another process count only with the same effective batch (then every
        optimizer step sees the same samples); say how to get it when it differs."""
        sched, data = state.get("scheduler", {}), state.get("data", {})
        step = int(state.get("step", 0))
        saved = sched.get("effective_batch") or (data.get("samples_done", 0) // step if step else None)
        if saved and saved != self.effective_batch:
            world = sched.get("world_size", "?")
            raise ValueError(
                f"{path}: written with an effective batch of {saved} samples per step ({world} process{'es' if world != 1 else ''}); this run has "
                f"{self.effective_batch} ({self.settings.batch_size} x {self.accum} accumulation x "
                f"{self.rt.world_size} processes). Set train.effective_batch_size={saved} (a multiple of the batch size "
                f"x processes) so that the data position and the schedule carry over"
            )
        if sched.get("total_steps") not in (None, self.total_steps):
            raise ValueError(f"{path}: the schedule has {sched['total_steps']} steps, this run {self.total_steps} "
                             f"({self.steps_per_epoch} steps per epoch); resume with the data layout that wrote it")

    def load_state(self, state: dict[str, Any], tensors: bool = True) -> None:
        if not tensors:
            pass
        elif self.fsdp:
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
        """Write the checkpoint of the current step (a collective): ``ckpt-<step>.pt`` from rank 0, or a
        sharded ``ckpt-<step>/`` written by every rank (in the background with ``train.async_checkpoint``).

        A failed write (e.g. a full disk) leaves nothing under the checkpoint's name and the previous
        checkpoints intact; it is retried ``train.save_retries`` times, ``train.save_retry_wait``
        seconds apart, then :class:`~mmim.engine.checkpoint.CheckpointSaveError` stops every rank.
        """
        t = self.recipe.train
        state = self.state_dict(tensors=self.sharded is None)  # a collective under FSDP2 and with shards
        for attempt in range(t.save_retries + 1):
            try:
                path = self._save_once(state)
                break
            except ckpt.CheckpointSaveError as err:
                last = ckpt.latest_checkpoint(self.run_dir)
                if attempt == t.save_retries:
                    raise ckpt.CheckpointSaveError(
                        f"{err} (rank {self.rt.rank}, step {self.step}); stopping after {attempt + 1} "
                        f"tr{'ies' if attempt else 'y'} (train.save_retries={t.save_retries}); the last complete "
                        f"checkpoint is {last or 'none'}") from err
                log.warning("%s (step %d); retrying in %gs (%d of train.save_retries=%d); the last complete "
                            "checkpoint is %s", err, self.step, t.save_retry_wait, attempt + 1, t.save_retries, last)
                time.sleep(t.save_retry_wait)
        if self.rt.is_main:
            ckpt.prune_checkpoints(self.run_dir, t.keep_checkpoints)
        return path

    def _save_once(self, state: dict[str, Any]) -> Path | None:
        if self.sharded is not None:
            return self.sharded.save(self.model, self.optimizer, state, self.step)
        path, error = None, None
        if self.rt.is_main:
            try:
                path = ckpt.save_atomic(state, self.run_dir / f"ckpt-{self.step:08d}.pt")
            except ckpt.CheckpointSaveError as err:
                error = err
        if self.rt.distributed:  # every rank learns whether rank 0's write failed
            failed = torch.tensor([float(error is not None)], device=self.rt.device)
            torch.distributed.all_reduce(failed)
            if failed.item() and error is None:
                error = ckpt.CheckpointSaveError(f"{self.run_dir / f'ckpt-{self.step:08d}.pt'}: rank 0 could not "
                                                 "write the checkpoint (its log names the cause)")
        if error is not None:
            raise error
        return path
