"""The training input pipeline per modality against the GPU step it feeds.

For each modality (image, video, points, audio, multimodal) the ViT-B pre-training recipe's dataset
(``data.dataset`` of the recipe, with its augmentation) is pointed at generated files of realistic
size (ImageNet-like 500x375 JPEGs, 300-frame 320x240 H.264 videos, ShapeNet 8192-point clouds,
10 s 16 kHz WAVs, MultiMAE rgb/depth/semseg folders), and read through mmim's loader
(``mmim.data.loading.make_loader``: decode + augment + collate) with each ``--workers`` count.
Printed: samples/s, samples/s per worker (per core: each worker is one process on one core), and
the workers needed to match the ViT-B training step rate of that modality on the GPU. Step rates
come from ``--steps-from`` (the folder ``benchmarks/gpu.sh`` writes: the faster of each model's
eager and compiled mmim runs), else from the H200 figures of docs/scaling.md (``STEP_RATES``).
A loader slower, at ``--cores`` workers, than the step it feeds is flagged ``STARVES``::

    python benchmarks/bench_loaders.py                                   # every modality, workers 0 1 2
    python benchmarks/bench_loaders.py --modalities image video --workers 0 4 8 --samples 512

``--vs-official`` instead puts mmim's video and image pipelines next to the official VideoMAE and MAE ones
(their checkouts under ``--official-dir``, default ``.official/``), on generated K400-like clips (10 s, 30 fps,
H.264 CRF 23; each ``--video-sets`` entry ``WxH:keyint``) and ImageNet-like JPEGs, one core each, alternating
(:mod:`official_loaders`); it prints clips/s per core, frames decoded per clip, the loader cores one GPU needs
at the step rate of docs/scaling.md, and mmim / official::

    python benchmarks/bench_loaders.py --vs-official --video-sets 340x256:250 340x256:30 640x480:250
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {
    "image": "recipes/image/mae_vit_b16_in1k.yaml",
    "video": "recipes/video/videomae_vit_b_k400.yaml",
    "points": "recipes/points/pointmae_shapenet55.yaml",
    "audio": "recipes/audio/audiomae_vit_b16_as2m.yaml",
    "multimodal": "recipes/multimodal/multimae_vit_b16_rgb_depth_semseg.yaml",
}
# mmim ViT-B training step, samples/s on one H200, bf16 (docs/scaling.md, issue 15's table): the fallback
STEP_RATES = {"image": 3832.0, "video": 712.0, "points": 2453.0, "audio": 495.0, "multimodal": 3832.0}
# gpu.sh measurement names per modality (multimodal has no official counterpart there: the image step)
GPU_RUNS = {"image": "mae_b", "video": "videomae_b", "points": "pointmae", "audio": "audiomae_b",
            "multimodal": "mae_b"}


def _texture(rng: np.random.Generator, h: int, w: int, c: int = 3) -> np.ndarray:
    """A smooth random image (natural-image-like JPEG size, unlike white noise)."""
    from PIL import Image

    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, c), dtype=np.uint8)
    img = Image.fromarray(small.squeeze()).resize((w, h), Image.BILINEAR)
    return np.asarray(img)


def _jpeg(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)


def make_image(root: Path, n: int, rng: np.random.Generator) -> dict:
    for i in range(n):
        _jpeg(root / "train" / f"c{i % 4}" / f"{i}.jpg", _texture(rng, 375, 500))
    return {"root": str(root)}


def make_multimodal(root: Path, n: int, rng: np.random.Generator) -> dict:
    from PIL import Image

    for i in range(n):
        base = root / "train"
        _jpeg(base / "rgb" / f"c{i % 4}" / f"{i}.jpg", _texture(rng, 375, 500))
        for task in ("depth", "semseg"):
            (base / task / f"c{i % 4}").mkdir(parents=True, exist_ok=True)
        depth = (_texture(rng, 375, 500, 1).astype(np.uint16) * 200)
        Image.fromarray(depth).save(base / "depth" / f"c{i % 4}" / f"{i}.png")
        Image.fromarray((_texture(rng, 375, 500, 1) // 2).astype(np.uint8)).save(base / "semseg" / f"c{i % 4}" / f"{i}.png")
    return {"root": str(root)}


def make_points(root: Path, n: int, rng: np.random.Generator) -> dict:
    (root / "shapenet_pc").mkdir(parents=True)
    (root / "ShapeNet-55").mkdir(parents=True)
    names = []
    for i in range(n):
        name = f"{2691156 + i % 4:08d}-m{i}.npy"
        np.save(root / "shapenet_pc" / name, rng.standard_normal((8192, 3)).astype(np.float32))
        names.append(name)
    for split in ("train", "test"):
        (root / "ShapeNet-55" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return {"root": str(root)}


def make_audio(root: Path, n: int, rng: np.random.Generator, unique: int = 16) -> dict:
    root.mkdir(parents=True)
    for i in range(min(n, unique)):
        with wave.open(str(root / f"{i}.wav"), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(16000)
            f.writeframes((rng.standard_normal(160000) * 3000).astype(np.int16).tobytes())
    (root / "labels.csv").write_text("index,mid,display_name\n0,/m/a,A\n1,/m/b,B\n")
    data = [{"wav": str(root / f"{i % unique}.wav"), "labels": "/m/a" if i % 2 else "/m/a,/m/b"} for i in range(n)]
    (root / "train.json").write_text(json.dumps({"data": data}))
    return {"data_file": str(root / "{split}.json"), "label_csv": str(root / "labels.csv")}


def make_video(root: Path, n: int, rng: np.random.Generator, unique: int = 8) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_video_decode import write_video

    root.mkdir(parents=True)
    for i in range(min(n, unique)):
        write_video(root / f"{i}.mp4", 300, 320, 240, seed=i)
    (root / "train.csv").write_text("".join(f"{i % unique}.mp4 {i % 4}\n" for i in range(n)))
    return {"root": str(root), "list_file": str(root / "{split}.csv")}


MAKERS = {"image": make_image, "video": make_video, "points": make_points, "audio": make_audio,
          "multimodal": make_multimodal}


def step_rates(folder: str | None) -> tuple[dict[str, float], str]:
    """ViT-B mmim step samples/s per modality: the faster of gpu.sh's eager/compiled runs, else STEP_RATES."""
    rates, source = dict(STEP_RATES), "docs/scaling.md (H200, bf16)"
    if folder:
        found = {}
        for modality, run in GPU_RUNS.items():
            for kind in ("eager", "compiled"):
                f = Path(folder) / f"{run}_{kind}.json"
                if f.is_file():
                    side = json.loads(f.read_text())["sides"].get("mmim")
                    if side:
                        found[modality] = max(found.get(modality, 0.0), side["samples_per_s"])
        if found:
            rates.update(found)
            source = f"{folder} (this run's gpu.sh measurements where present)"
    return rates, source


