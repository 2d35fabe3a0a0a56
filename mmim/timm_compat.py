"""The one place where mmim imports timm and transformers (and through them torchvision).

Some PyPI torchvision wheels ship no kernels for the installed torch (for example a CPU-only
torch 2.13 next to torchvision 0.28, pytorch/vision#9085): ``import torchvision`` then fails with
``RuntimeError: operator torchvision::nms does not exist`` and takes ``import timm`` down with it.
mmim never calls torchvision's detection operators, so when (and only when) that failure is seen,
the missing operator *schemas* are declared without kernels and the import is retried. A machine
with a matching torchvision build never reaches the workaround.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

_MISSING_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": (
        "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
        "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"
    ),
}
_library: torch.library.Library | None = None
workaround_applied = False


def _declare_missing_schemas() -> None:
    global _library, workaround_applied
    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")  # kept alive for the process
        for name, schema in _MISSING_OPS.items():
            if not hasattr(torch.ops.torchvision, name):
                _library.define(schema)
    workaround_applied = True


def import_torchvision() -> ModuleType:
    """Import torchvision, declaring the missing operator schemas only if the import needs it."""
    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _declare_missing_schemas()
        import torchvision
    return torchvision


def import_timm() -> ModuleType:
    """Import timm after making sure torchvision imports (see the module docstring)."""
    if "timm" not in sys.modules:
        import_torchvision()
    import timm

    return timm


def import_transformers() -> ModuleType:
    """Import Hugging Face ``transformers`` (the optional extra ``transformers``) after making sure
    torchvision imports: its image utilities import torchvision when it is installed.

    Raises:
        ModuleNotFoundError: ``transformers`` is not installed (``name`` is ``"transformers"``, so
            :func:`mmim.extras.missing_module_hint` names the extra).
    """
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise ModuleNotFoundError("No module named 'transformers'", name="transformers")
    if importlib.util.find_spec("torchvision") is not None and "torchvision" not in sys.modules:
        import_torchvision()
    import transformers

    return transformers
