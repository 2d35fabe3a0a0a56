"""The image plugin's datasets: IDX parsing, the embedded Fashion-MNIST subset, image folders, errors."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmim import registry
from mmim.data import CorruptSampleError, DataError
from mmim_image.datasets import FashionMNIST, ImageFolder, read_idx, write_idx
from mmim_image.datasets.fashion_mnist import CLASSES, FILES, embedded_root
from mmim_image.datasets.idx import encode_idx, parse_idx

FULL = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED = Path(str(embedded_root()))
SCRIPT = Path(__file__).resolve().parents[3] / "plugins/image/scripts/build_embedded_fashion_mnist.py"


@pytest.mark.parametrize("split, per_class", [("train", 600), ("test", 100)])
def test_embedded_idx_files(split, per_class):
    images = read_idx(EMBEDDED / f"{FILES[split][0]}.gz", ndim=3, dtype=torch.uint8)
    labels = read_idx(EMBEDDED / f"{FILES[split][1]}.gz", ndim=1, dtype=torch.uint8)
    assert images.shape == (10 * per_class, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels.long(), minlength=10).tolist() == [per_class] * 10
    assert 0.27 < images.float().mean() / 255 < 0.30  # real clothes, not noise or zeros


def test_embedded_dataset_contract():
    ds = FashionMNIST(split="train", augment=False)
    assert len(ds) == 6000 and ds.num_classes == 10 and ds.classes == CLASSES
    item = ds[0]
    assert set(item) == {"image", "label"}
    assert item["image"].shape == (1, 28, 28) and item["image"].dtype == torch.float32
    assert isinstance(item["label"], int) and item["label"] == int(ds.labels[0])
    torch.testing.assert_close(item["image"], (ds.images[0][None].float() / 255 - 0.2860) / 0.3530)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, 28, 28) and batch["label"].dtype == torch.int64


def test_normalisation_stats_and_val_alias():
    ds = FashionMNIST(split="val", augment=False)
    assert ds.split == "test" and len(ds) == 1000
    x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    assert abs(x.mean()) < 0.02 and abs(x.std() - 1) < 0.02


def test_augmented_items_are_seeded_and_resized():
    ds = FashionMNIST(split="train", augment=True, img_size=32, max_samples=20)
    assert len(ds) == 20
    torch.manual_seed(7)
    a = torch.stack([ds[i]["image"] for i in range(20)])
    torch.manual_seed(7)
    b = torch.stack([ds[i]["image"] for i in range(20)])
    assert a.shape == (20, 1, 32, 32) and torch.equal(a, b)
    torch.manual_seed(8)
    assert not torch.equal(a, torch.stack([ds[i]["image"] for i in range(20)]))
    plain = FashionMNIST(split="test", augment=False, img_size=32, max_samples=5)
    assert plain[0]["image"].shape == (1, 32, 32)


def test_max_samples_is_spread_and_checked():
    ds = FashionMNIST(split="test", augment=False, max_samples=100)
    assert len(ds) == 100 and len(set(ds.labels.tolist())) == 10
    with pytest.raises(ValueError, match="max_samples"):
        FashionMNIST(split="test", augment=False, max_samples=0)
    with pytest.raises(ValueError, match="splits"):
        FashionMNIST(split="holdout", augment=False)
    with pytest.raises(ValueError, match="1 channel"):
        FashionMNIST(split="test", augment=False, mean=(0.5, 0.5, 0.5))


def test_registry_builds_the_dataset():
    ds = registry.build("dataset", {"name": "image:fashion_mnist", "max_samples": 3}, split="test", augment=True)
    assert isinstance(ds, FashionMNIST) and len(ds) == 3
    assert registry.resolve("dataset", "image_folder") is ImageFolder


# ----------------------------------------------------------------------------- IDX errors


def _copy_embedded(tmp_path: Path) -> Path:
    for name in EMBEDDED.glob("t10k-*.gz"):
        shutil.copy(name, tmp_path / name.name)
    return tmp_path


def _rewrite(path: Path, edit) -> None:
    path.write_bytes(gzip.compress(edit(gzip.decompress(path.read_bytes())), mtime=0))


@pytest.mark.parametrize(
    "file, edit, match",
    [
        ("t10k-images-idx3-ubyte.gz", lambda b: b"\x01" + b[1:], "bad IDX magic"),
        ("t10k-images-idx3-ubyte.gz", lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
        ("t10k-images-idx3-ubyte.gz", lambda b: b[:3] + b"\x02" + b[4:], "3 dimensions, header declares 2"),
        ("t10k-images-idx3-ubyte.gz", lambda b: b[:-100], "truncated IDX data"),
        ("t10k-images-idx3-ubyte.gz", lambda b: b[:10], "truncated IDX header"),
        ("t10k-images-idx3-ubyte.gz", lambda b: b + b"\x00", "1 unexpected trailing bytes"),
        ("t10k-labels-idx1-ubyte.gz", lambda b: b[:2] + b"\x0c" + b[3:], "element type torch.uint8"),
        ("t10k-labels-idx1-ubyte.gz", lambda b: b[:8] + b"\x0a" + b[9:], "label 10 at index 0"),
    ],
)
def test_malformed_idx_names_the_file(tmp_path, file, edit, match):
    root = _copy_embedded(tmp_path)
    _rewrite(root / file, edit)
    with pytest.raises(DataError, match=match) as err:
        FashionMNIST(split="test", augment=False, root=str(root))
    assert str(root / file) in str(err.value)


def test_broken_gzip_and_count_mismatch_name_the_files(tmp_path):
    root = _copy_embedded(tmp_path)
    images = root / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:5000])  # truncated download
    with pytest.raises(DataError, match="broken gzip stream") as err:
        FashionMNIST(split="test", augment=False, root=str(root))
    assert str(images) in str(err.value)
    shutil.copy(EMBEDDED / images.name, images)
    labels = root / "t10k-labels-idx1-ubyte.gz"
    write_idx(labels, torch.zeros(999, dtype=torch.uint8))
    with pytest.raises(DataError, match="1000 images but .* 999 labels") as err:
        FashionMNIST(split="test", augment=False, root=str(root))
    assert str(images) in str(err.value) and str(labels) in str(err.value)


def test_missing_root_and_files(tmp_path):
    with pytest.raises(DataError, match="root folder does not exist") as err:
        FashionMNIST(split="train", augment=False, root=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz") as err:
        FashionMNIST(split="train", augment=False, root=str(tmp_path))
    assert str(tmp_path) in str(err.value)


def test_idx_round_trip_and_uncompressed_files(tmp_path):
    x = torch.arange(-6, 6, dtype=torch.int16).view(2, 3, 2)
    assert torch.equal(parse_idx(encode_idx(x)), x)
    (tmp_path / "a.idx").write_bytes(encode_idx(x))
    assert torch.equal(read_idx(tmp_path / "a.idx", ndim=3, dtype=torch.int16), x)
    root = tmp_path / "raw"
    root.mkdir()
    for stem in FILES["test"]:  # uncompressed copies are read too
        (root / stem).write_bytes(gzip.decompress((EMBEDDED / f"{stem}.gz").read_bytes()))
    assert len(FashionMNIST(split="test", augment=False, root=str(root))) == 1000


# ----------------------------------------------------------------------------- full set and build script


def _load_script():
    spec = importlib.util.spec_from_file_location("build_embedded_fashion_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_script_is_balanced_and_reproducible(tmp_path):
    src, out1, out2 = tmp_path / "src", tmp_path / "a", tmp_path / "b"
    src.mkdir()
    for split, n in (("train", 50), ("test", 30)):
        labels = (torch.arange(n) * 7 % 10).to(torch.uint8)
        write_idx(src / f"{FILES[split][0]}.gz", torch.arange(n * 4, dtype=torch.uint8).view(n, 2, 2))
        write_idx(src / f"{FILES[split][1]}.gz", labels)
    script = _load_script()
    for out in (out1, out2):
        script.main(["--source", str(src), "--out", str(out), "--train-per-class", "3", "--test-per-class", "2"])
    for name in sorted(p.name for p in out1.iterdir()):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()
    ds = FashionMNIST(split="train", augment=False, root=str(out1))
    assert torch.bincount(ds.labels).tolist() == [3] * 10
    assert ds.images[:, 0, 0].tolist() == sorted(ds.images[:, 0, 0].tolist())  # kept in file order


def test_full_set_and_embedded_subset_agree():
    if not FULL.is_dir():
        pytest.skip(f"{FULL} not installed (Debian package dataset-fashion-mnist)")
    train = FashionMNIST(split="train", augment=False, root=str(FULL))
    test = FashionMNIST(split="test", augment=False, root=str(FULL))
    assert len(train) == 60000 and len(test) == 10000
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    x = train.images.double() / 255
    assert abs(x.mean() - 0.2860) < 5e-5 and abs(x.std() - 0.3530) < 5e-5  # the default mean/std
    keep = _load_script().balanced_indices(train.labels, 600)
    embedded = FashionMNIST(split="train", augment=False)
    assert torch.equal(embedded.images, train.images[keep]) and torch.equal(embedded.labels, train.labels[keep])


# ----------------------------------------------------------------------------- image folders


def _save(path: Path, image: Image.Image, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/{train,val}/{cat,dog}: RGB and grey PNGs and JPEGs of several sizes, plus non-images."""
    root = tmp_path / "imgs"
    for split in ("train", "val"):
        _save(root / split / "dog" / "a.png", Image.new("RGB", (30, 20), (255, 0, 0)))
        _save(root / split / "dog" / "sub" / "b.JPG", Image.new("RGB", (17, 41), (0, 128, 255)), "JPEG")
        _save(root / split / "cat" / "c.png", Image.new("L", (25, 25), 200))
        _save(root / split / "cat" / "d.jpeg", Image.effect_noise((40, 24), 60).convert("RGB"), "JPEG")
        (root / split / "cat" / "notes.txt").write_text("not an image")
        _save(root / split / "cat" / ".hidden.png", Image.new("L", (4, 4)))
    return root


