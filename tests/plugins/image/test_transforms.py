"""The image plugin's transform builder: shapes, exact normalisation, seeded determinism, validation."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmim_image.transforms import ResizeCover, build_transform, channel_values, to_pair


def _image(c: int = 1, h: int = 28, w: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (c, h, w), dtype=torch.uint8, generator=g)


def test_plain_transform_is_exact_scaling_and_normalisation():
    x = _image(3, 20, 30)
    out = build_transform((20, 30), augment=False, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))(x)
    mean, std = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1), torch.tensor([0.5, 0.25, 2.0]).view(3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == (3, 20, 30)
    torch.testing.assert_close(out, (x.float() / 255 - mean) / std)


def test_single_mean_and_std_apply_to_every_channel():
    x = _image(3, 8, 8)
    out = build_transform(8, augment=False, mean=0.5, std=0.5)(x)
    torch.testing.assert_close(out, (x.float() / 255 - 0.5) / 0.5)


@pytest.mark.parametrize("size, expected", [(16, (16, 16)), ((12, 20), (12, 20)), ([40, 24], (40, 24))])
@pytest.mark.parametrize("augment", [False, True])
def test_output_size_for_non_square_inputs(size, expected, augment):
    torch.manual_seed(0)
    out = build_transform(size, augment=augment, mean=0.5, std=0.25)(_image(1, 21, 37))
    assert out.shape == (1, *expected) and out.dtype == torch.float32 and out.is_contiguous()
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert lo - 1e-5 <= out.min() and out.max() <= hi + 1e-5  # uint8 bicubic clamps to [0, 255]


def test_resize_cover_keeps_aspect_ratio_and_centre():
    x = torch.zeros(1, 20, 40, dtype=torch.uint8)
    x[:, :, 10:30] = 255  # a white centre band half as wide as the image
    out = ResizeCover((10, 10))(x)
    assert out.shape == (1, 10, 10)
    # scaled by 1/2 the band covers columns 5..15, i.e. the whole centre crop (a plain resize to
    # 10x10 would squeeze it into columns 2.5..7.5); only the border columns blur a little
    assert out[..., 1:-1].min() == 255 and out.min() > 200
    assert ResizeCover((20, 40))(x) is x
    plain = build_transform(10, augment=False, mean=0.0, std=1.0)(x)  # the non-augmented pipeline uses it
    torch.testing.assert_close(plain, out.float() / 255)


def test_augmentation_is_deterministic_under_torch_seed_only():
    x = _image(1, 28, 28)
    transform = build_transform(28, augment=True, mean=0.286, std=0.353)
    torch.manual_seed(123)
    first = transform(x)
    random.seed(1)
    np.random.seed(1)  # neither python's nor numpy's RNG may matter
    torch.manual_seed(123)
    torch.testing.assert_close(transform(x), first, rtol=0, atol=0)
    others = []
    for seed in range(5):
        torch.manual_seed(seed)
        others.append(transform(x))
    assert any(not torch.equal(o, first) for o in others)


def test_full_area_crop_is_identity_or_flip_and_both_happen():
    x = _image(1, 28, 28)
    ref = x.float() / 255
    transform = build_transform(28, augment=True, crop_scale=(1.0, 1.0), hflip=True, mean=0.0, std=1.0)
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        out = transform(x)
        same, flipped = torch.allclose(out, ref), torch.allclose(out, ref.flip(-1))
        assert same or flipped
        seen.add(flipped)
    assert seen == {False, True}
    no_flip = build_transform(28, augment=True, crop_scale=(1.0, 1.0), hflip=False, mean=0.0, std=1.0)
    for seed in range(10):
        torch.manual_seed(seed)
        torch.testing.assert_close(no_flip(x), ref)


def test_random_crops_zoom_in():
    # a small crop scale magnifies: the image's 2-pixel checkerboard loses its fine alternation
    x = ((torch.arange(32).view(1, -1) // 2 + torch.arange(32).view(-1, 1) // 2) % 2 * 255).to(torch.uint8)[None]
    transform = build_transform(32, augment=True, crop_scale=(0.05, 0.05), hflip=False, mean=0.0, std=1.0)
    torch.manual_seed(0)
    out = transform(x)
    plain = build_transform(32, augment=False, mean=0.0, std=1.0)(x)
    assert (out[..., 1:] - out[..., :-1]).abs().mean() < 0.5 * (plain[..., 1:] - plain[..., :-1]).abs().mean()


def test_rejects_integer_non_uint8_or_unbatched_shapes():
    transform = build_transform(8, augment=False, mean=0.5, std=0.5)
    with pytest.raises(ValueError, match="uint8"):
        transform(torch.zeros(1, 8, 8, dtype=torch.int16))
    with pytest.raises(ValueError, match="uint8"):
        transform(torch.zeros(8, 8, dtype=torch.uint8))


@pytest.mark.parametrize("augment", [False, True])
def test_unit_float_images_match_their_uint8_version(augment):
    """High-bit images arrive as float32 in [0, 1]; they go through the same pipeline as uint8."""
    transform = build_transform(8, augment=augment, mean=0.5, std=0.5)
    x8 = _image(1, 12, 16)
    torch.manual_seed(0)
    a = transform(x8)
    torch.manual_seed(0)
    b = transform(x8.float() / 255)
    assert a.dtype == b.dtype == torch.float32 and (a - b).abs().max() < 0.02  # uint8 rounds after resizing
    hot = torch.full((1, 8, 8), 1.0)
    assert transform(hot).max() <= 1.0 + 1e-6  # clamped to [0, 1] before normalising: (1 - 0.5) / 0.5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"img_size": 0}, "img_size"),
        ({"img_size": (8, 8, 8)}, "img_size"),
        ({"crop_scale": (0.5, 0.2)}, "crop_scale"),
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"std": 0.0}, "std"),
        ({"mean": (0.1, 0.2, 0.3), "std": (0.1, 0.2)}, "std has 2 values"),
    ],
)
def test_invalid_options_raise(kwargs, match):
    args = {"img_size": 8, "augment": True, "mean": 0.5, "std": 0.5} | kwargs
    with pytest.raises(ValueError, match=match):
        build_transform(**args)


def test_helpers():
    assert to_pair(7) == (7, 7) and to_pair([3, 5]) == (3, 5)
    assert channel_values(0.5, 3, "mean") == (0.5, 0.5, 0.5)
    assert channel_values([0.1, 0.2, 0.3], 3, "mean") == (0.1, 0.2, 0.3)
    with pytest.raises(ValueError, match="mean has 3 values .* 1 channel"):
        channel_values((0.1, 0.2, 0.3), 1, "mean")


_UNPICKLE = """
import pickle, sys, torch
transform, x = pickle.loads(sys.stdin.buffer.read())
torch.manual_seed(5)
sys.stdout.buffer.write(pickle.dumps(transform(x)))
"""


def test_transform_unpickles_in_a_fresh_process():
    # as in a spawn/forkserver DataLoader worker: torchvision is not imported yet, and must not be
    # imported by pickle directly (a bare ``import torchvision`` can fail; see mmim.timm_compat)
    transform, x = build_transform(20, augment=True, mean=0.3, std=0.2), _image(1, 24, 28)
    run = subprocess.run([sys.executable, "-c", _UNPICKLE], input=pickle.dumps((transform, x)), capture_output=True)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    torch.manual_seed(5)
    torch.testing.assert_close(pickle.loads(run.stdout), transform(x), rtol=0, atol=0)
