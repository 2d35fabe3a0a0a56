"""mmim's training input pipelines against the official ones, on the same generated files, one core each.

Used by ``bench_loaders.py --vs-official``. The official sides run from their checkouts, unmodified:

- **VideoMAE** (``MCG-NJU/VideoMAE`` in ``--official-dir/VideoMAE``): ``datasets.build_pretraining_dataset(args)``,
  i.e. ``kinetics.VideoMAE`` (decord) with ``DataAugmentationForVideoMAE`` (``GroupMultiScaleCrop``, stack,
  float, normalise, tube mask), exactly as ``run_mae_pretraining.py`` builds it.
- **MAE** (``facebookresearch/mae`` in ``--official-dir/mae``): ``torchvision.datasets.ImageFolder`` with the
  ``transform_train`` that ``main_pretrain.py`` builds; that statement is read from the checkout's source and
  executed (``main_pretrain.py`` itself cannot be imported: it asserts ``timm == 0.3.2``).

Two environment shims, neither touching the official code: ``import torchvision`` goes through
:func:`mmim.timm_compat.import_torchvision` (the PyPI torchvision wheel here lacks its kernels), and
``numpy.lib.function_base`` (gone in NumPy 2, imported by ``kinetics.py`` for an unused name) is aliased.

Get the checkouts with ``git clone https://github.com/MCG-NJU/VideoMAE .official/VideoMAE`` and
``git clone https://github.com/facebookresearch/mae .official/mae`` (``.official/`` is git-ignored).

Both sides go through a ``DataLoader`` in the main process (``num_workers=0``: one core), with one torch
thread; rounds alternate official / mmim so that machine noise hits both alike. Frames decoded per clip: the
official side (decord) decodes every frame from the keyframe before a clip to its last frame
(:func:`mmim_video.reader.keyframe_span` of the indices it asks decord for); mmim's PyAV reader counts what
it decodes (:data:`mmim_video.reader.DECODE_STATS`).
"""

from __future__ import annotations

import ast
import contextlib
import sys
import time
import types
from argparse import Namespace
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


# --- files --------------------------------------------------------------------------------------------------

def write_k400_like(path: Path, seconds: float, fps: int, width: int, height: int, keyint: int, seed: int) -> None:
    """A K400-like clip: H.264 (libx264, CRF 23, yuv420p, B-frames), a keyframe every ``keyint`` frames (no
    scene-cut keyframes), smooth moving texture with a moving object."""
    import av
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 10, width // 8 + 10, 3), dtype=np.uint8)
    texture = np.asarray(Image.fromarray(small).resize((width + 80, height + 80), Image.BILINEAR))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "g": str(keyint), "sc_threshold": "0"}
        for t in range(int(seconds * fps)):
            dy, dx = int(40 + 35 * np.sin(t / 40)), int(40 + 35 * np.cos(t / 55))
            img = np.ascontiguousarray(texture[dy:dy + height, dx:dx + width])
            x0 = (3 * t) % max(1, width - 48)
            img[height // 3:height // 3 + 48, x0:x0 + 48] = (230, 190, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_videos(folder: Path, clips: int, width: int, height: int, keyint: int, seconds: float = 10.0,
                fps: int = 30) -> Path:
    """``clips`` K400-like files and a ``path label`` list (``train.csv``, read by both sides); reused if present."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(clips):
        path = folder / f"clip{i:03d}.mp4"
        if not path.is_file():
            write_k400_like(path, seconds, fps, width, height, keyint, seed=i)
        lines.append(f"{path} {i % 4}\n")
    (folder / "train.csv").write_text("".join(lines))
    return folder / "train.csv"


def make_images(folder: Path, n: int, width: int = 500, height: int = 375) -> Path:
    """``n`` ImageNet-like JPEGs (quality 90) in 4 class folders under ``folder/train``; reused if present."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / "train" / f"c{i % 4}" / f"{i}.jpg"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(small).resize((width, height), Image.BICUBIC).save(path, quality=90)
    return folder


# --- the official sides ---------------------------------------------------------------------------------------

def _environment_shims() -> None:
    from mmim.timm_compat import import_torchvision

    import_torchvision()
    try:
        import numpy.lib.function_base  # noqa: F401
    except ImportError:
        shim = types.ModuleType("numpy.lib.function_base")
        shim.disp = getattr(np, "disp", print)
        sys.modules["numpy.lib.function_base"] = shim


