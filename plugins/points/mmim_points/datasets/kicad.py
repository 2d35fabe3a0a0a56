"""Build a real CAD classification set from KiCad's 3-D component models (Debian ``kicad-packages3d``).

KiCad ships about 6,200 VRML meshes of electronic parts in ~90 ``<Family>.3dshapes`` folders
(DIP and SO packages, radial capacitors, pin headers, crystals, ...). This script samples a
cloud on each mesh's surface and writes the ``point_folder`` layout::

    out/<family>/{train,test}/<model>.npy      (points, 3) float32

so ``{name: point_folder, root: out}`` trains and probes on it. Nothing is downloaded; the data
stays on the machine (the meshes are CC-BY-SA 4.0 with KiCad's design exception)::

    apt-get install kicad-packages3d
    python -m mmim_points.datasets.kicad --out data/kicad_points --per-family 150
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from mmim.data import CorruptSampleError
from mmim_points.datasets.formats import read_point_file

SOURCE = Path("/usr/share/kicad/3dmodels")
# families with enough models that differ in shape (axial vs radial parts, packages, connectors)
FAMILIES = ("Capacitor_THT", "Connector_PinHeader_2.54mm", "Crystal", "Diode_THT", "LED_THT", "Package_DFN_QFN",
            "Package_DIP", "Package_SO", "Package_TO_SOT_THT", "Resistor_THT")
LICENSE = ("Source: Debian package kicad-packages3d (https://kicad.github.io/packages3d/), KiCad Community, "
           "CC-BY-SA 4.0 with the KiCad library exception. Clouds sampled on the .wrl meshes' surfaces by "
           "mmim_points.datasets.kicad.\n")


def build_kicad_points(out: str | Path, source: str | Path = SOURCE, families: tuple[str, ...] | list[str] = FAMILIES,
                       per_family: int = 150, num_points: int = 2048, test_fraction: float = 0.25,
                       seed: int = 0) -> dict[str, dict[str, int]]:
    """Sample ``num_points`` on up to ``per_family`` meshes of each family and split them.

    The models of a family are shuffled by ``seed`` (the same selection every time), the first
    ``round(test_fraction * n)`` go to ``test``. Unreadable meshes are skipped and reported.

    Returns:
        ``{family: {"train": count, "test": count, "skipped": count}}``.
    """
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: KiCad 3-D models not found (apt-get install kicad-packages3d)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "SOURCE.txt").write_text(LICENSE)
    summary: dict[str, dict[str, int]] = {}
    for family in families:
        files = sorted((source / f"{family}.3dshapes").glob("*.wrl"))
        if not files:
            raise FileNotFoundError(f"{source / (family + '.3dshapes')}: no .wrl models")
        random.Random(f"{seed}:{family}").shuffle(files)
        files = files[:per_family]
        n_test = round(test_fraction * len(files))
        counts = {"train": 0, "test": 0, "skipped": 0}
        for i, path in enumerate(files):
            split = "test" if i < n_test else "train"
            try:
                cloud = read_point_file(path, mesh_points=num_points, seed=i)
            except CorruptSampleError as err:
                print(f"skipped {err}")
                counts["skipped"] += 1
                continue
            if cloud.ndim != 2 or len(cloud) != num_points or not np.isfinite(cloud).all():
                print(f"skipped {path}: no surface to sample")
                counts["skipped"] += 1
                continue
            target = out / family / split / f"{path.stem}.npy"
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, cloud.astype(np.float32))
            counts[split] += 1
        summary[family] = counts
        print(f"{family}: {counts}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (point_folder layout)")
    parser.add_argument("--source", default=str(SOURCE))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--per-family", type=int, default=150)
    parser.add_argument("--num-points", type=int, default=2048)
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_kicad_points(args.out, args.source, args.families, args.per_family, args.num_points, args.test_fraction,
                       args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
