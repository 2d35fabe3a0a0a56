"""PNG grids of MAE-style reconstructions: original, masked input, reconstruction, and the
reconstruction pasted into the visible patches (the MAE paper's figure layout)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmim import registry
from mmim.model import MaskedModel, ModelOutput

PANELS = ("original", "masked", "reconstruction", "reconstruction + visible")


def display_stats(dataset_spec: dict[str, Any] | None, channels: int) -> tuple[Tensor, Tensor]:
    """Mean/std ``(C, 1, 1)`` the images were normalised with: the dataset spec's ``mean``/``std``,
    else its class defaults, else 0/1."""
    mean: Any = 0.0
    std: Any = 1.0
    if dataset_spec is not None:
        mean = registry.option_value("dataset", dataset_spec, "mean", 0.0)
        std = registry.option_value("dataset", dataset_spec, "std", 1.0)

    def as_tensor(v: Any) -> Tensor:
        t = torch.as_tensor(v if isinstance(v, Sequence) else [v], dtype=torch.float32)
        return (t if t.numel() == channels else t[:1].repeat(channels)).reshape(channels, 1, 1)

    return as_tensor(mean), as_tensor(std)


def reconstruct(model: MaskedModel, stream: str, raw: Tensor, output: ModelOutput) -> tuple[Tensor, Tensor, Tensor]:
    """``(masked input, reconstruction, pasted)`` images ``(B, C, H, W)`` in the input's scale.

    Predictions of a per-patch-normalised target (``norm_pix_loss``) are mapped back with each
    patch's own mean and std, as in the MAE demo.
    """
    s = model.streams[stream]
    tokens, mask, pred = output.tokens[stream], output.stream_mask(stream), output.predictions[stream]
    if pred.full is None:
        raise ValueError("visualisation needs predictions for every token: decoder predict='all'")
    content = tokens.content
    full = pred.full.float()
    if getattr(s.target, "normalize", False):
        mean, var = content.mean(-1, keepdim=True), content.var(-1, keepdim=True)
        full = full * (var + s.target.eps) ** 0.5 + mean
    hidden = mask.bool_mask().unsqueeze(-1)
    masked = s.tokenizer.content_to_raw(content.masked_fill(hidden, float("nan")), tokens.layout)
    recon = s.tokenizer.content_to_raw(full, tokens.layout)
    pasted = s.tokenizer.content_to_raw(torch.where(hidden, full, content), tokens.layout)
    return masked, recon, pasted


def _to_uint8(img: Tensor, mean: Tensor, std: Tensor) -> np.ndarray:
    """``(C, H, W)`` normalised (NaN = hidden, shown grey) -> ``(H, W, 3)`` uint8."""
    hidden = torch.isnan(img).any(0)
    x = (torch.nan_to_num(img) * std + mean).clamp(0, 1)
    x = x.repeat(3, 1, 1) if x.shape[0] == 1 else x[:3]
    x[:, hidden] = 0.5
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


PANELS = ("original", "masked", "reconstruction", "pasted")  # pasted: reconstruction of the hidden part + visible
SEGMAP_PANELS = ("original", "masked", "prediction", "pasted")


def render_grid(rows: list[list[np.ndarray]], scale: int = 1, pad: int = 2,
                labels: tuple[str, ...] | list[str] | None = None) -> Image.Image:
    """Tile ``rows`` of equally sized ``(H, W, 3)`` images into one picture with white gaps, each
    column titled with its entry of ``labels`` in a band above."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = img
    out = Image.fromarray(canvas)
    out = out.resize((out.width * scale, out.height * scale), Image.NEAREST) if scale > 1 else out
    if labels:
        from PIL import ImageDraw

        band = 14
        titled = Image.new("RGB", (out.width, out.height + band), (255, 255, 255))
        titled.paste(out, (0, band))
        draw = ImageDraw.Draw(titled)
        for j, text in enumerate(labels[:cols]):
            left, right = (pad + j * (w + pad)) * scale, (pad + j * (w + pad) + w) * scale
            width = draw.textlength(text)
            draw.text((max(left, (left + right - width) / 2), 1), text, fill=(0, 0, 0))
        out = titled
    return out


