"""``mmim visualize`` for spectrograms: PNGs of original, masked, reconstruction and reconstruction + visible,
and WAVs of the original and the reconstruction.

Each panel shows time left to right and mel bins bottom to top, coloured by a perceptual colour map
(matplotlib's ``magma`` when matplotlib is installed, grey otherwise); masked patches are grey.
Next to each PNG, ``<name>_original.wav`` and ``<name>_reconstruction.wav`` are the two spectrograms
(the original, and the reconstruction with the visible patches kept) turned back into sound by
:func:`mmim_audio.griffin_lim.fbank_to_waveform` - both through the same inversion, so they compare
fairly - scaled by one common factor when a peak would clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from PIL import Image
from torch import Tensor

from mmim import registry
from mmim.model import MaskedModel, ModelOutput
from mmim_audio.frontend import NORM_STATS, AudioMAEFrontend
from mmim_audio.griffin_lim import fbank_to_waveform
from mmim_audio.io import crop_or_pad, load_audio

PANELS = ("original", "masked", "reconstruction", "reconstruction + visible")


def dataset_option(spec: dict[str, Any] | None, name: str, default: Any) -> Any:
    """``spec[name]``, else the dataset class's default for it (its signature's, or its
    ``option_defaults``' for options it passes on), else ``default``."""
    return registry.option_value("dataset", spec, name, default)


def write_wavs(spectrograms: dict[str, Tensor], path_stem: Path, sample_rate: int, mean: float, std: float,
               iterations: int = 64) -> list[Path]:
    """Griffin-Lim each normalised ``(T, F)`` spectrogram to ``<path_stem>_<key>.wav`` (16-bit PCM)."""
    waves = {key: fbank_to_waveform(spec, sample_rate, mean=mean, std=std, iterations=iterations)
             for key, spec in spectrograms.items()}
    peak = max(float(w.abs().max()) for w in waves.values())
    scale = 0.99 / peak if peak > 0.99 else 1.0
    paths = []
    for key, wave in waves.items():
        path = path_stem.with_name(f"{path_stem.name}_{key}.wav")
        soundfile.write(path, (wave * scale).numpy(), sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


def reconstruct(model: MaskedModel, stream: str, output: ModelOutput) -> tuple[Tensor, Tensor, Tensor]:
    """``(masked, reconstruction, pasted)`` spectrograms ``(B, C, T, F)`` in the input's scale (NaN = hidden).

    Predictions of per-patch normalised targets are mapped back with each patch's mean and std.
    """
    s = model.streams[stream]
    tokens, mask, pred = output.tokens[stream], output.stream_mask(stream), output.predictions[stream]
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


def render_row(panels: list[np.ndarray], scale: int = 2, pad: int = 4,
               labels: tuple[str, ...] | None = None) -> Image.Image:
    """Panels side by side with white gaps, scaled up ``scale`` times, titled with ``labels`` above."""
    h, w = panels[0].shape[:2]
    canvas = np.full((h + 2 * pad, len(panels) * (w + pad) + pad, 3), 255, np.uint8)
    for j, img in enumerate(panels):
        canvas[pad:pad + h, pad + j * (w + pad): pad + j * (w + pad) + w] = img
    out = Image.fromarray(canvas)
    out = out.resize((out.width * scale, out.height * scale), Image.NEAREST)
    if not labels:
        return out
    from PIL import ImageDraw

    band = 14
    titled = Image.new("RGB", (out.width, out.height + band), (255, 255, 255))
    titled.paste(out, (0, band))
    draw = ImageDraw.Draw(titled)
    for j, text in enumerate(labels[:len(panels)]):
        left, width = (pad + j * (w + pad)) * scale, w * scale
        draw.text((max(left, left + (width - draw.textlength(text)) / 2), 1), text, fill=(0, 0, 0))
    return titled


class SpectrogramVisualizer:
    """Writes per sample one PNG (original | masked | reconstruction | reconstruction + visible) and two
    WAVs (original, reconstruction + visible) through Griffin-Lim."""

    def render(self, model: MaskedModel, stream: str, raw: Tensor, output: ModelOutput, out_dir: Path,
               dataset_spec: dict[str, Any] | None = None, prefix: str = "sample", audio: bool = True,
               iterations: int = 64) -> list[Path]:
        """Args:
            raw: the stream's input ``(B, 1, T, F)`` as the model saw it (normalised log-mel).
            output: the model's output on ``raw`` with ``predict='all'``.
            dataset_spec: the data's recipe entry; gives the sample rate and the normalisation.
            audio: also write the WAVs.
            iterations: Griffin-Lim iterations per WAV.

        Returns:
            the written paths: per sample the PNG, then (with ``audio``) its two WAVs.
        """
        out_dir.mkdir(parents=True, exist_ok=True)
        masked, recon, pasted = reconstruct(model, stream, output)
        default_mean, default_std = NORM_STATS["audioset"]
        rate = dataset_option(dataset_spec, "sample_rate", 16000)
        mean = dataset_option(dataset_spec, "norm_mean", default_mean)
        std = dataset_option(dataset_spec, "norm_std", default_std)
        paths = []
        for i in range(raw.shape[0]):
            original = raw[i, 0].detach().float().cpu()
            low, high = float(original.min()), float(original.max())
            panels = [colorize(t[i, 0].detach().float().cpu(), low, high) for t in (raw, masked, recon, pasted)]
            path = out_dir / f"{prefix}_{i:03d}.png"
            render_row(panels, labels=PANELS).save(path)
            paths.append(path)
            if audio and raw.shape[1] == 1:
                spectrograms = {"original": original, "reconstruction": pasted[i, 0].detach().float().cpu()}
                paths += write_wavs(spectrograms, path.with_suffix(""), rate, mean, std, iterations)
        return paths

    def load_input(self, path: str | Path, model: MaskedModel, stream: str,
                   dataset_spec: dict[str, Any] | None = None) -> Tensor:
        """An audio file as the model's input ``(1, 1, T, F)``, through the training data's front end."""
        tokenizer = model.streams[stream].tokenizer
        frames, bins = tokenizer.input_size
        mean, std = NORM_STATS["audioset"]  # used when the spec names no statistics
        front = AudioMAEFrontend(dataset_option(dataset_spec, "sample_rate", 16000), bins, frames,
                                 mean=dataset_option(dataset_spec, "norm_mean", mean),
                                 std=dataset_option(dataset_spec, "norm_std", std), backend="torch")
        waveform = load_audio(path, front.sample_rate)
        if dataset_option(dataset_spec, "pad_waveform", False):
            waveform = crop_or_pad(waveform, front.samples_for_frames)
        return front(waveform).unsqueeze(0)
