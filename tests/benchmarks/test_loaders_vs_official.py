"""``bench_loaders.py --vs-official`` end to end on stand-in checkouts (the real ones are not in CI): the official
sides are built the way the harness builds them (VideoMAE's ``datasets.build_pretraining_dataset(args)``, MAE's
``transform_train`` statement read out of ``main_pretrain.py``), every mmim side and shard variant runs, and the
report has each figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("av")

VIDEOMAE = '''
import av, numpy as np, torch

class _Clips(torch.utils.data.Dataset):
    def __init__(self, setting):
        self.paths = [line.split(" ")[0] for line in open(setting).read().splitlines()]
    def __len__(self):
        return len(self.paths)
    def __getitem__(self, i):
        with av.open(self.paths[i]) as c:
            frames = [f.to_ndarray(format="rgb24") for f, _ in zip(c.decode(video=0), range(16))]
        return torch.zeros(3, 16, 8, 8), np.zeros(4, dtype=bool)

def build_pretraining_dataset(args):
    return _Clips(args.data_path)
'''

MAIN_PRETRAIN = '''
import timm
assert timm.__version__ == "0.3.2"  # as the real one: this file cannot be imported

def main(args):
    transform_train = transforms.Compose([
            transforms.RandomResizedCrop(args.input_size, scale=(0.2, 1.0), interpolation=3),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
'''


def test_vs_official_reports_every_side(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_loaders

    (tmp_path / "off" / "VideoMAE").mkdir(parents=True)
    (tmp_path / "off" / "VideoMAE" / "datasets.py").write_text(VIDEOMAE)
    (tmp_path / "off" / "mae").mkdir()
    (tmp_path / "off" / "mae" / "main_pretrain.py").write_text(MAIN_PRETRAIN)
    sys.modules.pop("datasets", None)
    out = tmp_path / "r.json"
    rc = bench_loaders.main(["--vs-official", "--official-dir", str(tmp_path / "off"), "--data-dir", str(tmp_path / "d"),
                             "--video-sets", "64x48:10", "--clips", "2", "--batch", "2", "--batches", "1",
                             "--rounds", "2", "--num-sample", "1", "2", "--pack", "", "frames=jpeg", "--images", "4",
                             "--json", str(out)])
    sys.modules.pop("datasets", None)
    assert rc == 0
    r = json.loads(out.read_text())
    rows = r["video"]["64x48:10"]
    assert set(rows) == {"official", "mmim num_sample=1", "mmim num_sample=2", "shards original", "shards frames=jpeg"}
    for row in rows.values():
        assert len(row["rounds"]) == 2 and row["clips_per_s"] > 0 and row["cores_per_gpu"] >= 1
    assert rows["official"]["vs_official"] == 1.0
    assert 0 < rows["mmim num_sample=1"]["frames_decoded_per_decode"] <= 300  # counted by the PyAV reader
    assert rows["shards frames=jpeg"]["mb_per_video"] > rows["shards original"]["mb_per_video"] > 0
    assert set(r["image"]) == {"official", "mmim normalize=host", "mmim normalize=device"}


def test_official_transform_is_read_from_the_checkout(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import official_loaders

    (tmp_path / "main_pretrain.py").write_text(MAIN_PRETRAIN.replace("0.2, 1.0", "0.35, 1.0"))
    transform = official_loaders.official_mae_transform(tmp_path)
    assert tuple(transform.transforms[0].scale) == (0.35, 1.0)  # what the file says, not a copy of it
    (tmp_path / "main_pretrain.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="no transform_train"):
        official_loaders.official_mae_transform(tmp_path)


def test_gpu_decode_benchmark_runs_on_the_cpu(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_gpu_decode

    out = tmp_path / "d.json"
    assert bench_gpu_decode.main(["--device", "cpu", "--size", "64x48", "--clips", "2", "--seconds", "1", "--batch", "2",
                                  "--batches", "1", "--data-dir", str(tmp_path / "v"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r["clips_per_s"]) == {"host", "device", "plans only"} and all(v > 0 for v in r["clips_per_s"].values())
    assert r["decoder"].startswith("PyAV on the host")  # no CUDA here
