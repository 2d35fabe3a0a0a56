"""Build the Moving-Fashion-MNIST clips embedded in ``mmim_video/data/moving_fashion``.

Each clip is one Fashion-MNIST garment (from the image plugin's embedded subset, resized to 22 x 22)
moving in a straight line over a black ``32 x 32`` frame for 16 frames, in one of four directions (right,
left, down, up) at 0.4-0.6 px per frame (6-9 px over the clip; sub-pixel positions, bilinear), from a
random start that keeps it inside the frame. The garment fills about half of the frame: with the earlier
64 x 64 frames (a garment on ~20 % of the frame) about 70 % of the tubelets were constant black and the
probe did not beat random init; with a 28 px garment drifting 0.1-0.2 px per frame (the second version)
the garment class was learnt but the motion moved too little (1.5-3 px) to be learnt at all.
``--frame``, ``--garment`` (resized with PIL bicubic) and ``--min-speed`` / ``--max-speed`` change the
geometry. Train clips use images of the train split, test clips images of the test split (the first
``per_class`` of each class, in file order); every class has the same number of clips per motion.
Clips are real H.264 (libx264, yuv420p, CRF 23, preset medium, one thread) in MP4 at 8 fps;
``index.csv`` lists ``file,class,motion,split,source_index``. The rendered frames derive from one seed;
libx264's bytes were identical between builds into folders whose paths have the same length, but could
differ otherwise (see the data README), so the committed clips are the reference. Usage (from the
repository root)::

    python plugins/video/scripts/build_embedded_moving_mnist.py
    python plugins/video/scripts/build_embedded_moving_mnist.py --out DIR --train-per-class 60 --test-per-class 20
    python plugins/video/scripts/build_embedded_moving_mnist.py --out DIR --frame 32 --garment 28 --min-speed 0.1 --max-speed 0.2
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from mmim_image.datasets.fashion_mnist import CLASSES, embedded_root, load_split

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mmim_video" / "data" / "moving_fashion"
MOTIONS = ["right", "left", "down", "up"]
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}  # (dy, dx)
FRAMES, FPS, CRF = 16, 8, 23
FRAME_SIZE, GARMENT_SIZE, SPEED = 32, 22, (0.4, 0.6)


def resize_garment(image: np.ndarray, size: int) -> np.ndarray:
    """``(28, 28)`` uint8 -> ``(size, size)`` float64 in ``[0, 255]`` (bicubic, PIL)."""
    from PIL import Image

    if size == image.shape[0]:
        return image.astype(np.float64)
    out = Image.fromarray(image).resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float64), 0, 255)


def place(canvas: np.ndarray, garment: np.ndarray, y: float, x: float) -> None:
    """Add ``garment`` at the sub-pixel position ``(y, x)`` of ``canvas`` (bilinear weights of 4 integer shifts)."""
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    fy, fx = y - y0, x - x0
    g = garment.shape[0]
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            if wy * wx > 0:
                canvas[y0 + dy:y0 + dy + g, x0 + dx:x0 + dx + g] += wy * wx * garment


def render(image: np.ndarray, motion: str, rng: np.random.Generator, frame: int, garment: int,
           speed: tuple[float, float]) -> np.ndarray:
    """One clip of ``image`` (resized to ``garment`` px) moving in direction ``motion`` across a black frame.

    Args:
        image: ``(28, 28)`` uint8 garment.
        motion: one of :data:`MOTIONS`.
        rng: source of speed and start position.
        frame: side of the square frame.
        garment: side of the rendered garment.
        speed: range of the speed in px per frame (sub-pixel positions, bilinear).

    Returns:
        ``(FRAMES, frame, frame)`` uint8 grey frames.
    """
    room = frame - garment - 1  # - 1: the bilinear placement spans garment + 1 pixels
    glyph = resize_garment(image, garment)
    step = rng.uniform(*speed)
    travel = step * (FRAMES - 1)
    if travel > room:
        sys.exit(f"a garment of {garment} px moving {travel:.1f} px does not fit in {frame} px")
    along = rng.uniform(0.0, room - travel)  # start along the motion axis, measured from the starting edge
    across = rng.uniform(0.0, room)
    dy, dx = DIRECTIONS[motion]
    clip = np.zeros((FRAMES, frame, frame), dtype=np.float64)
    for t in range(FRAMES):
        pos = along + step * t
        if dy < 0 or dx < 0:
            pos = room - pos  # left / up start at the far edge
        y, x = (pos, across) if dy else (across, pos)
        place(clip[t], glyph, y, x)
    return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def encode(path: Path, clip: np.ndarray) -> None:
    """Write grey frames ``(T, H, W)`` uint8 as H.264 MP4 (yuv420p; ``H``, ``W`` even).

    The frames go in as limited-range yuv420p planes built here (grey ``g`` -> ``Y = 16 + 219 g / 255``,
    ``U = V = 128``): PyAV's own RGB conversion is not byte-reproducible, this is.
    """
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
        stream.thread_count = 1  # one x264 thread: the same bytes on every run
        stream.options = {"crf": str(CRF), "preset": "medium", "x264-params": "threads=1:lookahead-threads=1"}
        chroma = np.full((clip.shape[1] // 2, clip.shape[2]), 128, dtype=np.uint8)  # U, V planes: no colour
        for t, frame in enumerate(clip):
            luma = (16 + np.round(frame.astype(np.float64) * 219 / 255)).astype(np.uint8)  # limited-range Y
            yuv = av.VideoFrame.from_ndarray(np.concatenate([luma, chroma]), format="yuv420p")
            yuv.pts, yuv.time_base = t, Fraction(1, FPS)  # explicit timestamps (rate control reads them)
            for packet in stream.encode(yuv):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def choose(labels: np.ndarray, per_class: int) -> list[int]:
    """The first ``per_class`` indices of every class, merged in file order."""
    out = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        if idx.size < per_class:
            sys.exit(f"class {c} has only {idx.size} images, {per_class} requested")
        out.extend(idx[:per_class].tolist())
    return sorted(out)


def build_split(out: Path, split: str, per_class: int, rng: np.random.Generator,
                args: argparse.Namespace) -> list[dict[str, object]]:
    """Render and encode one split's clips into ``out/split``; return their index rows."""
    if per_class % len(MOTIONS):
        sys.exit(f"--{split}-per-class must be a multiple of {len(MOTIONS)} (one share per motion)")
    images, labels = (t.numpy() for t in load_split(embedded_root(), split))
    chosen = choose(labels, per_class)
    seen = {c: 0 for c in range(len(CLASSES))}
    (out / split).mkdir(parents=True, exist_ok=True)
    rows, stats = [], []
    for n, src in enumerate(chosen):
        label = int(labels[src])
        motion = (seen[label] + label) % len(MOTIONS)  # balanced: per_class / 4 clips of each motion per class
        seen[label] += 1
        clip = render(images[src], MOTIONS[motion], rng, args.frame, args.garment, (args.min_speed, args.max_speed))
        name = f"{split}/{n:04d}.mp4"
        encode(out / name, clip)
        stats.append(clip.astype(np.float64) / 255.0)
        rows.append({"file": name, "class": label, "motion": motion, "split": split, "source_index": src})
    pixels = np.stack(stats)
    print(f"{split}: {len(rows)} clips; pixel mean {pixels.mean():.4f} std {pixels.std():.4f}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--train-per-class", type=int, default=60)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frame", type=int, default=FRAME_SIZE, help="frame side (px, even)")
    parser.add_argument("--garment", type=int, default=GARMENT_SIZE, help="rendered garment side (px)")
    parser.add_argument("--min-speed", type=float, default=SPEED[0], help="px per frame")
    parser.add_argument("--max-speed", type=float, default=SPEED[1], help="px per frame")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    rows = build_split(args.out, "train", args.train_per_class, rng, args)
    rows += build_split(args.out, "test", args.test_per_class, rng, args)
    with open(args.out / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    digest = hashlib.sha256()
    total = 0
    for path in sorted(args.out.rglob("*")):
        if path.is_file() and path.suffix in (".mp4", ".csv"):
            total += path.stat().st_size
            digest.update(path.read_bytes())
    print(f"{total:>10,d} bytes in {args.out}; sha256 of the clips and index: {digest.hexdigest()}")


if __name__ == "__main__":
    main()