def measure(modality: str, workdir: Path, samples: int, workers: list[int], batch: int, seed: int,
            normalize: str = "host") -> list[dict]:
    from mmim import registry
    from mmim.config.recipe import load_recipe
    from mmim.data.loading import ResumableSampler, make_loader

    recipe = load_recipe(ROOT / RECIPES[modality], [], check_components=True)
    spec = dict(recipe.data.dataset)
    spec.update(MAKERS[modality](workdir / modality, samples, np.random.default_rng(seed)))
    if modality == "image":
        spec["normalize"] = normalize  # device: uint8 batches, normalised on the GPU (data.dataset.normalize)
    dataset = registry.build("dataset", spec, where=f"{RECIPES[modality]}: data.dataset", split="train", augment=True)
    rows = []
    for w in workers:
        sampler = ResumableSampler(len(dataset), seed, batch_size=batch)
        loader = make_loader(dataset, sampler, batch, num_workers=w, pin_memory=torch.cuda.is_available())
        it = iter(loader)
        first = next(it)  # worker start-up and the first batch are not timed
        inputs = [k for k, v in first.items() if isinstance(v, torch.Tensor) and k != "label"]
        key = "image" if "image" in inputs else (inputs[0] if inputs else None)  # the dtype handed over
        start, count = time.perf_counter(), 0
        for b in it:
            count += len(next(iter(b.values()))) if isinstance(b, dict) else len(b[0])
        secs = time.perf_counter() - start
        rate = count / secs if count else float("nan")
        rows.append({"modality": modality + ("/uint8" if modality == "image" and normalize == "device" else ""),
                     "workers": w, "samples": count, "samples_per_s": rate,
                     "dtype": str(first[key].dtype).removeprefix("torch.") if key else None,
                     "per_core": rate / max(w, 1)})
        del it, loader
    return rows


