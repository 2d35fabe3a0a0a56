"""Model FLOPs per sample (torch.utils.flop_counter) and utilisation against a device's peak."""

from __future__ import annotations

import torch

# Dense peak TFLOP/s by (device name fragment, precision); bf16/fp16 tensor cores, fp32 = TF32 off.
PEAK_TFLOPS = {
    ("H200", "bf16"): 989.0, ("H100", "bf16"): 989.0, ("A100", "bf16"): 312.0, ("L40S", "bf16"): 362.0,
    ("H200", "fp32"): 67.0, ("H100", "fp32"): 67.0, ("A100", "fp32"): 19.5, ("L40S", "fp32"): 91.6,
}


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for ``precision`` if known (CUDA only), else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = "bf16" if precision in ("bf16", "fp16") else "fp32"
    return next((v for (frag, p), v in PEAK_TFLOPS.items() if frag in name and p == key), None)


class FlopCounter:
    """Counts the FLOPs of one forward pass; ``per_sample`` (forward + backward) is then fixed for the run.

    Model FLOPs per training sample are taken as 3x the forward's (the backward costs twice the
    forward), the usual convention of MFU: recomputation (activation checkpointing) is not counted.
    """

    def __init__(self) -> None:
        self.per_sample: float | None = None
        self._mode = None

    def __enter__(self) -> FlopCounter:
        from torch.utils.flop_counter import FlopCounterMode

        self._mode = FlopCounterMode(display=False)
        self._mode.__enter__()
        return self

    def done(self, samples: int) -> None:
        """The counted forward covered ``samples`` samples."""
        self._mode.__exit__(None, None, None)
        self.per_sample = 3.0 * self._mode.get_total_flops() / max(samples, 1)
        self._mode = None

    def __exit__(self, *exc: object) -> None:
        if self._mode is not None:  # an exception before done()
            self._mode.__exit__(None, None, None)
            self._mode = None
