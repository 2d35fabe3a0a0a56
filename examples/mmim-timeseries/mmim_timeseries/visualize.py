"""PNG plots of masked series reconstructions (``mmim visualize``): one panel per channel, the
series in blue, hidden patches shaded, the decoder's prediction of them in red."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmim.model import MaskedModel, ModelOutput
from torch import Tensor


def predicted_series(model: MaskedModel, stream: str, output: ModelOutput) -> tuple[Tensor, Tensor]:
    """The series with predicted patches pasted in ``(B, C, T)`` and the hidden time steps ``(B, T)`` (bool)."""
    s = model.streams[stream]
    tokens, mask, pred = output.tokens[stream], output.stream_mask(stream), output.predictions[stream]
    content, values = tokens.content, pred.values.float()
    if getattr(s.target, "normalize", False):  # predictions of per-patch normalised values, mapped back
        mean, var = content.mean(-1, keepdim=True), content.var(-1, keepdim=True)
        idx = pred.index.unsqueeze(-1).expand(-1, -1, content.shape[-1])
        values = values * (torch.gather(var, 1, idx[..., :1]) + s.target.eps) ** 0.5 + torch.gather(mean, 1, idx[..., :1])
    hidden = mask.bool_mask()  # (B, L)
    pasted = content.clone().scatter(1, pred.index.unsqueeze(-1).expand(-1, -1, content.shape[-1]), values)
    pasted = torch.where(hidden.unsqueeze(-1), pasted, content)
    patch_len = s.tokenizer.patch_len
    return s.tokenizer.content_to_raw(pasted), hidden.repeat_interleave(patch_len, dim=1)


class SeriesVisualizer:
    """Writes one PNG per series: each channel with its hidden spans and their reconstruction."""

    def render(self, model: MaskedModel, stream: str, raw: Tensor, output: ModelOutput, out_dir: Path,
               dataset_spec: dict[str, Any] | None = None, prefix: str = "sample") -> list[Path]:
        """``raw``: the input series ``(B, C, T)``; returns the written PNG paths."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        recon, hidden = predicted_series(model, stream, output)
        paths = []
        for i in range(raw.shape[0]):
            x, r, h = raw[i].float().cpu().numpy(), recon[i].detach().float().cpu().numpy(), hidden[i].cpu().numpy()
            t = np.arange(x.shape[1])
            fig, axes = plt.subplots(x.shape[0], 1, figsize=(8, 1.6 * x.shape[0]), dpi=100, squeeze=False, sharex=True)
            for c, ax in enumerate(axes[:, 0]):
                ax.fill_between(t, x[c].min(), x[c].max(), where=h, color="0.9", step="mid")
                ax.plot(t, x[c], color="tab:blue", lw=1, label="series")
                ax.plot(t, np.where(h, r[c], np.nan), color="tab:red", lw=1, label="prediction (hidden patches)")
                ax.set_ylabel(f"ch {c}")
            axes[0, 0].legend(loc="upper right", fontsize=7)
            fig.tight_layout()
            path = out_dir / f"{prefix}_{i:03d}.png"
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
        return paths

    def load_input(self, path: str | Path, model: MaskedModel, stream: str,
                   dataset_spec: dict[str, Any] | None = None) -> Tensor:
        """A ``.npy`` or ``.csv`` file holding one series ``(C, T)`` -> ``(1, C, T)`` float32."""
        path = Path(path)
        try:
            data = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, delimiter=",", ndmin=2)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read a series: {err}") from err
        tok = model.streams[stream].tokenizer
        if data.shape != (tok.in_chans, tok.seq_len):
            raise ValueError(f"{path}: series of shape {data.shape}, the model takes ({tok.in_chans}, {tok.seq_len})")
        return torch.as_tensor(data, dtype=torch.float32).unsqueeze(0)