def test_image_folder_scans_sorted_classes(tree):
    ds = ImageFolder(split="train", augment=False, root=str(tree), img_size=16)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2 and len(ds) == 4
    assert [(Path(p).name, c) for p, c in ds.samples] == [("c.png", 0), ("d.jpeg", 0), ("a.png", 1), ("b.JPG", 1)]
    for i in range(4):
        item = ds[i]
        assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
        assert item["label"] == ds.samples[i][1]


def test_image_folder_pixel_values(tree):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ds = ImageFolder(split="val", augment=False, root=str(tree), img_size=(12, 20))
    red = ds[2]["image"]  # a.png: pure red, 30x20 -> cover-resized and centre-cropped to 12x20
    expected = torch.tensor([(1 - mean[0]) / std[0], (0 - mean[1]) / std[1], (0 - mean[2]) / std[2]])
    torch.testing.assert_close(red, expected.view(3, 1, 1).expand(3, 12, 20))
    grey = ds[0]["image"]  # c.png: grey 200 in mode L, decoded as RGB
    torch.testing.assert_close(grey[:, 0, 0], (200 / 255 - torch.tensor(mean)) / torch.tensor(std))


def test_image_folder_grey_and_augmented(tree):
    ds = ImageFolder(split="train", augment=True, root=str(tree), img_size=(24, 32), in_chans=1, mean=0.5, std=0.5)
    torch.manual_seed(3)
    a = [ds[i]["image"] for i in range(4)]
    torch.manual_seed(3)
    b = [ds[i]["image"] for i in range(4)]
    assert all(x.shape == (1, 24, 32) for x in a) and all(torch.equal(x, y) for x, y in zip(a, b))
    torch.testing.assert_close(ds[0]["image"], torch.full((1, 24, 32), (200 / 255 - 0.5) / 0.5))
    with pytest.raises(ValueError, match="mean has 3 values"):
        ImageFolder(split="train", augment=False, root=str(tree), in_chans=1)
    with pytest.raises(ValueError, match="in_chans"):
        ImageFolder(split="train", augment=False, root=str(tree), in_chans=4)


