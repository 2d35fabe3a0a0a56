"""``mmim visualize`` for audio: spectrogram PNGs of a (tiny) Audio-MAE, and audio files as input."""

from __future__ import annotations

import numpy as np
import soundfile
import torch
from PIL import Image

from mmim import registry
from mmim.config.recipe import ModelConfig, StreamConfig
from mmim.model import build_model
from mmim.trunk.encoder import EncoderConfig


def _model():
    torch.manual_seed(0)
    cfg = ModelConfig(
        encoder=EncoderConfig(embed_dim=32, depth=1, num_heads=2),
        streams={"audio": StreamConfig(
            tokenizer={"name": "spectrogram_patch", "input_size": [32, 16], "patch_size": 8},
            masker={"name": "time", "ratio": 0.5}, target={"name": "content", "normalize": True},
            loss={"name": "mse"},
            decoder={"name": "audiomae_local", "embed_dim": 16, "depth": 2, "num_heads": 2, "predict": "all"})},
    )
    return build_model(cfg).eval()


def test_render_writes_one_png_per_sample_with_masked_patches_grey(tmp_path):
    model = _model()
    raw = torch.randn(2, 1, 32, 16)
    with torch.no_grad():
        out = model({"audio": raw}, generator=torch.Generator().manual_seed(0))
    vis = registry.companion("visualizer", "spectrogram_patch")()
    paths = vis.render(model, "audio", raw, out, tmp_path / "vis", prefix="audio")
    assert [p.name for p in paths] == ["audio_000.png", "audio_001.png"]
    img = np.asarray(Image.open(paths[0]))
    assert img.shape == (2 * (16 + 8), 2 * (4 * (32 + 4) + 4), 3)
    masked_panel = img[8:8 + 32, 2 * (4 + 36):2 * (4 + 36) + 64]  # second panel: (F, T) scaled by 2
    grey = (masked_panel == 128).all(-1)  # half of the time steps are hidden: whole grey columns
    assert grey.all(0).sum() == 32


def test_load_input_uses_the_training_front_end(tmp_path):
    model = _model()
    path = tmp_path / "tone.wav"
    soundfile.write(path, (0.3 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    vis = registry.companion("visualizer", "spectrogram_patch")()
    x = vis.load_input(path, model, "audio", {"name": "spoken_digits", "num_mel_bins": 16, "target_frames": 32})
    assert x.shape == (1, 1, 32, 16) and torch.isfinite(x).all()
