"""Record the random draws of the official pre-training input pipelines, for the distribution test.

``tests/plugins/test_augment_distributions.py`` compares mmim's crops and frame indices with these draws
(chi-square for the discrete ones, Kolmogorov-Smirnov for the continuous ones). Nothing of the official code
is stored: only numbers it drew, from its own functions, called unmodified:

- VideoMAE (``.official/VideoMAE``): ``transforms.GroupMultiScaleCrop(224, [1, .875, .75, .66])._sample_crop_size``
  on frames of each size (crop width, height, left, top), and ``kinetics.VideoMAE``'s ``_sample_train_indices`` +
  ``_video_TSN_decord_batch_loader`` (16 frames, stride 4) for videos of each length, with a stand-in for the
  decord reader that only records the frame list it is asked for;
- MAE (``.official/mae``): the first op of ``main_pretrain.py``'s ``transform_train``
  (``RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=3)``): its ``get_params`` on images of each size,
  and the ``RandomHorizontalFlip`` draw.

    python benchmarks/record_official_draws.py --out tests/fixtures/augment_draws/official.npz
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

FRAME_SIZES = [(340, 256), (640, 480), (320, 240)]  # (W, H), as PIL's Image.size
DURATIONS = [300, 250, 80]
IMAGE_SIZES = [(500, 375), (375, 500), (640, 427)]


class _Frames:
    def __init__(self, n: int) -> None:
        self.n = n

    def asnumpy(self) -> np.ndarray:
        return np.zeros((self.n, 2, 2, 3), dtype=np.uint8)


class RecordingReader:
    """Stands in for ``decord.VideoReader``: records the frame list ``get_batch`` is asked for."""

    def __init__(self) -> None:
        self.asked: list[list[int]] = []

    def get_batch(self, indices):
        self.asked.append([int(i) for i in indices])
        return _Frames(len(indices))


def videomae_draws(checkout: Path, n: int, seed: int) -> dict[str, np.ndarray]:
    import official_loaders as off

    off._environment_shims()
    out = {}
    with off.on_path(checkout):
        import kinetics
        import transforms as videomae_transforms

        crop = videomae_transforms.GroupMultiScaleCrop(224, [1, .875, .75, .66])
        random.seed(seed)
        for w, h in FRAME_SIZES:
            out[f"videomae_crop_{w}x{h}"] = np.array([crop._sample_crop_size((w, h)) for _ in range(n)], dtype=np.int64)
        dataset = kinetics.VideoMAE.__new__(kinetics.VideoMAE)  # the sampling methods need only these fields
        dataset.num_segments, dataset.new_length, dataset.new_step = 1, 16, 4
        dataset.skip_length, dataset.temporal_jitter = 64, False
        np.random.seed(seed)
        for duration in DURATIONS:
            reader = RecordingReader()
            for _ in range(n):
                indices, skips = dataset._sample_train_indices(duration)
                dataset._video_TSN_decord_batch_loader("x", reader, duration, indices, skips)
            out[f"videomae_frames_{duration}"] = np.array(reader.asked, dtype=np.int64)
    return out


def mae_draws(checkout: Path, n: int, seed: int) -> dict[str, np.ndarray]:
    import official_loaders as off

    transform = off.official_mae_transform(checkout)
    crop, flip = transform.transforms[0], transform.transforms[1]
    out = {}
    torch.manual_seed(seed)
    for w, h in IMAGE_SIZES:
        image = torch.empty(1).expand(3, h, w)
        out[f"mae_crop_{w}x{h}"] = np.array([crop.get_params(image, crop.scale, crop.ratio) for _ in range(n)],
                                            dtype=np.int64)
    out["mae_flip"] = np.array([bool(torch.rand(1) < flip.p) for _ in range(n)])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official-dir", default=str(ROOT / ".official"))
    p.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "augment_draws" / "official.npz"))
    p.add_argument("--draws", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    official = Path(args.official_dir)
    arrays = {**videomae_draws(official / "VideoMAE", args.draws, args.seed),
              **mae_draws(official / "mae", args.draws, args.seed)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    config = {"draws": args.draws, "seed": args.seed, "frame_sizes_wh": FRAME_SIZES, "durations": DURATIONS,
              "image_sizes_wh": IMAGE_SIZES, "videomae": {"input_size": 224, "scales": [1, .875, .75, .66],
                                                          "num_frames": 16, "sampling_rate": 4},
              "mae": {"input_size": 224, "scale": [0.2, 1.0], "ratio": [0.75, 4 / 3]},
              "sources": {"videomae": "MCG-NJU/VideoMAE transforms.py GroupMultiScaleCrop, kinetics.py VideoMAE",
                          "mae": "facebookresearch/mae main_pretrain.py transform_train"},
              "generator": "benchmarks/record_official_draws.py"}
    (out.parent / "config.json").write_text(json.dumps(config, indent=1))
    print(f"wrote {out} ({', '.join(f'{k} {v.shape}' for k, v in arrays.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
