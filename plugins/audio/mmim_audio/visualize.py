"""``mmim visualize`` for spectrograms: PNGs of original, masked, reconstruction and reconstruction + visible.

Each panel shows time left to right and mel bins bottom to top, coloured by a perceptual colour map
(matplotlib's ``magma`` when matplotlib is installed, grey otherwise); masked patches are grey.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmim import registry
from mmim.model import MaskedModel, ModelOutput
from mmim_audio.frontend import NORM_STATS, AudioMAEFrontend
from mmim_audio.io import crop_or_pad, load_audio

PANELS = ("original", "masked", "reconstruction", "reconstruction + visible")


def dataset_option(spec: dict[str, Any] | None, name: str, default: Any) -> Any:
    """``spec[name]``, else the dataset class's default for it, else ``default``."""
    if spec is None:
        return default
    if name in spec:
        return spec[name]
    params = inspect.signature(registry.resolve("dataset", spec["name"])).parameters
    return params[name].default if name in params else default


def reconstruct(model: MaskedModel, stream: str, output: ModelOutput) -> tuple[Tensor, Tensor, Tensor]:
    """``(masked, reconstruction, pasted)`` spectrograms ``(B, C, T, F)`` in the input's scale (NaN = hidden).

    Predictions of per-patch normalised targets are mapped back with each patch's mean and std.
    """
    s = model.streams[stream]
    tokens, mask, pred = output.tokens[stream], output.masks[stream], output.predictions[stream]
    if pred.full is None:
        raise ValueError("visualisation needs predictions for every token: decoder predict='all'")
    content, full = tokens.content, pred.full.float()
    if getattr(s.target, "normalize", False):
        full = full * (content.var(-1, keepdim=True) + s.target.eps) ** 0.5 + content.mean(-1, keepdim=True)
    hidden = mask.bool_mask().unsqueeze(-1)
    to_raw = s.tokenizer.content_to_raw
    return (to_raw(content.masked_fill(hidden, float("nan"))), to_raw(full),
            to_raw(torch.where(hidden, full, content)))


def colorize(spec: Tensor, low: float, high: float) -> np.ndarray:
    """``(T, F)`` (NaN = hidden) -> ``(F, T, 3)`` uint8 image, low mel bins at the bottom."""
    x = ((spec.T.flip(0) - low) / max(high - low, 1e-6)).clamp(0, 1)
    hidden = torch.isnan(x)
    x = torch.nan_to_num(x).numpy()
    try:
        from matplotlib import colormaps

        rgb = colormaps["magma"](x)[..., :3]
    except ImportError:
        rgb = np.repeat(x[..., None], 3, axis=-1)
    rgb[hidden.numpy()] = 0.5
    return (rgb * 255).round().astype(np.uint8)


def render_row(panels: list[np.ndarray], scale: int = 2, pad: int = 4) -> Image.Image:
    """Panels side by side with white gaps, scaled up ``scale`` times."""
    h, w = panels[0].shape[:2]
    canvas = np.full((h + 2 * pad, len(panels) * (w + pad) + pad, 3), 255, np.uint8)
    for j, img in enumerate(panels):
        canvas[pad:pad + h, pad + j * (w + pad): pad + j * (w + pad) + w] = img
    out = Image.fromarray(canvas)
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST)


class SpectrogramVisualizer:
    """Writes one PNG per sample: original | masked | reconstruction | reconstruction + visible."""

    def render(self, model: MaskedModel, stream: str, raw: Tensor, output: ModelOutput, out_dir: Path,
               dataset_spec: dict[str, Any] | None = None, prefix: str = "sample") -> list[Path]:
        """Args:
            raw: the stream's input ``(B, 1, T, F)`` as the model saw it.
            output: the model's output on ``raw`` with ``predict='all'``.

        Returns:
            the written PNG paths.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        masked, recon, pasted = reconstruct(model, stream, output)
        paths = []
        for i in range(raw.shape[0]):
            original = raw[i, 0].detach().float().cpu()
            low, high = float(original.min()), float(original.max())
            panels = [colorize(t[i, 0].detach().float().cpu(), low, high) for t in (raw, masked, recon, pasted)]
            path = out_dir / f"{prefix}_{i:03d}.png"
            render_row(panels).save(path)
            paths.append(path)
        return paths

    def load_input(self, path: str | Path, model: MaskedModel, stream: str,
                   dataset_spec: dict[str, Any] | None = None) -> Tensor:
        """An audio file as the model's input ``(1, 1, T, F)``, through the training data's front end."""
        tokenizer = model.streams[stream].tokenizer
        frames, bins = tokenizer.input_size
        mean, std = NORM_STATS["audioset"]
        front = AudioMAEFrontend(dataset_option(dataset_spec, "sample_rate", 16000), bins, frames,
                                 mean=dataset_option(dataset_spec, "norm_mean", mean),
                                 std=dataset_option(dataset_spec, "norm_std", std), backend="torch")
        waveform = load_audio(path, front.sample_rate)
        if dataset_option(dataset_spec, "pad_waveform", False):
            waveform = crop_or_pad(waveform, front.samples_for_frames)
        return front(waveform).unsqueeze(0)
