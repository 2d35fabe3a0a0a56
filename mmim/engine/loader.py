"""The trainer's data side: micro-batches from any optimizer step on (map-style loader or shard
stream), and the FLOP probe that counts the model's FLOPs per sample on the first micro-batch."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch

from mmim.data.device import to_device
from mmim.data.loading import SKIPPED_KEY, make_loader


class LoaderMixin:
    """Part of :class:`~mmim.engine.trainer.Trainer`: where its micro-batches come from."""

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
