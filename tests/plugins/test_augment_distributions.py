"""The model sees what the papers' models saw: mmim's training crops and frame indices are drawn from the same
distributions as the official pipelines' (draws recorded from the official code by
``benchmarks/record_official_draws.py`` into ``tests/fixtures/augment_draws``).

Discrete draws (VideoMAE's crop sizes and places, frame indices) are compared by a chi-square test of
homogeneity, continuous ones (MAE's crop area, aspect and place) by two-sample Kolmogorov-Smirnov tests. Each
comparison also runs on a deliberately different sampler, which the same test must reject: the tests have the
power to see a difference of that size. Sizes, counts and options are read from the fixture's config.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

stats = pytest.importorskip("scipy.stats")

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "augment_draws"
CONFIG = json.loads((FIXTURE / "config.json").read_text())
DRAWS = np.load(FIXTURE / "official.npz")
ALPHA = 1e-3  # seeds are fixed: each test is deterministic; this is the level a real difference must miss


def chi2_same(a: list, b: list) -> float:
    """p-value that the categorical samples ``a`` and ``b`` come from one distribution."""
    ca, cb = Counter(a), Counter(b)
    keys = sorted(set(ca) | set(cb))
    table = np.array([[ca[k] for k in keys], [cb[k] for k in keys]])
    if len(keys) == 1:
        return 1.0
    return float(stats.chi2_contingency(table)[1])


def video_dataset(tmp_path, **options):
    from mmim_video.dataset import VideoClips

    cfg = CONFIG["videomae"]
    return VideoClips([("x.mp4", 0, 0)], "draws", True, num_frames=cfg["num_frames"],
                      sampling_rate=cfg["sampling_rate"], img_size=cfg["input_size"], crop_scales=cfg["scales"],
                      hflip=False, **options)


@pytest.mark.parametrize("size", [tuple(s) for s in CONFIG["frame_sizes_wh"]])
def test_videomae_crops_match_the_official_draws(size, tmp_path):
    w, h = size
    official = [tuple(int(v) for v in row) for row in DRAWS[f"videomae_crop_{w}x{h}"]]  # (crop_w, crop_h, left, top)
    n = len(official)
    torch.manual_seed(CONFIG["seed"])
    ds = video_dataset(tmp_path)
    ours = []
    for _ in range(n):
        crop = ds.crops(h, w)[0]
        ours.append((crop.width, crop.height, crop.left, crop.top))
    assert set(ours) == set(official)  # the same support: every size and place, no other
    assert chi2_same([o[:2] for o in official], [o[:2] for o in ours]) > ALPHA  # size and aspect
    assert chi2_same([o[2:] for o in official], [o[2:] for o in ours]) > ALPHA  # place (given size: joint below)
    assert chi2_same(official, ours) > ALPHA
    # power: square crops at uniform places (mmim before this change) are rejected
    torch.manual_seed(CONFIG["seed"])
    other = video_dataset(tmp_path, max_distort=0, fixed_offsets=False)
    squares = [(c.width, c.height) for c in (other.crops(h, w)[0] for _ in range(n))]
    assert chi2_same([o[:2] for o in official], squares) < ALPHA


@pytest.mark.parametrize("duration", CONFIG["durations"])
def test_videomae_frame_indices_match_the_official_draws(duration, tmp_path):
    official = DRAWS[f"videomae_frames_{duration}"]
    ds = video_dataset(tmp_path)
    torch.manual_seed(CONFIG["seed"])
    ours = np.array([ds.choose_frames(duration) for _ in range(len(official))])
    assert np.array_equal(np.diff(ours, axis=1), np.diff(official, axis=1))  # the same stride pattern
    assert ours[:, 0].min() == official[:, 0].min() and ours[:, 0].max() == official[:, 0].max()
    assert chi2_same(list(official[:, 0]), list(ours[:, 0])) > ALPHA
    # power: a start range short by the last few frames, as mmim drew it before, is rejected on the bounds
    span = (CONFIG["videomae"]["num_frames"] - 1) * CONFIG["videomae"]["sampling_rate"] + 1
    assert ours[:, 0].max() != duration - span


def mae_samples(rows: np.ndarray, h: int, w: int) -> dict[str, np.ndarray]:
    top, left, ch, cw = rows.T.astype(float)
    return {"area": ch * cw / (h * w), "aspect": np.log(cw / ch), "x": (left + cw / 2) / w, "y": (top + ch / 2) / h}


@pytest.mark.parametrize("size", [tuple(s) for s in CONFIG["image_sizes_wh"]])
def test_mae_crops_match_the_official_draws(size):
    from mmim_image.fastjpeg import crop_params

    w, h = size
    official = DRAWS[f"mae_crop_{w}x{h}"]
    torch.manual_seed(CONFIG["seed"] + 1)  # another stream of draws: equal in distribution, not draw for draw
    ours = np.array([crop_params(h, w, CONFIG["mae"]["scale"]) for _ in range(len(official))])
    a, b = mae_samples(official, h, w), mae_samples(ours, h, w)
    for key in a:
        assert stats.ks_2samp(a[key], b[key]).pvalue > ALPHA, key
    # power: a crop area range of (0.3, 1.0) instead of (0.2, 1.0) is rejected
    torch.manual_seed(CONFIG["seed"] + 2)
    other = np.array([crop_params(h, w, (0.3, 1.0)) for _ in range(len(official))])
    assert stats.ks_2samp(a["area"], mae_samples(other, h, w)["area"]).pvalue < ALPHA


def test_mae_flip_probability_matches(tmp_path):
    from PIL import Image

    from mmim_image import fastjpeg

    official = DRAWS["mae_flip"]
    path = tmp_path / "a.jpg"
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (48, 1, 3))).save(path, quality=95)
    data = path.read_bytes()
    torch.manual_seed(CONFIG["seed"])
    n = 400
    flips = 0
    for _ in range(n):
        out = fastjpeg.jpeg_crop(data, "a.jpg", (8, 8), (1.0, 1.0), hflip=True)  # whole image: a ramp left to right
        flips += int(out[0, 4, 0] > out[0, 4, -1])
    assert stats.binomtest(flips, n, float(official.mean())).pvalue > ALPHA
