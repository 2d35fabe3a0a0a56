"""Packing every modality's default dataset to shards and decoding it back: the same items as from files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from mmim import registry
from mmim.config.recipe import read_yaml
from mmim.data import pack as pack_module
from mmim.data.errors import DataError
from mmim.data.loading import SeededDataset, mix_seed
from mmim.data.pack import pack
from mmim.data.records import build_decoder
from mmim.data.shards import MemberRange, iter_samples, resolve, verify
from mmim.data.stream import ShardStream

MODALITIES = ["image", "video", "points", "audio", "multimodal", "timeseries"]
SAMPLES = 12


def default_dataset(modality: str) -> dict:
    """The training dataset of the modality plugin's default recipe, cut to a few samples."""
    from mmim.recipes_catalog import default_recipe

    recipe = read_yaml(default_recipe(modality))
    spec = dict(recipe["data"]["dataset"])
    inner = "image" if spec["name"] == "image_derived" else None
    if inner:
        spec[inner] = {**spec[inner], "max_samples": SAMPLES}
    elif spec["name"] in ("primitives", "synthetic_signals"):
        spec["num_samples"] = SAMPLES
    else:
        spec["max_samples"] = SAMPLES
    return spec


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    return int(a) == int(b)


@pytest.mark.parametrize("modality", MODALITIES)
def test_packed_samples_decode_to_the_file_items(modality, tmp_path, timeseries_plugin):
    spec = default_dataset(modality)
    index = pack(spec, tmp_path / "shards", samples_per_shard=5, progress=False)
    files = registry.build("dataset", spec, split="train", augment=True)
    assert index["num_samples"] == len(files) and [s["samples"] for s in index["shards"]] == [5, 5, len(files) - 10]
    assert verify(tmp_path / "shards") == []
    decoder = build_decoder(spec, "train", augment=True)
    stream = ShardStream(resolve(str(tmp_path / "shards")), decoder, seed=7)
    stream.set_position(3, [0])
    seen = []
    for url in stream.shards.urls:
        for key, members in iter_samples(url):
            i = int(key)
            got = stream.decode(url, key, members)
            want = SeededDataset(files)[(i, mix_seed(7, 3, i, 1))]
            assert set(got) == set(want), modality
            assert all(_equal(got[k], want[k]) for k in want), (modality, i)
            seen.append(i)
    assert seen == list(range(len(files)))


def test_pack_keeps_the_original_file_bytes(tmp_path):
    spec = default_dataset("audio")
    pack(spec, tmp_path / "s", samples_per_shard=100, progress=False)
    files = registry.build("dataset", spec, split="train", augment=False)
    (key, members), = list(iter_samples(str(tmp_path / "s" / "train-000000.tar")))[:1]
    path = files.samples[int(key)][0]
    assert members[Path(path).suffix.lstrip(".")] == Path(path).read_bytes()
    assert json.loads(members["json"])["source"] == path


class Interrupted(Exception):
    """Stands in for a kill in the middle of a pack."""


def test_pack_resumes_after_an_interruption(tmp_path, monkeypatch):
    spec = default_dataset("image")
    real, calls, armed = pack_module.write_shard, [], [True]

    def failing(dataset, path, indices, skip_corrupt):
        calls.append(path.name)
        if len(calls) == 2 and armed[0]:
            armed[0] = False
            raise Interrupted
        return real(dataset, path, indices, skip_corrupt)

    monkeypatch.setattr(pack_module, "write_shard", failing)
    with pytest.raises(Interrupted):
        pack(spec, tmp_path / "s", samples_per_shard=4, progress=False)
    assert not (tmp_path / "s" / "index.json").exists()
    calls.clear()
    index = pack(spec, tmp_path / "s", samples_per_shard=4, progress=False)
    assert calls == ["train-000001.tar", "train-000002.tar"]  # shard 0 was finished before the interruption
    assert index["num_samples"] == SAMPLES and verify(tmp_path / "s") == []
    assert not list((tmp_path / "s").glob("*.done.json")) and not list((tmp_path / "s").glob("*.tmp"))


