"""``mmim visualize`` for audio: spectrogram PNGs and Griffin-Lim WAVs of a (tiny) Audio-MAE, audio files as input."""

from __future__ import annotations

from pathlib import Path

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
    paths = vis.render(model, "audio", raw, out, tmp_path / "vis", prefix="audio", audio=False)
    assert [p.name for p in paths] == ["audio_000.png", "audio_001.png"]
    img = np.asarray(Image.open(paths[0]))
    band = 14  # the panel titles above
    assert img.shape == (band + 2 * (16 + 8), 2 * (4 * (32 + 4) + 4), 3)
    assert (img[:band] < 128).any(), "titled panels"
    img = img[band:]
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


def test_render_writes_original_and_reconstruction_wavs(tmp_path):
    model = _model()
    raw = torch.randn(1, 1, 32, 16) * 0.3
    with torch.no_grad():
        out = model({"audio": raw}, generator=torch.Generator().manual_seed(0))
    vis = registry.companion("visualizer", "spectrogram_patch")()
    spec = {"name": "spoken_digits", "sample_rate": 8000, "num_mel_bins": 16}
    paths = vis.render(model, "audio", raw, out, tmp_path, spec, prefix="audio", iterations=4)
    assert [p.name for p in paths] == ["audio_000.png", "audio_000_original.wav", "audio_000_reconstruction.wav"]
    original, rate = soundfile.read(paths[1])
    recon, _ = soundfile.read(paths[2])
    assert rate == 8000 and original.shape == recon.shape == (200 + 80 * 31,)  # 25 ms / 10 ms frames at 8 kHz
    assert np.abs(original).max() > 0 and np.abs(recon).max() <= 1.0 and not np.array_equal(original, recon)


def test_visualize_command_writes_pngs_and_wavs(tmp_path, capsys):
    from mmim.cli import main

    run = tmp_path / "run"
    assert main(["train", "--modality", "audio", "schedule.max_steps=1", "eval.after_train=false",
                 "train.threads=1", f"train.out_dir={run}", "data.batch_size=4", "data.dataset.max_samples=8"]) == 0
    capsys.readouterr()
    assert main(["visualize", str(run), "--num", "2", "--out", str(tmp_path / "vis")]) == 0
    printed = [Path(p) for p in capsys.readouterr().out.split()]
    assert sorted(p.name for p in printed) == [f"audio_00{i}{end}" for i in range(2)
                                               for end in (".png", "_original.wav", "_reconstruction.wav")]
    wave, rate = soundfile.read(tmp_path / "vis" / "audio_001_reconstruction.wav")
    assert rate == 16000 and wave.shape == (400 + 160 * 63,) and np.abs(wave).max() > 0