class ImageVisualizer:
    """Writes one PNG per sample: original | masked | reconstruction | reconstruction + visible."""

    def render(self, model: MaskedModel, stream: str, raw: Tensor, output: ModelOutput, out_dir: Path,
               dataset_spec: dict[str, Any] | None = None, prefix: str = "sample") -> list[Path]:
        """Args:
            raw: the stream's input ``(B, C, H, W)`` as the model saw it.
            output: the model's output on ``raw`` with ``predict='all'``.

        Returns:
            the written PNG paths.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        masked, recon, pasted = reconstruct(model, stream, raw, output)
        mean, std = display_stats(dataset_spec, raw.shape[1])
        scale = max(1, 224 // raw.shape[-1])
        paths = []
        for i in range(raw.shape[0]):
            panels = [_to_uint8(t[i].detach().float().cpu(), mean, std) for t in (raw, masked, recon, pasted)]
            path = out_dir / f"{prefix}_{i:03d}.png"
            render_grid([panels], scale=scale, labels=PANELS).save(path)
            paths.append(path)
        return paths

    def load_input(self, path: str | Path, model: MaskedModel, stream: str,
                   dataset_spec: dict[str, Any] | None = None) -> Tensor:
        """An image file as the model's input ``(1, C, H, W)``: decoded, resized to the tokenizer's
        size and normalised like the training data."""
        from mmim_image.datasets.image_folder import MODES, decode
        from mmim_image.transforms import build_transform

        tokenizer = model.streams[stream].tokenizer
        mean, std = display_stats(dataset_spec, tokenizer.in_chans)
        transform = build_transform(tokenizer.img_size, False, mean=mean.flatten().tolist(), std=std.flatten().tolist())
        return transform(decode(str(path), MODES[tokenizer.in_chans])).unsqueeze(0)


def palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 colours: class 0 black, the others spread over the hue circle."""
    import colorsys

    colours = [(0, 0, 0)] + [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(1, num_classes - 1) * 0.85, 0.8, 1.0))
                             for i in range(num_classes - 1)]
    return np.array(colours, dtype=np.uint8)


class SegMapVisualizer:
    """Writes one PNG per sample for a class-map stream: original | masked | predicted classes |
    prediction pasted into the visible part (hidden patches grey)."""

    def render(self, model: MaskedModel, stream: str, raw: Tensor, output: ModelOutput, out_dir: Path,
               dataset_spec: dict[str, Any] | None = None, prefix: str = "sample") -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        tok = model.streams[stream].tokenizer
        tokens, mask, pred = output.tokens[stream], output.stream_mask(stream), output.predictions[stream]
        if pred.full is None:
            raise ValueError("visualisation needs predictions for every token")
        b, n, _ = tokens.content.shape
        k = tokens.content.shape[-1]
        classes = pred.full.float().reshape(b, n, tok.num_classes, k).argmax(2).float()
        hidden = mask.bool_mask().unsqueeze(-1)
        colours = palette(tok.num_classes)
        grey = np.full(3, 128, np.uint8)

        def draw(content: Tensor, hide: Tensor | None = None) -> list[np.ndarray]:
            ids = tok.content_to_raw(content).long().clamp(0, tok.num_classes - 1)
            out = colours[ids.cpu().numpy()]
            if hide is not None:
                gone = tok.content_to_raw(hide.expand(-1, -1, k).float()).bool().cpu().numpy()
                out[gone] = grey
            return list(out)

        rows = zip(draw(tokens.content), draw(tokens.content, hidden), draw(classes),
                   draw(torch.where(hidden, classes, tokens.content)))
        scale = max(1, 224 // raw.shape[-1])
        paths = []
        for i, panels in enumerate(rows):
            path = out_dir / f"{prefix}_{i:03d}.png"
            render_grid([list(panels)], scale=scale, labels=SEGMAP_PANELS).save(path)
            paths.append(path)
        return paths
