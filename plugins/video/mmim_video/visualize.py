"""``mmim visualize`` for video: per sample a PNG strip and an animated GIF of original, masked,
reconstruction and reconstruction + visible.

The PNG has one row per panel (titled on the left) and one column per frame; the GIF plays the four
panels side by side, titled above.
Hidden tubelets are grey. Reconstructions of the per-tubelet normalised target are mapped back to
pixels with each tubelet's own mean and std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mmim.model import MaskedModel, ModelOutput
from mmim_video.reader import read_clip
from mmim_video.sampling import crop_resize, sample_indices, segment_indices
from mmim_video.target import IMAGENET_MEAN, IMAGENET_STD

PANELS = ("original", "masked", "reconstruction", "reconstruction + visible")
SHORT = ("original", "masked", "recon", "pasted")  # the GIF's column titles: narrow frames


def titled(img: Image.Image, labels: tuple[str, ...], cell: int, pad: int, rows: bool) -> Image.Image:
    """``img`` (a :func:`grid` of ``cell``-pixel images with ``pad`` gaps, scaled) with a title left of
    each row (``rows``) or above each column."""
    from PIL import ImageDraw

    measure = ImageDraw.Draw(img)
    if rows:
        margin = int(max(measure.textlength(t) for t in labels)) + 6
        out = Image.new("RGB", (img.width + margin, img.height), (255, 255, 255))
        out.paste(img, (margin, 0))
        draw = ImageDraw.Draw(out)
        for r, text in enumerate(labels):
            draw.text((3, pad + r * (cell + pad) + cell / 2 - 5), text, fill=(0, 0, 0))
        return out
    band = 14
    out = Image.new("RGB", (img.width, img.height + band), (255, 255, 255))
    out.paste(img, (0, band))
    draw = ImageDraw.Draw(out)
    for c, text in enumerate(labels):
        left = pad + c * (cell + pad)
        draw.text((max(left, left + (cell - draw.textlength(text)) / 2), 1), text, fill=(0, 0, 0))
    return out


def reconstruct(model: MaskedModel, stream: str, output: ModelOutput) -> list[Tensor]:
    """The four panels as clips ``(B, C, T, H, W)`` in ``[0, 1]`` (NaN = hidden)."""
    s = model.streams[stream]
    tokens, mask, pred = output.tokens[stream], output.stream_mask(stream), output.predictions[stream]
    if pred.full is None:
        raise ValueError("visualisation needs predictions for every token: decoder predict='all'")
    to_pixels = getattr(s.target, "to_pixels", None)
    if to_pixels is None:
        raise ValueError("the video visualizer needs the tubelet_pixels target")
    content = s.target.pixels(tokens.content).flatten(-2)
    full = to_pixels(pred.full, tokens.content)
    hidden = mask.bool_mask().unsqueeze(-1)
    panels = [content, content.masked_fill(hidden, float("nan")), full, torch.where(hidden, full, content)]
    return [s.tokenizer.content_to_raw(p, tokens.layout) for p in panels]


def to_uint8(frame: Tensor) -> np.ndarray:
    """``(C, H, W)`` in ``[0, 1]`` (NaN = hidden, grey) -> ``(H, W, 3)`` uint8."""
    x = frame.detach().float().cpu()
    x = torch.where(torch.isnan(x), torch.full_like(x, 0.5), x.clamp(0, 1))
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def grid(images: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Rows of equal-size images with white gaps -> one image."""
    h, w = images[0][0].shape[:2]
    rows, cols = len(images), max(len(r) for r in images)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(images):
        for j, img in enumerate(row):
            canvas[pad + i * (h + pad): pad + i * (h + pad) + h, pad + j * (w + pad): pad + j * (w + pad) + w] = img
    return canvas


class VideoVisualizer:
    """Writes ``<prefix>_<i>.png`` (panels x frames) and ``<prefix>_<i>.gif`` (panels side by side) per sample."""

    def render(self, model: MaskedModel, stream: str, raw: Tensor, output: ModelOutput, out_dir: Path,
               dataset_spec: dict[str, Any] | None = None, prefix: str = "sample", scale: int = 2) -> list[Path]:
        """Args:
            raw: the stream's input ``(B, C, T, H, W)`` as the model saw it.
            output: the model's output on ``raw`` with the decoder's ``predict='all'``.

        Returns:
            the written PNG and GIF paths.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        panels = reconstruct(model, stream, output)
        paths = []
        for i in range(raw.shape[0]):
            frames = [[to_uint8(p[i, :, t]) for t in range(p.shape[2])] for p in panels]  # panel x time
            strip = Image.fromarray(grid(frames))
            strip = strip.resize((strip.width * scale, strip.height * scale), Image.NEAREST)
            cell, pad = raw.shape[-2] * scale, 2 * scale
            strip = titled(strip, PANELS[:len(panels)], cell, pad, rows=True)
            png = out_dir / f"{prefix}_{i:03d}.png"
            strip.save(png)
            movie = [Image.fromarray(grid([[frames[k][t] for k in range(len(panels))]])) for t in range(len(frames[0]))]
            movie = [titled(m.resize((m.width * scale, m.height * scale), Image.NEAREST), SHORT[:len(panels)],
                            raw.shape[-1] * scale, 2 * scale, rows=False) for m in movie]
            gif = out_dir / f"{prefix}_{i:03d}.gif"
            movie[0].save(gif, save_all=True, append_images=movie[1:], duration=200, loop=0)
            paths += [png, gif]
        return paths

    def load_input(self, path: str | Path, model: MaskedModel, stream: str,
                   dataset_spec: dict[str, Any] | None = None) -> Tensor:
        """A video file as the model's input ``(1, 3, T, S, S)``: the first clip, centre crop, ImageNet-normalised."""
        spec = dataset_spec or {}
        tokenizer = model.streams[stream].tokenizer
        num_frames, size = tokenizer.num_frames, tokenizer.img_size[0]
        backend = spec.get("backend", "auto")
        if spec.get("sampling", "stride") == "segments":
            def choose(total: int) -> list[int]:
                return segment_indices(total, num_frames, False)
        else:
            def choose(total: int) -> list[int]:
                return sample_indices(total, num_frames, spec.get("sampling_rate", 4), False)
        x = read_clip(path, choose, backend).permute(0, 3, 1, 2).float() / 255.0
        x = crop_resize(x, size, 1.0, random_place=False).permute(1, 0, 2, 3).clamp(0, 1)
        mean = torch.tensor(spec.get("mean", IMAGENET_MEAN)).view(3, 1, 1, 1)
        std = torch.tensor(spec.get("std", IMAGENET_STD)).view(3, 1, 1, 1)
        return ((x - mean) / std).unsqueeze(0)