def test_pack_refuses_another_dataset_in_an_unfinished_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "pack.json").write_text(json.dumps({"dataset": {"name": "x"}, "split": "train",
                                                          "num_samples": 1, "samples_per_shard": 1}))
    with pytest.raises(DataError, match="another dataset"):
        pack(default_dataset("image"), tmp_path / "s", progress=False)


def test_pack_names_an_unreadable_source_file(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "img" / cls / "0.png")
    broken = tmp_path / "img" / "b" / "1.png"
    os.symlink(tmp_path / "nowhere.png", broken)
    spec = {"name": "image_folder", "root": str(tmp_path / "img"), "in_chans": 1, "img_size": 8, "mean": 0.5, "std": 0.25}
    with pytest.raises(DataError, match=str(broken)):
        pack(spec, tmp_path / "s", progress=False)
    index = pack(spec, tmp_path / "s2", skip_corrupt=True, progress=False)
    assert index["num_samples"] == 2 and str(broken) in index["skipped"][0]


def test_shard_size_in_bytes_chooses_samples_per_shard(tmp_path):
    spec = default_dataset("image")
    one = len(pack_module.record_of(registry.build("dataset", spec, split="train", augment=False), 0)["png"])
    index = pack(spec, tmp_path / "s", shard_bytes=4 * (one + 2048), progress=False)
    assert 1 < index["samples_per_shard"] < SAMPLES and len(index["shards"]) > 1


def test_parallel_pack_writes_the_same_shards(tmp_path):
    spec = default_dataset("image")
    a = pack(spec, tmp_path / "a", samples_per_shard=3, progress=False)
    b = pack(spec, tmp_path / "b", samples_per_shard=3, workers=2, progress=False)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


@pytest.mark.parametrize("modality", MODALITIES)
def test_every_modality_trains_from_its_packed_default_data(modality, tmp_path, timeseries_plugin):
    from mmim.config.recipe import recipe_from_dict
    from mmim.engine.checkpoint import load_checkpoint
    from mmim.engine.trainer import Trainer
    from mmim.recipes_catalog import default_recipe

    spec = default_dataset(modality)
    pack(spec, tmp_path / "shards", samples_per_shard=3, progress=False)
    data = read_yaml(default_recipe(modality))
    data["data"].update(dataset=spec, shards=str(tmp_path / "shards"), batch_size=2, num_workers=0)
    data["train"].update(out_dir=str(tmp_path / "run"), effective_batch_size=None, progress=False, tensorboard=False)
    data["schedule"].update(epochs=1, max_steps=2)
    data["eval"]["after_train"] = False
    summary = Trainer(recipe_from_dict(data)).fit()
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    assert load_checkpoint(tmp_path / "run")["data"]["stream"]["ranks"][0]["consumed"] == [4]


