"""Progress output: a tqdm bar on a terminal, a plain line per log interval otherwise."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """Shows step, loss, lr and samples/s."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True) -> None:
        self.enabled, self.total = enabled, total
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.last = initial

    def update(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        text = f"loss {record['loss']:.4f} lr {record['lr']:.2e} {record['samples_per_s']:.1f} samples/s"
        if "mfu" in record:
            text += f" MFU {format_percent(record['mfu'])}"
        elif "tflops_per_device" in record:
            text += f" {record['tflops_per_device']:.3g} TFLOP/s"
        if self.bar is not None:
            self.bar.update(step - self.last)
            self.bar.set_postfix_str(text)
        else:
            print(f"step {step}/{self.total} epoch {record['epoch']} {text}", file=sys.stderr, flush=True)
        self.last = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_percent(fraction: float) -> str:
    """A utilisation as a percentage with three significant digits (``0.0123%``, ``1.23%``, ``45.6%``),
    so the small defaults do not print ``0.0%``."""
    pct = 100.0 * fraction
    if pct == 0:
        return "0%"
    return f"{pct:.3g}%" if pct >= 1e-3 else f"{pct:.2e}%"
