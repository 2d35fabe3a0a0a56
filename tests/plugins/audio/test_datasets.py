"""Audio datasets: the embedded digits, data files, ESC-50 / Speech Commands layouts, folders, bad files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mmim.data import CorruptSampleError, DataError
from mmim.data.loading import SeededDataset, collate_skipping
from mmim_audio.datasets import ESC50, AudioFolder, AudioList, SpeechCommands, SpokenDigits
from mmim_audio.datasets.spoken_digits import embedded_root

SMALL = dict(num_mel_bins=32, target_frames=40, backend="torch")  # fast settings for the tests


def _tone(path: Path, freq: float, rate: int = 16000, seconds: float = 0.3, channels: int = 1) -> str:
    t = np.arange(int(rate * seconds)) / rate
    wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.stack([wave] * channels, 1) if channels > 1 else wave, rate)
    return str(path)


def test_embedded_spoken_digits():
    train, test = SpokenDigits("train", augment=False), SpokenDigits("val", augment=False)
    assert (len(train), len(test)) == (360, 120) and train.num_classes == 10 and test.split == "test"
    item = train[0]
    assert item["audio"].shape == (1, 64, 128) and item["audio"].dtype == torch.float32 and item["label"] == 0
    assert torch.isfinite(item["audio"]).all()
    with open(embedded_root() / "index.csv") as f:
        rows = list(csv.DictReader(f))
    voices = {split: {r["voice"] for r in rows if r["split"] == split} for split in ("train", "test")}
    assert len(voices["train"]) == 12 and len(voices["test"]) == 4 and not voices["train"] & voices["test"]
    assert sorted({r["label"] for r in rows}) == [str(d) for d in range(10)]
    size = sum(p.stat().st_size for p in embedded_root().glob("*.flac"))
    assert len(rows) == len(list(embedded_root().glob("*.flac"))) == 480 and size < 5e6
    # a standardised fbank: the train statistics are the defaults
    x = torch.stack([train[i]["audio"] for i in range(0, 360, 9)])
    assert abs(float(x.mean())) < 0.15 and 0.35 < float(x.std()) < 0.65  # Audio-MAE's 2*std gives std 0.5


def test_augmentation_uses_torch_global_rng_and_cache_keeps_eval_fixed():
    ds = SpokenDigits("train", augment=True, roll=True, freqm=8, timem=8, **SMALL)
    torch.manual_seed(3)
    a = ds[5]["audio"]
    torch.manual_seed(3)
    b = ds[5]["audio"]
    torch.manual_seed(4)
    c = ds[5]["audio"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = SpokenDigits("train", augment=False, **SMALL)
    first = plain[5]["audio"]
    assert plain.cache is not None and 5 in plain.cache and torch.equal(plain[5]["audio"], first)


def test_audio_list_json_and_csv(tmp_path):
    wavs = [_tone(tmp_path / "clips" / f"c{i}.wav", 300 + 100 * i, rate=(8000, 22050, 16000)[i]) for i in range(3)]
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text('index,mid,display_name\n0,/m/dog,"Dog"\n1,/m/cat,"Cat"\n2,/m/car,"Car"\n')
    data = {"data": [{"wav": "clips/c0.wav", "labels": "/m/dog,/m/cat"}, {"wav": wavs[1], "labels": "/m/car"},
                     {"wav": "clips/c2.wav", "labels": "Cat"}]}
    (tmp_path / "train.json").write_text(json.dumps(data))
    ds = AudioList("train", False, data_file=str(tmp_path / "{split}.json"), label_csv=str(labels), **SMALL)
    assert ds.multi_label and ds.classes == ["Dog", "Cat", "Car"] and len(ds) == 3
    item = ds[0]
    assert item["audio"].shape == (1, 40, 32) and item["label"].tolist() == [1.0, 1.0, 0.0]
    assert set(item) == {"audio", "label"}
    (tmp_path / "test.csv").write_text("filename,category\nclips/c0.wav,dog\nclips/c1.wav,cat\n")
    single = AudioList("test", False, data_file=str(tmp_path / "{split}.csv"), classes=["dog", "cat"], **SMALL)
    assert not single.multi_label and [single[i]["label"] for i in range(2)] == [0, 1]
    assert set(single[0]) == {"audio", "label"}
    (tmp_path / "bad.csv").write_text("filename,category\nclips/c0.wav,horse\n")
    with pytest.raises(DataError, match=r"bad.csv:2: unknown label\(s\) \['horse'\]"):
        AudioList("x", False, data_file=str(tmp_path / "bad.csv"), classes=["dog"])
    with pytest.raises(ValueError, match="label_csv"):
        AudioList("train", False, data_file=str(tmp_path / "{split}.json"))
    with pytest.raises(DataError, match="path column"):
        (tmp_path / "nohead.csv").write_text("a,b\n1,2\n")
        AudioList("x", False, data_file=str(tmp_path / "nohead.csv"), classes=["dog"])


def test_esc50_folds(tmp_path):
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(10):
        fold, target = i % 5 + 1, i % 2 * 7  # targets 0 and 7: labels are re-indexed in target order
        name = f"{fold}-{i}-A-{target}.wav"
        _tone(tmp_path / "audio" / name, 200 + 50 * i, rate=44100, seconds=0.2)
        rows.append(f"{name},{fold},{target},{'dog' if target == 0 else 'rain'},{i < 4},{i},A")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    train, test = ESC50("train", True, str(tmp_path), fold=2, **SMALL), ESC50("test", False, str(tmp_path), fold=2)
    assert (len(train), len(test)) == (8, 2) and train.classes == ["dog", "rain"]
    assert all("/2-" in path for path, _ in test.samples) and not any("/2-" in p for p, _ in train.samples)
    assert test.frontend.target_frames == 512 and test[0]["audio"].shape == (1, 512, 128)
    assert len(ESC50("train", False, str(tmp_path), fold=2, esc10=True)) == 3
    with pytest.raises(ValueError, match="folds are 1-5"):
        ESC50("train", False, str(tmp_path), fold=6)


def test_speech_commands_lists(tmp_path):
    for word in ("no", "yes"):
        for n in range(3):
            _tone(tmp_path / word / f"spk{n}_nohash_0.wav", 400 if word == "yes" else 250)
    _tone(tmp_path / "_background_noise_" / "noise.wav", 50)
    (tmp_path / "validation_list.txt").write_text("no/spk1_nohash_0.wav\n")
    (tmp_path / "testing_list.txt").write_text("yes/spk2_nohash_0.wav\nno/spk2_nohash_0.wav\n")
    train = SpeechCommands("train", False, str(tmp_path), **SMALL)
    assert train.classes == ["no", "yes"] and len(train) == 3
    assert len(SpeechCommands("val", False, str(tmp_path))) == 1
    assert len(SpeechCommands("test", False, str(tmp_path))) == 2
    assert SpeechCommands("test", False, str(tmp_path)).frontend.target_frames == 128


def test_audio_folder_and_corrupt_files(tmp_path):
    _tone(tmp_path / "train" / "low" / "a.wav", 200, channels=2)
    _tone(tmp_path / "train" / "high" / "b.flac", 2000)
    (tmp_path / "train" / "high" / "broken.wav").write_bytes(b"RIFF....not really")
    (tmp_path / "test" / "low").mkdir(parents=True)
    ds = AudioFolder("train", False, str(tmp_path), **SMALL)
    assert ds.classes == ["high", "low"] and len(ds) == 3
    broken = next(i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.wav"))
    with pytest.raises(CorruptSampleError, match="broken.wav"):
        ds[broken]
    skipping = SeededDataset(ds, skip_corrupt=True)
    batch = collate_skipping([skipping[(i, 0)] for i in range(3)])
    assert batch["_skipped"] == 1 and batch["audio"].shape == (2, 1, 40, 32)
    with pytest.raises(DataError, match="no split folder 'val'"):
        AudioFolder("val", False, str(tmp_path))
    with pytest.raises(DataError, match="no files ending"):
        AudioFolder("test", False, str(tmp_path))


def _audioset_files(tmp_path: Path) -> tuple[Path, Path, list[list[int]]]:
    """A small AudioSet-style set of real clips: embedded spoken-digit FLACs, a class index file in
    AudioSet's format (quoted display names with commas) and a pretty-printed AST JSON data file."""
    clips = sorted(embedded_root().glob("*.flac"))[:6]
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text('index,mid,display_name\n0,/m/09x0r,"Speech"\n1,/m/05zppz,"Male speech, man speaking"\n'
                      '2,/m/02zsn,"Female speech, woman speaking"\n3,/m/0ytgt,"Child speech, kid speaking"\n')
    mids = ["/m/09x0r", "/m/05zppz", "/m/02zsn", "/m/0ytgt"]
    want = [[0, 1], [0, 2], [3], [0, 1, 3], [2], [0]]
    entries = [{"video_id": f"v{i}", "wav": str(c), "labels": ",".join(mids[j] for j in w)}
               for i, (c, w) in enumerate(zip(clips, want))]
    data = tmp_path / "train.json"
    data.write_text(json.dumps({"data": entries}, indent=1))
    return data, labels, want


