"""Point-cloud datasets on small files written in each format, including bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmim import registry
from mmim.data import CorruptSampleError, DataError
from mmim_points.datasets import (
    ModelNet40,
    ModelNet40H5,
    PointFolder,
    Primitives,
    ScanObjectNN,
    ShapeNet55,
    normalize_unit_sphere,
    read_point_file,
    sample_points,
    scale_translate,
)

h5py = pytest.importorskip("h5py")


def _cloud(n=100, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32) * 3 + 5


def _check_item(item, n, label):
    assert item["points"].shape == (n, 3) and item["points"].dtype == torch.float32 and item["label"] == label


@pytest.fixture
def modelnet(tmp_path):
    root = tmp_path / "modelnet40_normal_resampled"
    (root / "airplane").mkdir(parents=True)
    (root / "night_stand").mkdir()
    (root / "modelnet40_shape_names.txt").write_text("airplane\nnight_stand\n")
    (root / "modelnet40_train.txt").write_text("airplane_0001\nnight_stand_0001\n")
    (root / "modelnet40_test.txt").write_text("airplane_0002\n")
    for i, name in enumerate(("airplane/airplane_0001", "night_stand/night_stand_0001", "airplane/airplane_0002")):
        normals = np.zeros((100, 3), np.float32)
        rows = np.concatenate([_cloud(seed=i), normals], 1)
        (root / f"{name}.txt").write_text("\n".join(",".join(f"{v:.6f}" for v in r) for r in rows))
    return root


def test_modelnet40_txt(modelnet):
    ds = ModelNet40("train", False, root=str(modelnet), num_points=64)
    assert len(ds) == 2 and ds.classes == ["airplane", "night_stand"] and ds.num_classes == 2
    item = ds[1]
    _check_item(item, 64, 1)
    pts = item["points"]
    assert pts.mean(0).abs().max() < 1e-5 and abs(float(pts.norm(dim=1).max()) - 1) < 1e-5
    assert torch.equal(ds[1]["points"], pts)  # deterministic without augmentation
    aug = ModelNet40("train", True, root=str(modelnet), num_points=64)
    torch.manual_seed(0)
    a = aug[1]["points"]
    torch.manual_seed(0)
    assert torch.equal(aug[1]["points"], a) and not torch.equal(a, pts)
    assert len(ModelNet40("test", False, root=str(modelnet), num_points=64)) == 1


def test_modelnet40_bad_lists_and_files(modelnet):
    (modelnet / "modelnet40_train.txt").write_text("airplane_0001\nairplane_0099\n")
    with pytest.raises(DataError, match=r"modelnet40_train.txt:2: listed file .*airplane_0099.txt does not exist"):
        ModelNet40("train", False, root=str(modelnet))
    (modelnet / "modelnet40_train.txt").write_text("airplane_0001\n\nsofa_0001\n")
    with pytest.raises(DataError, match=r"modelnet40_train.txt:3: .*class 'sofa'"):
        ModelNet40("train", False, root=str(modelnet))
    with pytest.raises(DataError, match="modelnet40_val.txt"):
        ModelNet40("val", False, root=str(modelnet))
    with pytest.raises(DataError, match="does not exist"):
        ModelNet40("train", False, root=str(modelnet / "nope"))
    (modelnet / "modelnet40_train.txt").write_text("airplane_0001\n")
    ds = ModelNet40("train", False, root=str(modelnet), num_points=64)
    bad = modelnet / "airplane" / "airplane_0001.txt"
    for text, reason in (("", "no points"), ("1,2\n3,4\n", "at least 3 columns"), ("1,2,3\n1,nan,3\n", "NaN/inf"),
                         ("1,2,3\n4,5\n", "same column count"), ("1,2,3\n" * 5, "fewer than min_points")):
        bad.write_text(text)
        with pytest.raises(CorruptSampleError, match=reason) as err:
            ds[0]
        assert err.value.path == str(bad)


def _write_h5(path, data, labels):
    with h5py.File(path, "w") as f:
        f["data"] = data
        f["label"] = labels


def test_modelnet40_h5(tmp_path):
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    data = np.stack([_cloud(64, s) for s in range(3)])
    _write_h5(root / "ply_data_train0.h5", data, np.array([[0], [5], [39]], np.uint8))
    (root / "train_files.txt").write_text("data/modelnet40_ply_hdf5_2048/ply_data_train0.h5\n")
    ds = ModelNet40H5("train", False, root=str(root), num_points=32)
    assert len(ds) == 3 and ds.num_classes == 40 and ds.labels == [0, 5, 39]
    _check_item(ds[2], 32, 39)
    data[1, 3, 0] = np.inf
    _write_h5(root / "ply_data_train0.h5", data, np.array([[0], [5], [39]], np.uint8))
    with pytest.raises(CorruptSampleError, match=r"ply_data_train0.h5\[1\]: 1 points with NaN/inf"):
        ModelNet40H5("train", False, root=str(root))[1]
    _write_h5(root / "ply_data_train0.h5", data, np.array([[0], [5], [40]], np.uint8))
    with pytest.raises(DataError, match=r"ply_data_train0.h5: label 40 of sample 2"):
        ModelNet40H5("train", False, root=str(root))
    with h5py.File(root / "ply_data_train0.h5", "w") as f:
        f["data"] = data
    with pytest.raises(DataError, match=r"ply_data_train0.h5: HDF5 file lacks dataset\(s\) \['label'\]"):
        ModelNet40H5("train", False, root=str(root))
    (root / "train_files.txt").write_text("ply_data_train0.h5\nply_data_train7.h5\n")
    with pytest.raises(DataError, match=r"train_files.txt:2: listed file"):
        ModelNet40H5("train", False, root=str(root))


def test_shapenet55(tmp_path):
    root = tmp_path / "ShapeNet55-34"
    (root / "ShapeNet-55").mkdir(parents=True)
    (root / "shapenet_pc").mkdir()
    names = ["02691156-aaa.npy", "03001627-bbb.npy", "02691156-ccc.npy"]
    for i, name in enumerate(names):
        np.save(root / "shapenet_pc" / name, _cloud(200, i))
    (root / "ShapeNet-55" / "train.txt").write_text("\n".join(names[:2]) + "\n")
    (root / "ShapeNet-55" / "test.txt").write_text(names[2] + "\n")
    train = ShapeNet55("train", False, root=str(root), num_points=128, sampling="random")
    test = ShapeNet55("test", False, root=str(root), num_points=128)
    assert train.classes == test.classes == ["02691156", "03001627"]
    assert train.labels == [0, 1] and test.labels == [0]
    torch.manual_seed(1)
    _check_item(train[1], 128, 1)
    (root / "ShapeNet-55" / "test.txt").write_text(names[2] + "\nbadline\n")
    with pytest.raises(DataError, match=r"test.txt:2: expected '<taxonomy>-<model>.npy'"):
        ShapeNet55("test", False, root=str(root))
    (root / "ShapeNet-55" / "test.txt").write_text("02691156-zzz.npy\n")
    with pytest.raises(DataError, match=r"test.txt:1: listed file .*02691156-zzz.npy"):
        ShapeNet55("test", False, root=str(root))
    (root / "shapenet_pc" / names[0]).write_bytes(b"garbage")
    with pytest.raises(CorruptSampleError, match="02691156-aaa.npy"):
        train[0]


def test_scanobjectnn(tmp_path):
    split = tmp_path / "h5_files" / "main_split"
    split.mkdir(parents=True)
    data = np.stack([_cloud(2048, s) for s in range(4)])
    _write_h5(split / "training_objectdataset_augmentedrot_scale75.h5", data, np.array([0, 3, 14, 7]))
    ds = ScanObjectNN("train", False, root=str(tmp_path / "h5_files"))
    assert len(ds) == 4 and ds.num_classes == 15 and ds.classes[14] == "toilet"
    item = ds[2]
    _check_item(item, 2048, 14)
    assert torch.equal(item["points"], torch.from_numpy(data[2]))  # Point-MAE: raw coordinates, all 2048 points
    with pytest.raises(DataError, match="test_objectdataset_augmentedrot_scale75.h5"):
        ScanObjectNN("test", False, root=str(tmp_path / "h5_files"))
    with pytest.raises(DataError, match="main_split_nobg"):
        ScanObjectNN("train", False, root=str(tmp_path / "h5_files"), variant="obj_only")


def test_point_folder_with_meshes(tmp_path):
    cube_v = "\n".join(f"{x} {y} {z}" for x in (-1, 1) for y in (-1, 1) for z in (-1, 1))
    quads = "4 0 1 3 2\n4 4 6 7 5\n4 0 4 5 1\n4 2 3 7 6\n4 0 2 6 4\n4 1 5 7 3"
    (tmp_path / "cube" / "train").mkdir(parents=True)
    (tmp_path / "blob" / "train").mkdir(parents=True)
    (tmp_path / "cube" / "train" / "a.off").write_text(f"OFF\n8 6 0\n{cube_v}\n{quads}\n")
    (tmp_path / "cube" / "train" / "b.off").write_text(f"OFF8 6 0\n{cube_v}\n{quads}\n")  # ModelNet's fused header
    (tmp_path / "blob" / "train" / "c.xyz").write_text("\n".join(" ".join(map(str, r)) for r in _cloud(50)))
    ds = PointFolder("train", False, root=str(tmp_path), num_points=256, mesh_points=2000, min_points=8)
    assert ds.classes == ["blob", "cube"] and ds.labels == [0, 1, 1]
    a = ds[1]["points"]
    assert torch.equal(ds[1]["points"], a) and not torch.equal(ds[2]["points"], a)  # seeded per file
    raw = torch.from_numpy(read_point_file(tmp_path / "cube" / "train" / "a.off", 500))
    assert (raw.abs().max(dim=1).values - 1).abs().max() < 1e-5  # every point on the cube's surface
    _check_item(ds[0], 256, 0)
    (tmp_path / "cube" / "train" / "b.off").write_text("OFF\n3 1 0\n0 0 0\n1 0\n")
    with pytest.raises(CorruptSampleError, match="b.off"):
        ds[2]
    with pytest.raises(DataError, match="no class sub-folders"):
        PointFolder("train", False, root=str(tmp_path / "cube" / "train"))


def test_pcd_ply_obj_files(tmp_path):
    pts = _cloud(20)
    header = "VERSION .7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\nWIDTH 20\nHEIGHT 1\nPOINTS 20\n"
    rows = np.concatenate([pts, np.ones((20, 1), np.float32)], 1)
    (tmp_path / "a.pcd").write_text(header + "DATA ascii\n" + "\n".join(" ".join(map(str, r)) for r in rows))
    (tmp_path / "b.pcd").write_bytes((header + "DATA binary\n").encode() + rows.astype("<f4").tobytes())
    (tmp_path / "c.pcd").write_text(header + "DATA binary_compressed\n")
    np.testing.assert_allclose(read_point_file(tmp_path / "a.pcd"), pts, rtol=1e-6)
    np.testing.assert_array_equal(read_point_file(tmp_path / "b.pcd"), pts)
    with pytest.raises(CorruptSampleError, match=r"c\.pcd.*malformed PCD binary_compressed data"):
        read_point_file(tmp_path / "c.pcd")  # announced but missing (formats: test_points_formats.py)
    pytest.importorskip("trimesh")
    (tmp_path / "t.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    tri = read_point_file(tmp_path / "t.obj", 300)
    assert tri.shape == (300, 3) and np.allclose(tri[:, 2], 0) and (tri[:, :2].sum(1) <= 1 + 1e-6).all()
    import trimesh

    trimesh.PointCloud(pts).export(tmp_path / "p.ply")
    np.testing.assert_allclose(read_point_file(tmp_path / "p.ply"), pts, rtol=1e-6)
    (tmp_path / "bad.ply").write_text("ply\nformat nonsense\n")
    with pytest.raises(CorruptSampleError, match="bad.ply"):
        read_point_file(tmp_path / "bad.ply")
    (tmp_path / "a.abc").write_text("1 2 3\n")
    with pytest.raises(CorruptSampleError, match="unknown point-cloud format '.abc'"):
        read_point_file(tmp_path / "a.abc")


def test_sampling_normalisation_and_augmentation():
    pts = torch.from_numpy(_cloud(10))
    assert torch.equal(sample_points(pts, 25, "fps")[:10], pts) and sample_points(pts, 25).shape == (25, 3)
    assert torch.equal(sample_points(pts, 4, "first"), pts[:4])
    assert sample_points(pts, 4, "fps")[0].equal(pts[0])
    same = normalize_unit_sphere(torch.full((30, 3), 2.0))
    assert torch.isfinite(same).all() and same.abs().max() == 0
    torch.manual_seed(0)
    out = scale_translate(torch.ones(5, 3))
    assert ((out >= 2 / 3 - 0.2) & (out <= 1.5 + 0.2)).all() and not torch.equal(out, torch.ones(5, 3))


def test_primitives_default_dataset():
    ds = registry.build("dataset", {"name": "primitives", "num_samples": 40, "num_points": 128}, split="train", augment=False)
    again = Primitives("train", False, num_samples=40, num_points=128)
    test = Primitives("test", False, num_samples=40, num_points=128)
    assert ds.num_classes == 10 and len(ds) == 40 and torch.bincount(torch.tensor(ds.labels)).eq(4).all()
    assert torch.equal(ds[3]["points"], again[3]["points"]) and not torch.equal(ds[3]["points"], test[3]["points"])
    _check_item(ds[0], 128, ds.labels[0])
    assert abs(float(ds[0]["points"].norm(dim=1).max()) - 1) < 1e-5


def test_items_do_not_alias_in_memory_data():
    ds = Primitives("train", False, num_samples=10, num_points=64)
    item = ds[0]
    item["points"].zero_()
    assert ds[0]["points"].abs().sum() > 0
