"""Pictures of a model's output sample by sample: every stream's input, mask and reconstruction in
one image, each drawn by its own plugin's visualizer.

Per-stream visible counts may differ between samples (joint budgets), so each sample is handed
to the plugin renderers on its own, as a one-sample single-stream output.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from PIL import Image

from mmim.model import MaskedModel, ModelOutput
from mmim.types import JointMask, Prediction, StreamMask, Tokens


def sample_view(output: ModelOutput, stream: str, i: int) -> ModelOutput:
    """Sample ``i`` of one token stream as a one-stream output (its mask a per-stream one)."""
    mask: JointMask = output.mask
    tokens, pred = output.tokens[stream], output.predictions[stream]
    layout = tokens.layout
    centers = None if layout.centers is None else layout.centers[i : i + 1]
    one = Tokens(tokens.embeddings[i : i + 1], tokens.pos[i : i + 1] if tokens.pos.shape[0] > 1 else tokens.pos,
                 None if tokens.content is None else tokens.content[i : i + 1],
                 dataclasses.replace(layout, batch_size=1, centers=centers))
    full = pred.full if pred.full is not None else pred.values
    one_mask = StreamMask.from_bool(mask.stream_masked(stream)[i : i + 1])
    view = ModelOutput(loss=output.loss, mask=JointMask.from_streams({stream: one_mask}, {stream: layout.num_tokens}),
                       tokens={stream: one})
    view.predictions[stream] = Prediction(full[i : i + 1], pred.index[i : i + 1], full=full[i : i + 1])
    return view


def stack_vertically(paths: list[Path], pad: int = 6) -> Image.Image:
    """One picture from several PNGs, top to bottom, left-aligned on white."""
    images = [Image.open(p).convert("RGB") for p in paths]
    width = max(im.width for im in images)
    height = sum(im.height for im in images) + pad * (len(images) - 1)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for im in images:
        canvas.paste(im, (0, y))
        y += im.height + pad
    return canvas


def render_fused(model: MaskedModel, raw: dict[str, Any], output: ModelOutput, out_dir: Path,
                 visualizers: dict[str, Any], dataset_spec: dict[str, Any] | None = None) -> list[Path]:
    """Write ``sample_<i>.png`` (all streams stacked) plus each plugin's own files per stream
    under ``streams/``; returns the written paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts_dir = out_dir / "streams"
    batch = next(iter(output.tokens.values())).embeddings.shape[0]
    written: list[Path] = []
    for i in range(batch):
        pngs = []
        for stream, vis in visualizers.items():
            if stream not in output.predictions or model.streams[stream].tokenizer is None:
                continue  # not predicted, or an extra head on another stream's tokens
            files = vis.render(model, stream, raw[stream][i : i + 1], sample_view(output, stream, i), parts_dir,
                               dataset_spec, prefix=f"{stream}_sample{i:03d}")
            written.extend(files)
            pngs.extend(p for p in files if Path(p).suffix == ".png")
        if pngs:
            path = out_dir / f"sample_{i:03d}.png"
            stack_vertically(pngs).save(path)
            written.append(path)
    return written


