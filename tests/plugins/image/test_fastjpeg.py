"""Training crops of JPEGs decoded by libjpeg-turbo (simplejpeg), cut and resized in uint8 on the crop only,
at reduced DCT size when the crop allows: the same crops as the PIL/torchvision path, within a bounded pixel
difference, and every other file through the old path unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmim_image import fastjpeg
from mmim_image.datasets.image_folder import ImageFolder

pytest.importorskip("simplejpeg")


def smooth(rng, h, w, cell=16):
    small = rng.integers(0, 256, (h // cell + 2, w // cell + 2, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BICUBIC)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(75, 100), (120, 90), (300, 400), (64, 64)]):
        (root / "train" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        smooth(rng, h, w).save(root / "train" / f"c{i % 2}" / f"{i}.jpg", quality=90)
    smooth(rng, 80, 60).save(root / "train" / "c0" / "png.png")
    rotated = smooth(rng, 70, 50)
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(root / "train" / "c1" / "rotated.jpg", exif=exif, quality=90)
    smooth(rng, 60, 80).convert("CMYK").save(root / "train" / "c1" / "cmyk.jpg", quality=90)
    return root


def build(root, augment=True, **options):
    spec = {"img_size": 32, "crop_scale": (0.2, 1.0), **options}
    return ImageFolder("train", augment, root=str(root), **spec)


def items(ds, seed=0):
    out = []
    for i in range(len(ds)):
        torch.manual_seed(seed + i)
        out.append(ds[i]["image"])
    return out


def test_same_crops_as_the_pil_path_within_a_few_levels(folder):
    fast = build(folder, normalize="device", dct_scaling=False)
    pil = build(folder, normalize="device", jpeg_decoder="pil")
    before = fastjpeg.STATS["fast"]
    a, b = items(fast), items(pil)
    plain = [i for i, (p, _) in enumerate(fast.samples) if p.endswith(".jpg") and "rotated" not in p and "cmyk" not in p]
    assert fastjpeg.STATS["fast"] - before == len(plain)  # the switch acts: only plain JPEGs take the fast path
    for i in range(len(a)):
        assert a[i].dtype == torch.uint8 and a[i].shape == b[i].shape
        diff = (a[i].int() - b[i].int()).abs()
        if i in plain:  # the same crop box and flip (torch RNG), the same libjpeg-turbo decode
            assert diff.float().mean() <= 1.0 and diff.max() <= 24, (fast.samples[i], diff.max())
        else:  # PNG, EXIF-rotated and CMYK JPEGs: the old path, unchanged
            assert torch.equal(a[i], b[i])


def test_host_normalisation_of_fast_crops_matches_the_device(folder):
    from mmim.data.device import to_device

    host, device = build(folder), build(folder, normalize="device")
    for a, b in zip(items(host), items(device)):
        moved = to_device({"image": b.unsqueeze(0)}, "cpu", device.device_transforms)["image"][0]
        assert torch.equal(moved, a)


def test_evaluation_never_takes_the_fast_path(folder):
    before = fastjpeg.STATS["fast"]
    assert all(torch.equal(x, y) for x, y in zip(items(build(folder, augment=False)),
                                                  items(build(folder, augment=False, jpeg_decoder="pil"))))
    assert fastjpeg.STATS["fast"] == before


def test_dct_scaling_decodes_large_images_smaller(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "train" / "c0").mkdir(parents=True)
    # detail on the scale of the output's pixels (not finer): a crop of ~500 px to 48 px keeps cells of 80 px
    smooth(rng, 600, 800, cell=80).save(tmp_path / "train" / "c0" / "big.jpg", quality=92)
    scaled, full = build(tmp_path, img_size=48, crop_scale=(0.6, 1.0)), \
        build(tmp_path, img_size=48, crop_scale=(0.6, 1.0), dct_scaling=False)
    reduced = fastjpeg.STATS["reduced"]
    a = items(scaled)[0]
    assert fastjpeg.STATS["reduced"] == reduced + 1  # a crop of >= 465 px to 48 px: decoded at 1/8
    b = items(full)[0]
    assert fastjpeg.STATS["reduced"] == reduced + 1  # dct_scaling=false decodes full size
    diff = (a - b).abs() * 0.226 * 255  # in 8-bit levels (std ~0.226)
    print(f"DCT-scaled vs full decode: mean {float(diff.mean()):.2f}, max {float(diff.max()):.1f} levels")
    assert diff.mean() < 1.5 and diff.max() <= 8  # measured 0.41 / 2.0; a box rounded to reduced pixels gave 6.6 / 25


def test_reduction_keeps_at_least_the_output_pixels():
    assert fastjpeg.reduction(224, 224, 224, 224) == 1
    assert fastjpeg.reduction(448, 500, 224, 224) == 2
    assert fastjpeg.reduction(447, 900, 224, 224) == 1
    assert fastjpeg.reduction(2000, 1800, 224, 224) == 8


def test_bad_options_and_corrupt_jpegs(folder, tmp_path):
    with pytest.raises(ValueError, match="jpeg_decoder"):
        build(folder, jpeg_decoder="turbo")
    (tmp_path / "train" / "c0").mkdir(parents=True)
    good = (folder / "train" / "c0" / "0.jpg").read_bytes()
    (tmp_path / "train" / "c0" / "cut.jpg").write_bytes(good[: len(good) // 3])
    from mmim.data import CorruptSampleError

    with pytest.raises(CorruptSampleError, match="cut.jpg"):
        build(tmp_path)[0]


def test_shard_records_take_the_same_fast_path(folder):
    from mmim.data.records import file_record

    files = build(folder, normalize="device")
    decoder = ImageFolder.shard_decoder("train", True, img_size=32, crop_scale=(0.2, 1.0), normalize="device")
    path, label = files.samples[0]
    before = fastjpeg.STATS["fast"]
    torch.manual_seed(3)
    from_shard = decoder.decode_record(file_record(path, {"label": label}), "shard member 0")["image"]
    assert fastjpeg.STATS["fast"] == before + 1
    torch.manual_seed(3)
    assert torch.equal(from_shard, files[0]["image"])
    with pytest.raises(ValueError, match="jpeg_decoder"):
        ImageFolder.shard_decoder("train", True, jpeg_decoder="turbo")