def mmim_video_dataset(list_file: Path, num_sample: int, normalize: str = "device", shards: str | None = None,
                       backend: str = "auto"):
    """The ``videomae_vit_b_k400`` recipe's training dataset on ``list_file`` (or its shard decoder)."""
    from mmim import registry
    from mmim.config.recipe import load_recipe

    recipe = load_recipe(ROOT / RECIPES["video"], [], check_components=True)
    spec = dict(recipe.data.dataset, root="/", list_file=str(list_file), num_sample=num_sample,
                normalize=normalize, backend=backend)
    return registry.build("dataset", spec, where="bench: data.dataset", split="train", augment=True)


def pair_ratio(ours: list[float], theirs: list[float]) -> float:
    """The median of the per-round ratios (each round ran both sides back to back: drift cancels in a pair)."""
    return float(np.median([a / b for a, b in zip(ours, theirs)]))


def pack_variant(list_file: Path, folder: Path, option: str) -> tuple[Path, dict]:
    """``list_file``'s videos packed with ``mmim pack --encode`` options ``option`` (``k=v,k=v``; empty: the
    original files); reused when already packed."""
    import yaml

    from mmim.data.pack import pack

    encode = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in option.split(",") if kv)}
    out = folder / (option.replace("=", "").replace(",", "_") or "original")
    if not (out / "index.json").is_file():
        spec = {"name": "video_list", "root": "/", "list_file": str(list_file), "num_frames": 16, "sampling_rate": 4}
        pack(spec, out, samples_per_shard=8, progress=False, encode=encode)
    return out, encode


def shard_bytes(out: Path) -> float:
    index = json.loads((out / "index.json").read_text())
    return sum(s["bytes"] for s in index["shards"]) / max(index["num_samples"], 1) / 1e6


def shard_side(out: Path, list_file: Path, batch: int, batches: int):
    """clips/s of the shard stream (read, decode, augment; shuffle buffer 64) from the packed ``out``."""
    import official_loaders as off
    from torch.utils.data import default_collate

    from mmim.data.shards import resolve
    from mmim.data.stream import END, ShardStream

    decoder = mmim_video_dataset(list_file, 1)  # decodes records through the same reader and augmentation

    def make(seed):
        stream = ShardStream(resolve(str(out)), decoder, seed=seed, shuffle_buffer=64)
        stream.set_position(seed, [0])
        items = (item for _, item in stream if not (isinstance(item, str) and item == END))

        def batched():
            chunk = []
            for item in items:
                chunk.append({"video": item["video"], "label": item["label"]})
                if len(chunk) == batch:
                    yield default_collate(chunk)
                    chunk = []
        return batched()

    def run():
        return off.read_loader(make, batches)
    return run


