"""Speed options of a run, each resolved per device and precision (``None`` in a recipe means:
the choice measured best there; see docs/scaling.md).

- ``train.compile``: ``torch.compile`` the model's deterministic parts (tokenize, predict);
  default on CUDA (measured faster there), off on CPU (compile time dominates small runs).
- ``train.compile_mode``: torch.compile's mode; ``reduce-overhead`` captures CUDA graphs, which
  MAE-family steps allow because masks have fixed counts (static shapes).
- ``train.fused_attention``: timm's fused attention (``scaled_dot_product_attention``); default
  on, except bf16 on CPU, where its backward was measured ~0.5 s per ViT-B step slower than the
  plain attention (2.11 s against 1.53 s a step, batch 16, on an AMD EPYC with native bf16).
  On x86 CPUs without native bf16 (no avx512_bf16/amx_bf16) bf16 matmuls are emulated, 4x slower
  than fp32: the runtime warns (``mmim.engine.runtime.cpu_bf16_note``).
- ``train.tf32``: TF32 tensor-core matmuls for fp32 runs on CUDA; default on for CUDA fp32.
"""

from __future__ import annotations

import torch
from torch import nn

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def resolve_compile(option: bool | None, device: torch.device) -> bool:
    return device.type == "cuda" if option is None else option


def resolve_fused_attention(option: bool | None, device: torch.device, precision: str) -> bool:
    if option is not None:
        return option
    return not (device.type == "cpu" and precision == "bf16")


def resolve_tf32(option: bool | None, device: torch.device, precision: str) -> bool:
    if option is not None:
        return option
    return device.type == "cuda" and precision == "fp32"


def set_fused_attention(model: nn.Module, enabled: bool) -> int:
    """Switch every timm attention module of ``model`` to fused (SDPA) or plain attention; returns
    how many were set."""
    count = 0
    for module in model.modules():
        if hasattr(module, "fused_attn") and isinstance(module.fused_attn, bool):
            module.fused_attn = enabled
            count += 1
    return count


def apply_tf32(enabled: bool) -> None:
    """TF32 for CUDA matmuls and convolutions (process-wide, as torch's flags are)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