@contextlib.contextmanager
def on_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


class DecordSpy:
    """Records the indices the official code asks decord for (``VideoReader.get_batch``), per file."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[int]]] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        try:
            import decord
        except ImportError:  # no decord: nothing to record (the official VideoMAE needs it to run at all)
            yield
            return

        real, spy = decord.VideoReader, self

        class Recording(real):  # type: ignore[misc, valid-type]
            def __init__(self, uri, *args, **kwargs):
                super().__init__(uri, *args, **kwargs)
                self._uri = str(uri)

            def get_batch(self, indices):
                spy.requests.append((self._uri, [int(i) for i in indices]))
                return super().get_batch(indices)

        decord.VideoReader = Recording
        kinetics = sys.modules.get("kinetics")
        before = getattr(kinetics, "VideoReader", None) if kinetics else None
        if kinetics is not None and before is not None:
            kinetics.VideoReader = Recording
        try:
            yield
        finally:
            decord.VideoReader = real
            if kinetics is not None and before is not None:
                kinetics.VideoReader = before


def official_videomae(checkout: Path, list_file: Path, num_frames: int = 16, sampling_rate: int = 4,
                      input_size: int = 224, mask_ratio: float = 0.9) -> Any:
    """The official pre-training dataset, built by ``datasets.build_pretraining_dataset`` as
    ``run_mae_pretraining.py`` builds it (tube masking, 16 x 224 x 224 with tubelet 2 x 16 x 16)."""
    if not (checkout / "datasets.py").is_file():
        raise FileNotFoundError(f"{checkout}: no VideoMAE checkout (git clone https://github.com/MCG-NJU/VideoMAE "
                                f"{checkout})")
    _environment_shims()
    with on_path(checkout):
        import datasets as videomae_datasets  # the official module

        args = Namespace(data_path=str(list_file), num_frames=num_frames, sampling_rate=sampling_rate,
                         input_size=input_size, mask_type="tube", mask_ratio=mask_ratio,
                         window_size=(num_frames // 2, input_size // 16, input_size // 16))
        with contextlib.redirect_stdout(None):
            return videomae_datasets.build_pretraining_dataset(args)


def official_mae_transform(checkout: Path, input_size: int = 224) -> Callable:
    """``transform_train`` as ``main_pretrain.py`` writes it, executed from the checkout's source."""
    source = (checkout / "main_pretrain.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "transform_train" for t in node.targets):
            statement = ast.Module(body=[node], type_ignores=[])
            break
    else:
        raise ValueError(f"{checkout / 'main_pretrain.py'}: no transform_train assignment")
    _environment_shims()
    import torchvision.transforms as transforms

    scope = {"transforms": transforms, "args": Namespace(input_size=input_size)}
    exec(compile(statement, str(checkout / "main_pretrain.py"), "exec"), scope)  # noqa: S102
    return scope["transform_train"]


def official_mae(checkout: Path, root: Path, input_size: int = 224) -> Any:
    _environment_shims()
    from torchvision import datasets

    return datasets.ImageFolder(str(root / "train"), transform=official_mae_transform(checkout, input_size))


# --- timing -------------------------------------------------------------------------------------------------

def read_loader(make: Callable[[int], Iterator], batches: int, copies: int = 1) -> tuple[float, int]:
    """Seconds and clips for ``batches`` batches of the loader ``make(seed)`` (its first batch untimed)."""
    epoch = 0
    it = make(epoch)
    next(it)
    start, clips = time.perf_counter(), 0
    for _ in range(batches):
        batch = next(it, None)
        if batch is None:  # a small set of files: the next epoch
            epoch += 1
            it = make(epoch)
            batch = next(it)
        first = batch[0] if isinstance(batch, (list, tuple)) else next(iter(batch.values()))
        clips += len(first) * copies
    return time.perf_counter() - start, clips


def alternate(sides: dict[str, Callable[[], tuple[float, int]]], rounds: int) -> dict[str, dict[str, float]]:
    """Run every side once per round, in turn; per side the clips/s of each round and their median."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            secs, clips = sides[name]()
            rates[name].append(clips / secs)
    return {name: {"median": float(np.median(v)), "rounds": v} for name, v in rates.items()}