def vs_official(args: argparse.Namespace) -> dict:
    """mmim against the official VideoMAE and MAE pipelines (see the module docstring)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import official_loaders as off
    from torch.utils.data import DataLoader

    from mmim.data.loading import ResumableSampler, make_loader
    from mmim_video import reader

    official_dir = Path(args.official_dir)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="mmim-vs-official-"))
    rates, source = step_rates(args.steps_from)
    batch, batches, results = args.batch, args.batches, {"video": {}, "image": {}, "step_rates": rates,
                                                         "step_source": source}

    def official_side(dataset):
        def run():
            def make(seed):
                g = torch.Generator().manual_seed(seed)
                return iter(DataLoader(dataset, batch_size=batch, shuffle=True, generator=g, num_workers=0))
            return off.read_loader(make, batches)
        return run

    def mmim_side(dataset, copies=1):
        def run():
            def make(seed):
                return iter(make_loader(dataset, ResumableSampler(len(dataset), seed, batch_size=batch), batch))
            return off.read_loader(make, batches, copies)
        return run

    for setting in args.video_sets:
        size, _, keyint = setting.partition(":")
        width, height = (int(v) for v in size.split("x"))
        list_file = off.make_videos(data_dir / f"video_{width}x{height}_g{keyint}", args.clips, width, height,
                                    int(keyint or 250))
        spy = off.DecordSpy()

        def wanted(name: str) -> bool:
            return not args.only or args.only == name

        sides = {}
        if wanted("official"):
            sides["official"] = official_side(off.official_videomae(official_dir / "VideoMAE", list_file))
        for n in args.num_sample:
            if wanted(f"mmim num_sample={n}"):
                sides[f"mmim num_sample={n}"] = mmim_side(mmim_video_dataset(list_file, n), n)
        sizes = {}
        for option in args.pack:
            if not wanted(f"shards {option or 'original'}"):
                continue
            out, encode = pack_variant(list_file, data_dir / "shards" / f"{width}x{height}_g{keyint}", option)
            sides[f"shards {option or 'original'}"] = shard_side(out, list_file, batch, batches)
            sizes[f"shards {option or 'original'}"] = shard_bytes(out)
        if args.only:  # one side alone (whole-process timing by an outside tool, a side per process)
            if args.only not in sides:
                raise SystemExit(f"--only {args.only!r}: sides are {sorted(sides)}")
            secs, clips = sides[args.only]()
            print(f"{args.only}: {clips} clips in {secs:.2f} s, {clips / secs:.2f} clips/s")
            continue
        stats: dict[str, list[int]] = {name: [0, 0] for name in sides}

        def counted(name, run, stats=stats):
            def wrapped():
                before = dict(reader.DECODE_STATS)
                out = run()
                stats[name][0] += reader.DECODE_STATS["decoded"] - before["decoded"]
                stats[name][1] += reader.DECODE_STATS["clips"] - before["clips"]
                return out
            return wrapped

        with spy.installed():
            measured = off.alternate({k: counted(k, v) for k, v in sides.items()}, args.rounds)
        spans = [reader.keyframe_span(path, idx) for path, idx in spy.requests[:200]]
        rows = {}
        for name, m in measured.items():
            if name == "official":
                per_decode = float(np.mean(spans)) if spans else float("nan")
            else:
                per_decode = stats[name][0] / max(stats[name][1], 1)
            if name.startswith("shards") and "frames=" in name:
                per_decode = 16.0  # one image per frame: exactly the clip's frames
            rows[name] = {"clips_per_s": m["median"], "rounds": m["rounds"], "frames_decoded_per_decode": per_decode,
                          "mb_per_video": sizes.get(name, float("nan")),
                          "cores_per_gpu": math.ceil(rates["video"] / m["median"]),
                          "vs_official": pair_ratio(m["rounds"], measured["official"]["rounds"])}
        results["video"][setting] = rows
        print(f"\nvideo {width}x{height}, keyframe every {keyint}: clips/s on one core, batch {batch}, "
              f"{args.rounds} alternating rounds (median; the ratio is the median of per-round ratios); GPU step {rates['video']:.0f} clips/s ({source})")
        print(f"{'side':<36}{'clips/s':>9}{'frames decoded':>16}{'MB/video':>10}{'cores/GPU':>11}{'vs official':>13}")
        for name, r in rows.items():
            print(f"{name:<36}{r['clips_per_s']:>9.2f}{r['frames_decoded_per_decode']:>16.1f}{r['mb_per_video']:>10.2f}"
                  f"{r['cores_per_gpu']:>11}{r['vs_official']:>12.2f}x")

    if args.images and not args.only:
        from mmim import registry
        from mmim.config.recipe import load_recipe

        root = off.make_images(data_dir / "images", args.images)
        official = off.official_mae(official_dir / "mae", root)
        recipe = load_recipe(ROOT / RECIPES["image"], [], check_components=True)
        sides = {"official": official_side(official)}
        for normalize in ("host", "device"):
            spec = dict(recipe.data.dataset, root=str(root), normalize=normalize)
            ds = registry.build("dataset", spec, where="bench: data.dataset", split="train", augment=True)
            sides[f"mmim normalize={normalize}"] = mmim_side(ds)
        measured = off.alternate(sides, args.rounds)
        print(f"\nimages 500x375 JPEG -> 224: images/s on one core, batch {batch}, {args.rounds} rounds (median); "
              f"GPU step {rates['image']:.0f} images/s")
        print(f"{'side':<26}{'images/s':>9}{'cores/GPU':>11}{'vs official':>13}")
        for name, m in measured.items():
            row = {"per_s": m["median"], "rounds": m["rounds"], "cores_per_gpu": math.ceil(rates["image"] / m["median"]),
                   "vs_official": pair_ratio(m["rounds"], measured["official"]["rounds"])}
            results["image"][name] = row
            print(f"{name:<26}{row['per_s']:>9.1f}{row['cores_per_gpu']:>11}{row['vs_official']:>12.2f}x")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modalities", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--samples", type=int, default=64, help="samples read per measurement (plus one untimed batch)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="cores a training run could give its loader")
    p.add_argument("--steps-from", help="folder of benchmarks/gpu.sh results (its *_eager/_compiled JSON files)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-normalize", default="host", choices=["host", "device"],
                   help="image datasets' normalize option: device hands over uint8 batches (normalised on the GPU)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--vs-official", action="store_true", help="mmim against the official VideoMAE and MAE pipelines")
    p.add_argument("--official-dir", default=str(ROOT / ".official"), help="holds the VideoMAE and mae checkouts")
    p.add_argument("--data-dir", help="--vs-official: where the generated files go (kept and reused)")
    p.add_argument("--video-sets", nargs="*", default=["340x256:250"], help="--vs-official: WxH:keyint per setting")
    p.add_argument("--clips", type=int, default=24, help="--vs-official: generated videos per setting")
    p.add_argument("--num-sample", type=int, nargs="+", default=[1, 4], help="--vs-official: mmim's num_sample")
    p.add_argument("--pack", nargs="*", default=[], help="--vs-official: shard sides, each mmim pack --encode "
                   "options as k=v,k=v ('' for the original files), e.g. '' keyint=16 frames=jpeg")
    p.add_argument("--images", type=int, default=64, help="--vs-official: generated JPEGs (0: no image comparison)")
    p.add_argument("--batches", type=int, default=4, help="--vs-official: timed batches per side and round")
    p.add_argument("--rounds", type=int, default=3, help="--vs-official: alternating rounds")
    p.add_argument("--only", help="--vs-official: time this one video side once and exit (e.g. official, "
                   "'mmim num_sample=1', 'shards frames=jpeg'), for whole-process timing side by side")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.vs_official:
        results = vs_official(args)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return 0
    rates, source = step_rates(args.steps_from)
    rows, failures = [], {}
    with tempfile.TemporaryDirectory(prefix="mmim-loaders-") as tmp:
        for modality in args.modalities:
            try:
                rows += measure(modality, Path(tmp), args.samples + args.batch, args.workers, args.batch, args.seed,
                                args.image_normalize)
            except Exception as err:  # noqa: BLE001 - one modality's failure must not hide the others
                failures[modality] = f"{type(err).__name__}: {err}"
                print(f"{modality}: FAILED {failures[modality]}", flush=True)
    print(f"loader samples/s (decode + augment + collate, batch {args.batch}); GPU step rates from {source}")
    print(f"{'modality':<11}{'workers':>8}{'samples/s':>11}{'per core':>10}{'GPU step/s':>12}{'cores needed':>14}  verdict")
    verdicts = {}
    for r in rows:
        rate = rates[r["modality"].partition("/")[0]]
        need = math.ceil(rate / r["per_core"]) if r["per_core"] > 0 else None
        at_cores = r["per_core"] * args.cores
        verdict = "ok" if at_cores >= rate else f"STARVES at {args.cores} cores"
        verdicts[r["modality"]] = verdict  # the last (largest) worker count decides
        r.update(step_rate=rate, cores_needed=need, verdict=verdict)
        print(f"{r['modality']:<11}{r['workers']:>8}{r['samples_per_s']:>11.1f}{r['per_core']:>10.1f}"
              f"{rate:>12.0f}{need if need is not None else '-':>14}  {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "failures": failures, "step_rates": rates,
                                               "step_source": source, "cores": args.cores}, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
