"""PNG views of Point-MAE reconstructions (``mmim visualize``): original | visible patches | reconstruction.

Drawn with matplotlib's Agg backend (open3d's offscreen renderer is not usable headless). The
reconstruction panel shows the visible patches in grey and the predicted masked patches (each
prediction placed at its patch center) in red. With open3d installed (the ``open3d`` extra) the
same reconstruction is also written as a coloured ``.ply`` next to each PNG, for open3d's viewer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmim.model import MaskedModel, ModelOutput
from mmim.types import Layout, gather_tokens
from mmim_points.datasets.open3d_io import open3d_available, write_colored_cloud

PANELS = ("original", "visible patches", "reconstruction")


def patch_points(model: MaskedModel, stream: str, output: ModelOutput) -> tuple[Tensor, Tensor]:
    """Absolute points of the visible patches ``(B, Lv*M, 3)`` and of the predicted masked ones ``(B, Lm*M, 3)``."""
    tokens, mask, pred = output.tokens[stream], output.stream_mask(stream), output.predictions[stream]
    centers = tokens.layout.centers
    if centers is None or tokens.content is None:
        raise ValueError(f"stream {stream!r}: point visualisation needs point-patch tokens (centers and content)")
    tokenizer = model.streams[stream].tokenizer
    visible = tokenizer.content_to_raw(gather_tokens(tokens.content, mask.visible),
                                       _layout_at(tokens.layout, gather_tokens(centers, mask.visible)))
    predicted = tokenizer.content_to_raw(pred.values.float(), _layout_at(tokens.layout, gather_tokens(centers, pred.index)))
    return visible, predicted


def _layout_at(layout: Layout, centers: Tensor) -> Layout:
    """``layout`` restricted to some tokens, whose centers ``(B, n, 3)`` are given."""
    return Layout(batch_size=centers.shape[0], num_tokens=centers.shape[1], centers=centers, device=centers.device)


def _scatter(ax: Any, parts: list[tuple[Tensor, str]], limit: float, title: str) -> None:
    for pts, color in parts:
        p = pts.detach().float().cpu()
        ax.scatter(p[:, 0], p[:, 2], p[:, 1], s=2, c=color, depthshade=False, linewidths=0)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_zlim(-limit, limit)
    ax.set_box_aspect((1, 1, 1))
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


class PointVisualizer:
    """Writes one PNG per cloud: original | visible patches | visible + predicted masked patches."""

    def render(self, model: MaskedModel, stream: str, raw: Tensor, output: ModelOutput, out_dir: Path,
               dataset_spec: dict[str, Any] | None = None, prefix: str = "sample") -> list[Path]:
        """Args:
            raw: the stream's input ``(B, N, 3)`` as the model saw it.
            output: the model's output on ``raw``.

        Returns:
            the written PNG paths.
        """
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
        visible, predicted = patch_points(model, stream, output)
        paths = []
        for i in range(raw.shape[0]):
            limit = float(raw[i].abs().max().clamp_min(1e-6)) * 1.05
            fig = plt.figure(figsize=(9, 3.2), dpi=100)
            panels = ([(raw[i], "tab:blue")], [(visible[i], "0.5")], [(visible[i], "0.6"), (predicted[i], "tab:red")])
            for j, (parts, title) in enumerate(zip(panels, PANELS)):
                _scatter(fig.add_subplot(1, 3, j + 1, projection="3d"), parts, limit, title)
            fig.tight_layout()
            path = out_dir / f"{prefix}_{i:03d}.png"
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
            if open3d_available():  # also a coloured cloud for open3d's viewer: visible grey, predicted red
                paths.append(write_colored_cloud(out_dir / f"{prefix}_{i:03d}.ply", [
                    (visible[i].detach().float().cpu().numpy(), (0.6, 0.6, 0.6)),
                    (predicted[i].detach().float().cpu().numpy(), (0.85, 0.1, 0.1))]))
        return paths

    def load_input(self, path: str | Path, model: MaskedModel, stream: str,
                   dataset_spec: dict[str, Any] | None = None) -> Tensor:
        """A point or mesh file as the model's input ``(1, N, 3)``: ``N`` = the dataset's ``num_points``
        (1024 if unset) by FPS, normalised to the unit sphere unless the dataset says ``normalize: false``."""
        from mmim_points.datasets.common import check_cloud, normalize_unit_sphere, sample_points
        from mmim_points.datasets.formats import read_point_file

        spec = dataset_spec or {}
        points = sample_points(check_cloud(read_point_file(path, reader=spec.get("reader", "builtin")), str(path)), int(spec.get("num_points", 1024)), "fps")
        if spec.get("normalize", True):
            points = normalize_unit_sphere(points)
        return points.unsqueeze(0).to(torch.float32)
