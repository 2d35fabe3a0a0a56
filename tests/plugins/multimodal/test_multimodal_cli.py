"""`mmim train --modality multimodal`, then eval (cross-modal) and visualize on the run."""

from __future__ import annotations

from PIL import Image

from mmim.cli import main


def test_train_eval_visualize_a_fused_run(tmp_path, capsys):
    run = tmp_path / "run"
    small = ["schedule.max_steps=3", "data.batch_size=16", "eval.after_train=false", "train.progress=false",
             f"train.out_dir={run}", "train.threads=1"]
    assert main(["train", "--modality", "multimodal", *small]) == 0
    assert (run / "config.yaml").is_file()
    capsys.readouterr()
    assert main(["eval", str(run), "--no-baseline", "eval.protocols=[knn,cross_modal]",
                 "eval.dataset={name: image_derived, image: {name: fashion_mnist, max_samples: 200}}"]) == 0
    printed = capsys.readouterr().out
    for col in ("knn", "from_others/image", "blind/image", "from_others/semseg", "blind/depth"):
        assert col in printed, col
    out = tmp_path / "vis"
    assert main(["visualize", str(run), "--num", "2", "--out", str(out)]) == 0
    pictures = sorted(out.glob("sample_*.png"))
    assert [p.name for p in pictures] == ["sample_000.png", "sample_001.png"]
    one = Image.open(out / "streams" / "image_sample000_000.png")
    whole = Image.open(pictures[0])
    assert whole.height > 2.5 * one.height, "image, depth and semseg rows stacked in one picture"
    assert {p.name.split("_")[0] for p in (out / "streams").glob("*.png")} == {"image", "depth", "semseg"}


def test_fusing_the_third_party_plugin_with_images(tmp_path, capsys):
    """The docs/multimodal.md guide: image (built-in plugin) + series (examples/mmim-timeseries)."""
    from pathlib import Path

    recipe = Path(__file__).parents[3] / "recipes" / "multimodal" / "fusion_fashion_timeseries.yaml"
    run = tmp_path / "run"
    assert main(["train", str(recipe), "schedule.max_steps=3", "data.batch_size=16", "eval.after_train=false",
                 "train.progress=false", f"train.out_dir={run}", "train.threads=1"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    out = tmp_path / "vis"
    assert main(["visualize", str(run), "--num", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "is not drawn" not in captured.err  # the example plugin ships a visualizer too
    assert (out / "sample_000.png").is_file()
    assert {p.name.split("_")[0] for p in (out / "streams").glob("*.png")} == {"image", "series"}


def test_audio_visual_pairs_train(tmp_path, capsys):
    """The paired audio-visual recipe (video plugin clips + audio plugin digits, paired by class)."""
    from pathlib import Path

    recipe = Path(__file__).parents[3] / "plugins" / "multimodal" / "mmim_multimodal" / "recipes" / "multimae_video_audio.yaml"
    run = tmp_path / "run"
    assert main(["train", str(recipe), "schedule.max_steps=2", "data.batch_size=8", "eval.after_train=false",
                 "train.progress=false", f"train.out_dir={run}"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