def test_image_folder_flat_layout_and_max_samples(tmp_path):
    for k in range(3):
        for i in range(4):
            _save(tmp_path / f"class{k}" / f"{i}.bmp", Image.new("RGB", (8, 8), (k * 100, 0, 0)))
    for split in ("train", "val"):  # no split folders: both splits read root itself
        ds = ImageFolder(split=split, augment=False, root=str(tmp_path), img_size=8, max_samples=3)
        assert ds.folder == tmp_path and ds.classes == ["class0", "class1", "class2"]
        assert [label for _, label in ds.samples] == [0, 1, 2]


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"GIF89a nonsense", "cannot decode")])
def test_unreadable_files_raise_corrupt_sample(tree, content, reason):
    bad = tree / "train" / "dog" / "zz.jpg"
    bad.write_bytes(content)
    ds = ImageFolder(split="train", augment=False, root=str(tree), img_size=16)
    index = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(CorruptSampleError, match=reason) as err:
        ds[index]
    assert err.value.path == str(bad) and str(bad) in str(err.value)
    ds[0]  # the others still load


def test_truncated_jpeg_raises_corrupt_sample(tree):
    bad = _save(tree / "val" / "cat" / "e.jpg", Image.effect_noise((64, 48), 80).convert("RGB"), "JPEG")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    ds = ImageFolder(split="val", augment=True, root=str(tree), img_size=16)
    index = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(CorruptSampleError, match="cannot decode") as err:
        ds[index]
    assert err.value.path == str(bad)


def test_image_folder_build_errors_name_the_path(tmp_path, tree):
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match="does not exist") as err:
        ImageFolder(split="train", augment=False, root=str(missing))
    assert str(missing) in str(err.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class folders") as err:
        ImageFolder(split="train", augment=False, root=str(empty))
    assert str(empty) in str(err.value)
    (empty / "a").mkdir()
    (empty / "a" / "x.txt").write_text("")
    with pytest.raises(DataError, match="no images") as err:
        ImageFolder(split="train", augment=False, root=str(empty))
    assert str(empty) in str(err.value)
    with pytest.raises(DataError, match="no split folder 'test' .*train, val") as err:
        ImageFolder(split="test", augment=False, root=str(tree))
    assert str(tree) in str(err.value)
