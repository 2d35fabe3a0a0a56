"""MultiMAE ViT-B recipe values, the multi-task folder reader, derived modalities and paired data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmim_multimodal.derived import erosion_depth, intensity_segments, truncated_standardize
from mmim_multimodal.folder import MultiTaskFolder
from PIL import Image

from mmim import registry
from mmim.config.recipe import load_recipe
from mmim.data import DataError
from mmim.data.paired import PairedDataset, sample_labels
from mmim.model import build_model

ROOT = Path(__file__).parents[3]


def test_multimae_vit_b_recipe_has_the_published_values():
    r = load_recipe(ROOT / "recipes" / "multimodal" / "multimae_vit_b16_rgb_depth_semseg.yaml")
    enc = r.model.encoder.resolved()
    assert (enc.embed_dim, enc.depth, enc.num_heads) == (768, 12, 12) and not enc.final_norm and enc.cls_token
    f = r.model.fusion
    assert f.input_budget == 98 and f.input_alpha == 1.0 and f.inputs == ["rgb", "depth", "semseg"]
    assert f.targets == ["rgb", "depth", "semseg", "norm_rgb"]
    s = r.model.streams
    assert s["rgb"].tokenizer["patch_size"] == 16 and s["rgb"].tokenizer["pos_layout"] == "multimae"
    assert s["semseg"].tokenizer["num_classes"] == 133 and s["semseg"].tokenizer["class_dim"] == 64
    assert s["semseg"].tokenizer["map_size"] == 56 and s["semseg"].tokenizer["patch_size"] == 4
    assert s["norm_rgb"].tokens_of == "rgb" and s["norm_rgb"].target["normalize"] is True
    assert s["depth"].loss["name"] == "l1" and s["semseg"].loss["name"] == "cross_entropy"
    for name in ("rgb", "depth", "semseg", "norm_rgb"):
        assert s[name].decoder == {"name": "multimae", "dim": 256, "depth": 2, "num_heads": 8, "mlp_ratio": 4.0}
        assert s[name].loss["reduction"] == "sample"
    assert (r.optim.base_lr, r.optim.weight_decay, r.optim.betas) == (1e-4, 0.05, (0.9, 0.95))
    assert (r.schedule.epochs, r.schedule.warmup_epochs, r.train.effective_batch_size) == (1600, 40, 2048)
    assert r.data.dataset["crop_scale"] == [0.2, 1.0] and r.data.dataset["hflip"] == 0.5
    ft = r.finetune
    assert (ft.epochs, ft.base_lr, ft.effective_batch_size, ft.layer_decay, ft.drop_path) == (100, 5e-4, 1024, 0.65, 0.1)
    assert (ft.mixup, ft.cutmix, ft.label_smoothing, ft.warmup_epochs, ft.reported_top1) == (0.8, 1.0, 0.1, 5, 83.3)
    assert ft.streams == ["rgb"]
    for value in ("83.3", "46.2", "37.0", "38.5", "47.6", "52.0", "41.4", "56.0", "86.4"):
        assert value in r.provenance.notes, f"Table 1 value {value} missing"


def test_multimae_vit_b_builds_with_the_official_shapes():
    r = load_recipe(ROOT / "recipes" / "multimodal" / "multimae_vit_b16_rgb_depth_semseg.yaml")
    r.model.encoder.depth = 1  # the shapes below do not depend on the depth
    model = build_model(r.model)
    sd = model.state_dict()
    assert sd["streams.semseg.tokenizer.class_emb.weight"].shape == (133, 64)
    assert sd["streams.semseg.tokenizer.proj.weight"].shape == (768, 64, 4, 4)
    assert sd["streams.semseg.decoder.out_proj.weight"].shape == (133 * 16, 256)
    assert sd["streams.rgb.decoder.out_proj.weight"].shape == (768, 256)
    assert sd["streams.depth.decoder.out_proj.weight"].shape == (256, 256)
    assert sd["encoder.cls_token"].shape == (1, 1, 768)


def write_folder(root: Path, classes=("a", "b"), per_class=3, size=40, drop=None):
    rng = np.random.default_rng(0)
    for split in ("train",):
        for c in classes:
            for i in range(per_class):
                for task in ("rgb", "depth", "semseg"):
                    d = root / split / task / c
                    d.mkdir(parents=True, exist_ok=True)
                    if drop == (task, c, i):
                        continue
                    if task == "rgb":
                        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(d / f"{i}.jpg")
                    elif task == "depth":
                        Image.fromarray(rng.integers(0, 60000, (size, size + 8), dtype=np.uint16)).save(d / f"{i}.png")
                    else:
                        Image.fromarray(rng.integers(0, 5, (size, size + 8), dtype=np.uint8), mode="L").save(d / f"{i}.png")


def test_multitask_folder_reads_aligned_tasks(tmp_path):
    write_folder(tmp_path)
    ds = MultiTaskFolder("train", augment=True, root=str(tmp_path), input_size=32, semseg_stride=4)
    assert len(ds) == 6 and ds.classes == ["a", "b"] and sample_labels(ds) == [0, 0, 0, 1, 1, 1]
    torch.manual_seed(0)
    item = ds[4]
    assert item["rgb"].shape == (3, 32, 32) and item["depth"].shape == (1, 32, 32)
    assert item["semseg"].shape == (8, 8) and item["semseg"].dtype == torch.int64 and int(item["semseg"].max()) < 5
    assert item["label"] == 1 and abs(float(item["depth"].mean())) < 0.5  # standardised
    plain = MultiTaskFolder("train", augment=False, root=str(tmp_path), input_size=32)
    a, b = plain[0], plain[0]
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["semseg"], b["semseg"])


def test_multitask_folder_crop_and_flip_are_shared_across_tasks(tmp_path):
    root = tmp_path
    grad = np.tile(np.arange(64, dtype=np.uint8)[None, :] * 4, (64, 1))
    for task in ("rgb", "depth", "semseg"):
        (root / "train" / task / "c").mkdir(parents=True)
    Image.fromarray(np.stack([grad] * 3, -1)).save(root / "train" / "rgb" / "c" / "x.png")
    Image.fromarray(grad.astype(np.uint16) * 256).save(root / "train" / "depth" / "c" / "x.png")
    Image.fromarray(grad // 64, mode="L").save(root / "train" / "semseg" / "c" / "x.png")
    ds = MultiTaskFolder("train", augment=True, root=str(root), input_size=32, semseg_stride=4,
                         standardize_depth=False, hflip=1.0)
    torch.manual_seed(3)
    item = ds[0]
    # a left-to-right ramp, flipped: every task now decreases from left to right
    assert item["rgb"][0, 0, 0] > item["rgb"][0, 0, -1]
    assert item["depth"][0, 0, 0] > item["depth"][0, 0, -1]
    assert item["semseg"][0, 0] >= item["semseg"][0, -1]


def test_multitask_folder_names_missing_files(tmp_path):
    write_folder(tmp_path, drop=("depth", "b", 1))
    with pytest.raises(DataError, match="depth: 1 samples.*b/1"):
        MultiTaskFolder("train", augment=False, root=str(tmp_path))
    with pytest.raises(DataError, match="no such folder"):
        MultiTaskFolder("val", augment=False, root=str(tmp_path))


def test_derived_modalities():
    sil = torch.zeros(9, 9, dtype=torch.bool)
    sil[2:7, 2:7] = True
    depth = erosion_depth(sil, 8)
    assert depth[4, 4] == 3 and depth[2, 2] == 1 and depth[0, 0] == 0
    z = truncated_standardize(torch.arange(100.0))
    assert abs(float(z.mean())) < 1e-5
    raw = torch.linspace(0, 1, 81).reshape(9, 9)
    seg = intensity_segments(raw, raw > 0.1, 3)
    assert set(seg.unique().tolist()) == {0, 1, 2, 3} and seg[0, 0] == 0 and seg[-1, -1] == 3
    assert torch.isfinite(truncated_standardize(torch.zeros(5, 5))).all()  # blank depth: no NaN
    ds = registry.build("dataset", {"name": "image_derived"}, split="test", augment=False)
    item = ds[0]
    assert item["depth"].shape == item["image"].shape and item["semseg"].shape == item["image"].shape[1:]
    assert int(item["semseg"].max()) <= 3


def test_paired_data_joins_two_plugins_on_labels():
    spec = {"series": {"name": "synthetic_signals", "num_samples": 60}, "images": {"name": "fashion_mnist", "max_samples": 300}}
    ds = PairedDataset("train", augment=False, parts=spec)
    assert len(ds) == 60 and ds.num_classes == 6
    for i in (0, 7, 59):
        item = ds[i]
        assert set(item) == {"series", "image", "label"}
        partner = ds.parts["images"][ds.partner("images", i)]
        assert partner["label"] == item["label"] and torch.equal(partner["image"], item["image"])
    assert ds.partner("images", 3) == PairedDataset("train", augment=False, parts=spec).partner("images", 3)
    aug = PairedDataset("train", augment=True, parts=spec)
    torch.manual_seed(0)
    picks = {aug.partner("images", 3) for _ in range(20)}
    assert len(picks) > 1, "with augment the partner changes between epochs"


def test_paired_data_errors_name_the_part():
    with pytest.raises(DataError, match="part 'series'.*label \\[6, 7, 8, 9\\]"):
        PairedDataset("train", augment=False, parts={"images": {"name": "fashion_mnist", "max_samples": 100},
                                                     "series": {"name": "synthetic_signals", "num_samples": 30}})
    with pytest.raises(DataError, match="both give the item key 'image'"):
        PairedDataset("train", augment=False, parts={"a": {"name": "fashion_mnist", "max_samples": 50},
                                                     "b": {"name": "fashion_mnist", "max_samples": 50}})[0]
