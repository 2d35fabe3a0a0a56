"""Build the Fashion-MNIST subset embedded in ``mmim_image/data/fashion_mnist``.

From the full dataset (by default Debian's ``dataset-fashion-mnist`` in
``/usr/share/datasets/fashion-mnist``) it keeps, for every class, the first 600 images of the
official train split and the first 100 of the official test split, in their official order, and
writes them as gzip'd IDX files with the original names. gzip runs with ``mtime=0`` and no file
name, so rebuilding gives byte-identical files. Usage (from the repository root)::

    python plugins/image/scripts/build_embedded_fashion_mnist.py
    python plugins/image/scripts/build_embedded_fashion_mnist.py --source DIR --out DIR --train-per-class 600
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch
from torch import Tensor

from mmim_image.datasets.fashion_mnist import CLASSES, FILES, FULL_ROOT, load_split
from mmim_image.datasets.idx import read_idx, write_idx

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "mmim_image" / "data" / "fashion_mnist"


def balanced_indices(labels: Tensor, per_class: int) -> Tensor:
    """The first ``per_class`` indices of every class, merged back into file order.

    Args:
        labels: ``(N,)`` class of every sample.
        per_class: how many samples to keep per class.

    Returns:
        ``(num_classes * per_class,)`` increasing indices.

    Raises:
        SystemExit: a class has fewer than ``per_class`` samples.
    """
    chosen = []
    for c in range(len(CLASSES)):
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < per_class:
            sys.exit(f"class {c} ({CLASSES[c]}) has only {idx.numel()} samples, {per_class} requested")
        chosen.append(idx[:per_class])
    return torch.cat(chosen).sort().values


def build_split(source: Path, out: Path, split: str, per_class: int) -> list[Path]:
    """Write the balanced subset of ``split`` into ``out``; return the written files."""
    images, labels = load_split(source, split)
    keep = balanced_indices(labels, per_class)
    image_file, label_file = (out / f"{stem}.gz" for stem in FILES[split])
    write_idx(image_file, images[keep].contiguous())
    write_idx(label_file, labels[keep].to(torch.uint8))
    # read back through the package's strict parser
    assert torch.equal(read_idx(image_file, ndim=3, dtype=torch.uint8), images[keep])
    counts = torch.bincount(read_idx(label_file, ndim=1, dtype=torch.uint8).long(), minlength=len(CLASSES))
    assert counts.tolist() == [per_class] * len(CLASSES), counts
    print(f"{split}: kept {keep.numel()} of {labels.numel()} ({per_class} per class)")
    return [image_file, label_file]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path(FULL_ROOT), help="folder with the full IDX .gz files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--train-per-class", type=int, default=600)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = build_split(args.source, args.out, "train", args.train_per_class)
    written += build_split(args.source, args.out, "test", args.test_per_class)
    total = 0
    for path in written:
        size = path.stat().st_size
        total += size
        print(f"{size:>10,d}  {hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}")
    print(f"{total:>10,d}  total in {args.out}")


if __name__ == "__main__":
    main()
