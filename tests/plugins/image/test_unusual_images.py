"""The image reader on a corpus of unusual and broken files generated here: EXIF orientation, high bit
depths scaled (not clipped), every still format found by the folder scan, palette/alpha/CMYK modes, and
clear errors naming the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, features
from unusual_images import STORED, pattern, png16, tiff

from mmim.data import CorruptSampleError
from mmim_image.datasets import ImageFolder
from mmim_image.datasets.image_folder import scan
from mmim_image.still import load_still, still_extensions

RAMP16 = np.linspace(0, 65535, 12 * 20).reshape(12, 20).round().astype(np.uint16)


def _exif_file(path, orientation, fmt):
    img = Image.fromarray(np.ascontiguousarray(STORED[orientation](pattern())))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return str(path)


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    want = torch.from_numpy(pattern()).permute(2, 0, 1)
    png = load_still(_exif_file(tmp_path / "o.png", orientation, "PNG"), 3)
    assert torch.equal(png, want)
    jpeg = load_still(_exif_file(tmp_path / "o.jpg", orientation, "JPEG"), 3)
    assert jpeg.shape == want.shape and (jpeg.float() - want.float()).abs().mean() < 12  # lossy
    grey = load_still(_exif_file(tmp_path / "g.png", orientation, "PNG"), 1)
    assert grey.shape == (1, *want.shape[1:])


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    want = torch.from_numpy(RAMP16.astype(np.float32) / 65535)[None]
    for path in (png16(tmp_path / "g.png", RAMP16), tiff(tmp_path / "g.tif", RAMP16),
                 tiff(tmp_path / "gbe.tif", RAMP16, ">")):
        x = load_still(str(path), 1)
        assert x.dtype == torch.float32 and torch.allclose(x, want, atol=1e-6), path.name
        assert len(torch.unique(x)) > 200  # not 2 levels (clipped to black and white) nor 256
        rgb = load_still(str(path), 3)
        assert rgb.shape == (3, 12, 20) and torch.equal(rgb[0], rgb[2])


def test_sixteen_bit_rgb_keeps_its_range(tmp_path):
    rgb = np.stack([RAMP16, RAMP16[::-1], np.full_like(RAMP16, 32768)], -1)
    for path in (png16(tmp_path / "c.png", rgb), tiff(tmp_path / "c.tif", rgb)):
        x = load_still(str(path), 3).float() / 255  # Pillow reads 16-bit RGB as 8-bit RGB (its high byte)
        want = torch.from_numpy(rgb.astype(np.float32) / 65535).permute(2, 0, 1)
        assert (x - want).abs().max() < 1 / 255 + 1e-6, path.name


def test_thirty_two_bit_integer_and_float_tiff(tmp_path):
    u32 = np.linspace(0, 2**32 - 1, 240).reshape(12, 20).astype(np.uint32)
    x = load_still(str(tiff(tmp_path / "u32.tif", u32)), 1)[0]
    assert torch.allclose(x, torch.from_numpy(u32 / (2**32 - 1)).float(), atol=1e-6)  # no int32 wrap-around
    i32 = np.linspace(-(2**31), 2**31 - 1, 240).reshape(12, 20).astype(np.int32)
    x = load_still(str(tiff(tmp_path / "i32.tif", i32)), 1)[0]
    assert x.min() == 0 and x.max() == 1 and bool((x.flatten().diff() >= 0).all())
    unit = np.linspace(0.1, 0.7, 240).reshape(12, 20).astype(np.float32)
    assert torch.allclose(load_still(str(tiff(tmp_path / "f.tif", unit)), 1)[0], torch.from_numpy(unit))
    metres = np.linspace(-3.0, 40.0, 240).reshape(12, 20).astype(np.float32)  # outside [0, 1]: stretched
    x = load_still(str(tiff(tmp_path / "m.tif", metres)), 1)[0]
    assert x.min() == 0 and x.max() == 1 and torch.allclose(x, torch.from_numpy((metres + 3) / 43), atol=1e-6)


def test_image_scaling_stretches_each_image(tmp_path):
    twelve_bit = (RAMP16 // 16).astype(np.uint16)  # a 12-bit camera's values in a 16-bit file
    path = str(png16(tmp_path / "cam.png", twelve_bit))
    assert load_still(path, 1, scaling="dtype").max() < 0.07
    x = load_still(path, 1, scaling="image")
    assert x.min() == 0 and x.max() == 1
    with pytest.raises(ValueError, match="scaling"):
        ImageFolder("train", False, root=str(tmp_path), scaling="percentile")


def test_twelve_bit_pgm_and_one_bit_bmp(tmp_path):
    values = np.array([[0, 1000, 3000, 4095]] * 2, ">u2")
    (tmp_path / "g.pgm").write_bytes(b"P5\n4 2\n4095\n" + values.tobytes())
    x = load_still(str(tmp_path / "g.pgm"), 1)[0, 0]
    assert torch.allclose(x, torch.tensor([0, 1000, 3000, 4095]) / 4095, atol=1e-4)
    Image.fromarray(np.eye(8, dtype=bool)).save(tmp_path / "b.bmp")
    b = load_still(str(tmp_path / "b.bmp"), 1)
    assert b.dtype == torch.uint8 and set(b.unique().tolist()) == {0, 255}


def test_alpha_is_composited_not_dropped(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)  # black, fully transparent except one opaque red pixel
    rgba[0, 0] = (255, 0, 0, 255)
    rgba[1, 1] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    x = load_still(str(tmp_path / "a.png"), 3)
    assert x[:, 5, 5].tolist() == [255, 255, 255] and x[:, 0, 0].tolist() == [255, 0, 0]
    assert 120 <= x[0, 1, 1] <= 135
    grey = load_still(str(tmp_path / "a.png"), 1, background=(0, 0, 0))
    assert grey[0, 5, 5] == 0
    Image.fromarray(rgba[..., [0, 3]].copy(), "LA").save(tmp_path / "la.png")
    assert load_still(str(tmp_path / "la.png"), 1)[0, 5, 5] == 255


def test_palette_with_transparency_and_gif_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
              for v in (10, 200, 90)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    assert abs(int(load_still(str(tmp_path / "anim.gif"), 1)[0, 0, 0]) - 10) <= 2  # the first frame
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0, 250, 10, 10] + [0] * 762)
    p.putpixel((2, 2), 1)
    p.info["transparency"] = 0
    p.save(tmp_path / "t.gif", transparency=0)
    x = load_still(str(tmp_path / "t.gif"), 3)
    assert x[:, 0, 0].tolist() == [255, 255, 255] and x[:, 2, 2].tolist() == [250, 10, 10]
    pages = [Image.fromarray(np.full((6, 6), v, np.uint8)) for v in (33, 99)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    assert load_still(str(tmp_path / "pages.tif"), 1)[0, 0, 0] == 33


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_the_right_rgb(tmp_path, fmt):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in print colours
    cmyk.save(tmp_path / f"c.{fmt.lower()}", format=fmt)
    x = load_still(str(tmp_path / f"c.{fmt.lower()}"), 3).float()
    assert x[0].mean() > 230 and x[1].mean() < 25 and x[2].mean() < 25


def test_every_pillow_still_format_is_found_by_the_scan(tmp_path):
    exts = still_extensions()
    for ext in (".gif", ".tif", ".tiff", ".webp", ".bmp", ".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".tga", ".ico"):
        assert ext in exts
    assert ".mpg" not in exts and ".eps" not in exts  # identified by Pillow, not decoded without help
    formats = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "tif": "TIFF", "bmp": "BMP", "ppm": "PPM",
               "tga": "TGA", "ico": "ICO", "pcx": "PCX", "sgi": "SGI", "qoi": "QOI", "dds": "DDS"}
    if features.check("webp"):
        formats["webp"] = "WEBP"
    if features.check("jpg_2000"):
        formats["jp2"] = "JPEG2000"
    rgb = Image.fromarray(pattern())
    for i, (ext, fmt) in enumerate(sorted(formats.items())):
        folder = tmp_path / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        rgb.save(folder / f"x.{ext.upper() if i % 3 == 0 else ext}", format=fmt)
    _, samples = scan(tmp_path, still_extensions())
    assert len(samples) == len(formats)
    ds = ImageFolder("train", False, root=str(tmp_path), img_size=12, mean=0.5, std=0.5)
    assert len(ds) == len(formats)
    for i in range(len(ds)):
        assert ds[i]["image"].shape == (3, 12, 12)


@pytest.mark.parametrize("case, reason", [
    ("empty", "empty file"), ("garbage", "cannot decode"), ("truncated", "cannot decode"),
    ("nan", "non-finite"), ("float_rgb", "cannot decode"),
])
def test_broken_files_name_the_file(tmp_path, case, reason):
    buf = io.BytesIO()
    Image.fromarray(pattern(64, 64)).save(buf, format="PNG")
    writers = {
        "empty": lambda p: p.write_bytes(b""),
        "garbage": lambda p: p.write_bytes(b"\x89PNG not really" * 20),
        "truncated": lambda p: p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2]),
        "nan": lambda p: tiff(p, np.array([[0.5, np.nan], [0.1, 0.2]], np.float32)),
        "float_rgb": lambda p: tiff(p, np.zeros((4, 4, 3), np.float32)),  # Pillow cannot read it
    }
    path = tmp_path / f"{case}.{'tif' if case in ('nan', 'float_rgb') else 'png'}"
    writers[case](path)
    with pytest.raises(CorruptSampleError, match=reason) as info:
        load_still(str(path), 3)
    assert path.name in str(info.value)


def test_high_bit_images_train_through_the_folder_dataset(tmp_path):
    (tmp_path / "c").mkdir()
    png16(tmp_path / "c" / "a.png", RAMP16)
    ds = ImageFolder("train", True, root=str(tmp_path), img_size=8, in_chans=1, mean=0.0, std=1.0)
    torch.manual_seed(0)
    x = ds[0]["image"]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and len(torch.unique(x)) > 20