def test_pack_and_train_from_the_command_line(tmp_path, capsys):
    from mmim.cli import main

    out, samples = tmp_path / "shards", SAMPLES * 2
    assert main(["pack", "--modality", "image", str(out), f"data.dataset.max_samples={samples}",
                 "--samples-per-shard", "6", "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"packed {samples} samples of fashion_mnist (train) into 4 shards" in printed
    assert f"train with data.shards={out}, or probe with eval.train_shards={out}" in printed
    assert main(["pack", "--modality", "image", "--split", "test", str(tmp_path / "t"),
                 f"data.dataset.max_samples={samples}"]) == 0
    printed = capsys.readouterr().out
    assert "(test)" in printed and f"probe with eval.test_shards={tmp_path / 't'}" in printed and "data.shards" not in printed
    assert main(["pack", "--verify", str(out)]) == 0
    (out / "train-000002.tar").write_bytes(b"tampered")
    assert main(["pack", "--verify", str(out)]) == 1
    assert "train-000002.tar" in capsys.readouterr().out
    assert main(["pack", "--modality", "image", str(tmp_path / "x"), "--shard-size", "lots"]) == 1
    assert "--shard-size 'lots'" in capsys.readouterr().err


def test_cli_shard_size_units():
    from mmim.cli import _size

    assert _size("256MB") == 256 << 20 and _size("1GB") == 1 << 30 and _size("1.5KB") == 1536 and _size("100") == 100 and _size("2G") == 2 << 30


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_folder_datasets_decode_shards_without_their_files(modality, tmp_path):
    """``shard_decoder``: a node with only the shards decodes the same items as the files gave."""
    import shutil

    files = registry.build("dataset", default_dataset(modality), split="train", augment=False)
    root = tmp_path / "folder"
    for i in range(6):
        path, label = files.samples[i][0], files.samples[i][1]
        (root / f"class{label}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / f"class{label}" / f"{i}{Path(path).suffix}")
    spec = {"name": f"{modality}_folder", "root": str(root)}
    spec.update({"num_frames": 4, "img_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3} if modality == "video" else
                {"target_frames": 32, "num_mel_bins": 32})
    pack(spec, tmp_path / "shards", samples_per_shard=4, progress=False)
    folder = registry.build("dataset", spec, split="train", augment=True)
    want = {i: SeededDataset(folder)[(i, mix_seed(1, 0, i, 1))] for i in range(len(folder))}
    shutil.rmtree(root)
    stream = ShardStream(resolve(str(tmp_path / "shards")), build_decoder(spec, "train", augment=True), seed=1)
    for url in stream.shards.urls:
        for key, members in iter_samples(url):
            got = stream.decode(url, key, members)
            assert all(_equal(got[k], want[int(key)][k]) for k in want[int(key)]), (modality, key)


def test_multitask_folders_pack_every_task_and_decode_without_the_folders(tmp_path):
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "multimodal"))
    from test_recipes_and_data import write_folder

    write_folder(tmp_path / "mt")
    spec = {"name": "multitask_folder", "root": str(tmp_path / "mt"), "input_size": 32, "semseg_stride": 4}
    pack(spec, tmp_path / "shards", samples_per_shard=4, progress=False)
    (key, members), = list(iter_samples(str(tmp_path / "shards" / "train-000000.tar")))[:1]
    assert sorted(members) == ["depth.png", "json", "rgb.jpg", "semseg.png"]
    folder = registry.build("dataset", spec, split="train", augment=True)
    want = {i: SeededDataset(folder)[(i, mix_seed(2, 0, i, 1))] for i in range(len(folder))}
    shutil.rmtree(tmp_path / "mt")
    stream = ShardStream(resolve(str(tmp_path / "shards")), build_decoder(spec, "train", augment=True), seed=2)
    count = 0
    for url in stream.shards.urls:
        for key, members in iter_samples(url):
            got = stream.decode(url, key, members)
            assert set(got) == set(want[int(key)]) and all(_equal(got[k], want[int(key)][k]) for k in got)
            count += 1
    assert count == len(want)


def test_cli_pack_split_and_skip_corrupt(tmp_path, capsys):
    import yaml
    from PIL import Image

    from mmim.cli import main
    from mmim.recipes_catalog import default_recipe

    assert main(["pack", "--modality", "image", str(tmp_path / "t"), "--split", "test", "data.dataset.max_samples=8",
                 "--samples-per-shard", "8"]) == 0
    assert json.loads((tmp_path / "t" / "index.json").read_text())["split"] == "test"
    assert (tmp_path / "t" / "test-000000.tar").is_file()
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "img" / cls / "0.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "img" / "b" / "1.png")
    recipe = tmp_path / "r.yaml"
    data = read_yaml(default_recipe("image"))
    data["data"]["dataset"] = {"name": "image_folder", "root": str(tmp_path / "img"), "in_chans": 1, "img_size": 8,
                               "mean": 0.5, "std": 0.25}
    recipe.write_text(yaml.safe_dump(data))
    assert main(["pack", str(recipe), str(tmp_path / "s")]) == 1
    assert str(tmp_path / "img" / "b" / "1.png") in capsys.readouterr().err
    assert main(["pack", str(recipe), str(tmp_path / "s2"), "--skip-corrupt"]) == 0
    assert "packed 2 samples of image_folder (train) into 1 shards in" in capsys.readouterr().out


def test_point_files_keep_their_original_bytes_and_decode_to_the_file_items(tmp_path):
    """A point folder's meshes and clouds travel as their own files (OFF, XYZ, PLY), not as
    re-encoded arrays; a mesh is sampled with the original file's seed, so shards give its points."""
    cube_v = "\n".join(f"{x} {y} {z}" for x in (-1, 1) for y in (-1, 1) for z in (-1, 1))
    quads = "4 0 1 3 2\n4 4 6 7 5\n4 0 4 5 1\n4 2 3 7 6\n4 0 2 6 4\n4 1 5 7 3"
    for cls in ("cube", "blob"):
        (tmp_path / "src" / cls).mkdir(parents=True)
    (tmp_path / "src" / "cube" / "a.off").write_text(f"OFF\n8 6 0\n{cube_v}\n{quads}\n")
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(64, 3, generator=g).tolist()
    (tmp_path / "src" / "blob" / "c.xyz").write_text("\n".join(" ".join(f"{v:.6f}" for v in r) for r in rows))
    header = "ply\nformat ascii 1.0\nelement vertex 64\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "src" / "blob" / "d.ply").write_text(header + "\n".join(" ".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    spec = {"name": "point_folder", "root": str(tmp_path / "src"), "num_points": 32, "mesh_points": 500, "min_points": 8}
    pack(spec, tmp_path / "shards", samples_per_shard=10, progress=False)
    files = registry.build("dataset", spec, split="train", augment=True)
    members = {Path(json.loads(m["json"])["source"]).name: m for _, m in iter_samples(str(tmp_path / "shards" / "train-000000.tar"))}
    for path in files.files:
        ext = path.suffix.lstrip(".")
        assert members[path.name][ext] == path.read_bytes(), path.name  # the original bytes, not an .npy
        assert "npy" not in members[path.name]
    decoder = build_decoder(spec, "train", augment=True)
    stream = ShardStream(resolve(str(tmp_path / "shards")), decoder, seed=7)
    stream.set_position(0, [0])
    for url in stream.shards.urls:
        for key, raw_members in iter_samples(url):
            i = int(key)
            got = stream.decode(url, key, raw_members)
            want = SeededDataset(files)[(i, mix_seed(7, 0, i, 1))]
            assert torch.equal(got["points"], want["points"]) and got["label"] == want["label"], files.files[i].name


def paired_dataset() -> dict:
    """The ``paired`` dataset of the audio-visual recipe, its anchor (first part) cut to a few samples."""
    from mmim.recipes_catalog import find_recipe

    spec = dict(read_yaml(find_recipe("multimae_video_audio"))["data"]["dataset"])
    assert spec["name"] == "paired"
    anchor = next(iter(spec["parts"]))
    spec["parts"] = {**spec["parts"], anchor: {**spec["parts"][anchor], "max_samples": 3 * SAMPLES}}
    return spec


def test_paired_samples_pack_every_part_and_decode_to_the_fixed_pairing(tmp_path):
    spec = paired_dataset()
    pack(spec, tmp_path / "shards", samples_per_shard=16, progress=False)
    files = registry.build("dataset", spec, split="train", augment=False)
    parts = list(spec["parts"])
    key, members = next(iter_samples(str(tmp_path / "shards" / "train-000000.tar")))
    meta = json.loads(members["json"])
    assert sorted(meta["parts"]) == sorted(parts) and meta[files.pair_by] == files.labels[int(key)]
    for name in parts:  # each part's members are its own original file bytes
        (ext, data), = [(e, v) for e, v in members.items() if e.startswith(f"{name}.")]
        source = meta["parts"][name]["source"]
        assert ext == f"{name}.{Path(source).suffix.lstrip('.').lower()}" and data == Path(source).read_bytes()
    for augment in (False, True):
        decoder = build_decoder(spec, "train", augment=augment)
        stream = ShardStream(resolve(str(tmp_path / "shards")), decoder, seed=5)
        count = 0
        for url in stream.shards.urls:
            for key, members in iter_samples(url):
                got = stream.decode(url, key, members)
                i = int(key)
                want = SeededDataset(files)[(i, mix_seed(5, 0, i, 1))]
                assert set(got) == set(want)
                if augment:  # each part augments through its own reader: same shapes and label, other pixels
                    assert all(not isinstance(v, torch.Tensor) or v.shape == got[k].shape for k, v in want.items())
                    assert int(got[files.pair_by]) == files.labels[i]
                else:  # without augmentation a shard gives exactly the file item of the fixed pairing
                    assert all(_equal(got[k], want[k]) for k in want), i
                count += 1
        assert count == len(files)


def test_paired_part_names_must_name_shard_members(tmp_path):
    spec = paired_dataset()
    spec["parts"] = {("Video" if name == "video" else name): part for name, part in spec["parts"].items()}
    with pytest.raises(DataError, match="'Video'.*lower case"):
        pack(spec, tmp_path / "shards", samples_per_shard=16, progress=False)


def _tar(path: Path, members: list[tuple[str, bytes]]) -> str:
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_lazy_members_are_ranges_of_the_shard_file(tmp_path):
    big = os.urandom(300_000)
    url = _tar(tmp_path / "s.tar", [("000000000.big", big), ("000000000.json", b'{"label": 1}'),
                                     ("000000001.big", big[::-1]), ("000000001.json", b'{"label": 2}')])
    plain = list(iter_samples(url))
    mapped = list(iter_samples(url, {"big"}))
    assert [k for k, _ in plain] == [k for k, _ in mapped] == ["000000000", "000000001"]
    for (_, a), (_, b) in zip(plain, mapped):
        assert isinstance(a["big"], bytes) and isinstance(b["big"], MemberRange)
        assert isinstance(b["json"], bytes)  # only the named extensions are left in the file
        assert bytes(b["big"]) == a["big"] and b["json"] == a["json"] and len(b["big"]) == len(a["big"])
        assert b["big"][1000:1010] == a["big"][1000:1010] and b["big"][-5:] == a["big"][-5:] and b["big"][7:7] == b""
    # a shard cut after the stream read its headers: the read names the file and the range
    late = list(iter_samples(url, {"big"}))[0][1]["big"]
    Path(url).write_bytes(Path(url).read_bytes()[:1000])
    with pytest.raises(DataError, match="s.tar: shard ends inside a member"):
        late[600:900]
    # a member cut short by a truncated file is a broken shard, named, not a short view
    cut = tmp_path / "cut.tar"
    cut.write_bytes(Path(url).read_bytes()[:400_000])
    with pytest.raises(DataError, match="cut.tar: broken shard"):
        list(iter_samples(str(cut), {"big"}))


def test_the_stream_maps_what_the_dataset_names(tmp_path):
    url = _tar(tmp_path / "train-000000.tar", [("000000000.big", b"x" * 5000), ("000000000.json", b"{}")])
    (tmp_path / "index.json").write_text(json.dumps({"format": "mmim-shards", "num_samples": 1, "shards": [
        {"name": "train-000000.tar", "samples": 1, "bytes": os.path.getsize(url), "sha256": ""}]}))
    seen = []

    class Decoder:
        def shard_record(self, index):
            raise NotImplementedError

        def decode_record(self, record, where):
            seen.append(type(record["big"]))
            return {"x": torch.zeros(1)}

    for lazy, kind in ((None, bytes), ({"big"}, MemberRange)):
        decoder = Decoder()
        if lazy:
            decoder.lazy_members = lazy
        stream = ShardStream(resolve(str(tmp_path)), decoder, seed=0, shuffle_buffer=1)
        stream.set_position(0, [0])
        list(stream)
        assert seen.pop() is kind