def test_audioset_json_gives_multi_hot_float_labels_that_batch_to_b_by_c(tmp_path):
    data, labels, want = _audioset_files(tmp_path)
    ds = AudioList("train", False, data_file=str(data), label_csv=str(labels), multi_label=True, **SMALL)
    assert ds.classes[1] == "Male speech, man speaking" and ds.num_classes == 4 and ds.multi_hot
    for i, classes in enumerate(want):
        label = ds[i]["label"]
        assert label.dtype == torch.float32 and label.shape == (4,)
        assert label.nonzero().flatten().tolist() == classes and set(label.tolist()) <= {0.0, 1.0}
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=6, collate_fn=collate_skipping)))
    assert batch["label"].shape == (6, 4) and batch["label"].dtype == torch.float32
    assert batch["label"].sum(1).tolist() == [float(len(w)) for w in want] and batch["audio"].shape == (6, 1, 40, 32)
    # every split gives vectors when multi_label is set, even one whose clips carry one label each
    (tmp_path / "eval.json").write_text(json.dumps({"data": [{"wav": str(ds.samples[2][0]), "labels": "/m/0ytgt"}]}))
    single = AudioList("eval", False, data_file=str(tmp_path / "{split}.json"), label_csv=str(labels),
                       multi_label=True, **SMALL)
    assert single[0]["label"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert AudioList("eval", False, data_file=str(tmp_path / "{split}.json"), label_csv=str(labels))[0]["label"] == 3
    # class-balanced sampling weights: sum over a clip's labels of 1000 / (count + 0.01)
    counts = torch.tensor([4.0, 2.0, 2.0, 2.0], dtype=torch.float64)
    expected = torch.tensor([sum(1000 / (counts[c] + 0.01) for c in w) for w in want], dtype=torch.float64)
    torch.testing.assert_close(ds.sample_weights(), expected)


def test_audioset_unknown_label_names_file_and_line(tmp_path):
    data, labels, _ = _audioset_files(tmp_path)
    text = data.read_text().replace('"/m/0ytgt"', '"/m/unknown"')  # entry 2, a single-label clip
    data.write_text(text)
    clip = str(sorted(embedded_root().glob("*.flac"))[2])
    line = next(n for n, row in enumerate(text.splitlines(), 1) if f'"wav": "{clip}"' in row)
    assert line > 10  # pretty-printed: one entry spans several lines
    with pytest.raises(DataError, match=rf"train.json:{line}: unknown label\(s\) \['/m/unknown'\] for .*class_labels"):
        AudioList("train", False, data_file=str(data), label_csv=str(labels), multi_label=True)
    bad_index = tmp_path / "bad_index.csv"
    bad_index.write_text("index,mid,display_name\n0,/m/a,A\nx,/m/b,B\n")
    with pytest.raises(DataError, match=r"bad_index.csv:3: index 'x'"):
        AudioList("train", False, data_file=str(data), label_csv=str(bad_index))
    clips = sorted(embedded_root().glob("*.flac"))[:5]
    listing = tmp_path / "list.csv"
    listing.write_text("wav,labels\n" + "".join(f'{c},"/m/09x0r,/m/{"nope" if i == 3 else "02zsn"}"\n'
                                                 for i, c in enumerate(clips)))
    with pytest.raises(DataError, match=r"list.csv:5: unknown label\(s\) \['/m/nope'\]"):
        AudioList("train", False, data_file=str(listing), label_csv=str(labels))
    listing.write_text(f'wav,labels\n{clips[0]},/m/09x0r\n{clips[1]},"/m/09x0r,/m/02zsn"\n')
    with pytest.raises(DataError, match=r"list.csv:3: .* has 2 labels; set multi_label"):
        AudioList("train", False, data_file=str(listing), label_csv=str(labels), multi_label=False)


def test_mixup_mixes_waveforms_and_targets_with_beta_10_10(tmp_path):
    data, labels, want = _audioset_files(tmp_path)
    ds = AudioList("train", True, data_file=str(data), label_csv=str(labels), multi_label=True, mixup=1.0, **SMALL)
    plain = AudioList("train", False, data_file=str(data), label_csv=str(labels), multi_label=True, **SMALL)
    torch.manual_seed(0)
    item = ds[4]  # labels [2]
    torch.manual_seed(0)
    assert float(torch.rand(())) < 1.0
    other = int(torch.randint(len(ds), ()))
    lam = float(torch.distributions.Beta(10.0, 10.0).sample())
    expected = lam * plain[4]["label"] + (1 - lam) * plain[other]["label"]
    torch.testing.assert_close(item["label"], expected)
    assert 0.2 < lam < 0.8 and item["label"].dtype == torch.float32
    torch.testing.assert_close(item["audio"], ds.frontend.normalize(ds.mixed_fbank(4, other, lam)))
    if other != 4:
        assert not torch.allclose(item["audio"], plain[4]["audio"], atol=1e-3)
    # no mixing in evaluation; a single-label dataset with mixup gives float targets too
    assert torch.equal(AudioList("train", False, data_file=str(data), label_csv=str(labels), multi_label=True,
                                 mixup=1.0, **SMALL)[4]["label"], plain[4]["label"])
    digits = SpokenDigits("train", augment=False, mixup=0.5, **SMALL)
    assert digits[0]["label"].tolist() == [1.0] + [0.0] * 9
    with pytest.raises(ValueError, match="probability"):
        SpokenDigits("train", augment=True, mixup=1.5)
