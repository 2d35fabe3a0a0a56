"""Kinetics annotations in the official CSV layout.

The Kinetics-400/600/700 releases describe each split by a CSV with a header row,
``label,youtube_id,time_start,time_end,split`` (``time_*`` in whole seconds; the test CSV of some
releases has no ``label``; extra columns such as ``is_cc`` are ignored). The usual downloaders name a
clip ``<youtube_id>_<time_start:06d>_<time_end:06d>.mp4`` and store it either under a folder per class
(``root/<label>/``, the ActivityNet crawler; spaces in the class name kept or replaced by ``_``) or flat
(``root/``, the CVDF archives). The VideoMAE repositories do not read these CSVs: they train from
``path label`` lists made from them (:class:`~mmim_video.dataset.VideoList`); this source reads the CSV
itself. Class indices are the sorted class names (or the order of a ``classes`` file, one name per line).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_video.dataset import VideoClips

REQUIRED = ("youtube_id", "time_start", "time_end")
LAYOUTS = ("auto", "class_folders", "flat")


def clip_name(youtube_id: str, start: int, end: int, extension: str = ".mp4") -> str:
    """The file name the Kinetics downloaders give a clip: ``<id>_<start:06d>_<end:06d>.mp4``."""
    return f"{youtube_id}_{start:06d}_{end:06d}{extension}"


def _seconds(value: str, column: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{where}: {column} {value!r} is not a number of seconds") from None
    if number < 0 or number != int(number):
        raise DataError(f"{where}: {column} {value!r} is not a whole, non-negative number of seconds")
    return int(number)


def read_kinetics_csv(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows ``{"label", "youtube_id", "start", "end", "line"}`` of an official Kinetics CSV.

    Args:
        path: the CSV (with its header row).
        split: keep only rows whose ``split`` column equals this (when the column exists).

    Raises:
        DataError: missing file or columns, a short row, bad times or an empty id, naming file and line.
    """
    if not path.is_file():
        raise DataError(f"{path}: Kinetics CSV not found")
    try:
        path.read_text()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text CSV ({err.reason} at byte {err.start})") from None
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (expected a header 'label,youtube_id,time_start,time_end,split')")
        columns = [c.strip() for c in header]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise DataError(f"{path}:1: missing columns {missing} in header {columns} "
                            "(expected 'label,youtube_id,time_start,time_end,split')")
        col = {c: i for i, c in enumerate(columns)}
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            where = f"{path}:{line_no}"
            if len(row) != len(columns):
                raise DataError(f"{where}: {len(row)} fields, the header has {len(columns)}")
            if split is not None and "split" in col and row[col["split"]].strip() != split:
                continue
            youtube_id = row[col["youtube_id"]].strip()
            if not youtube_id:
                raise DataError(f"{where}: empty youtube_id")
            start = _seconds(row[col["time_start"]].strip(), "time_start", where)
            end = _seconds(row[col["time_end"]].strip(), "time_end", where)
            if end <= start:
                raise DataError(f"{where}: time_end {end} is not after time_start {start}")
            label = row[col["label"]].strip() if "label" in col else ""
            rows.append({"label": label, "youtube_id": youtube_id, "start": start, "end": end, "line": line_no})
    if not rows:
        raise DataError(f"{path}: no clips" + (f" of split {split!r}" if split else ""))
    return rows


def read_classes(path: Path) -> list[str]:
    """Class names, one per line (blank lines ignored)."""
    if not path.is_file():
        raise DataError(f"{path}: class list not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate class names")
    return names


def clip_path(root: Path, label: str, name: str, layout: str) -> Path:
    """Where a clip lies: ``root/<label>/name`` (label as written or with ``_`` for spaces) or ``root/name``."""
    folders = [root / label, root / label.replace(" ", "_")] if label else []
    if layout == "flat" or not folders:
        return root / name
    if layout == "class_folders":
        return next((d / name for d in folders if d.is_dir()), folders[0] / name)
    for candidate in [d / name for d in folders] + [root / name]:  # auto: the first that exists
        if candidate.is_file():
            return candidate
    return next((d / name for d in folders if d.is_dir()), root / name)


class KineticsCSV(VideoClips):
    """Kinetics clips listed by an official CSV (``label,youtube_id,time_start,time_end,split``).

    Args:
        split: fills ``{split}`` in ``csv_file`` and ``root``; also selects rows by the ``split``
            column when ``filter_split`` (injected).
        augment: training augmentation (injected).
        root: folder of the clips, e.g. ``/data/k400/{split}``.
        csv_file: the annotation CSV, e.g. ``/data/k400/annotations/{split}.csv``.
        classes: a file of class names (one per line, in label order); default: the sorted labels of the CSV.
        layout: ``"auto"`` (per clip: the class folder if the file is there, else flat), ``"class_folders"``
            or ``"flat"``.
        extension: clip file suffix.
        filter_split: keep only rows whose ``split`` column equals ``split`` (for a CSV holding several splits).
        **options: :class:`~mmim_video.dataset.VideoClips` options.

    A missing clip file is reported when read (``CorruptSampleError`` naming the file and the CSV line;
    skipped with ``data.skip_corrupt=true``).
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_video.examples import kinetics_csv_example

        return kinetics_csv_example(root)

    def __init__(self, split: str, augment: bool, root: str, csv_file: str, classes: str | None = None,
                 layout: str = "auto", extension: str = ".mp4", filter_split: bool = False,
                 **options: Any) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        path, base = Path(csv_file.format(split=split)), Path(root.format(split=split))
        rows = read_kinetics_csv(path, split if filter_split else None)
        if classes is not None:
            self.classes = read_classes(Path(classes))
        else:
            self.classes = sorted({r["label"] for r in rows if r["label"]})
        index = {name: i for i, name in enumerate(self.classes)}
        samples = []
        for r in rows:
            if r["label"] and r["label"] not in index:
                raise DataError(f"{path}:{r['line']}: label {r['label']!r} is not in the class list {classes}")
            name = clip_name(r["youtube_id"], r["start"], r["end"], extension)
            label = index[r["label"]] if r["label"] else -1  # -1: an unlabelled (test) clip
            samples.append((str(clip_path(base, r["label"], name, layout)), label, r["line"]))
        super().__init__(samples, str(path), augment, num_classes=len(self.classes) or 1, **options)

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, **options: Any) -> KineticsCSV:
        """Decodes shard records without the CSV or the clips."""
        return cls._shard_decoder(augment, options, ("root", "csv_file", "classes", "layout", "extension",
                                                     "filter_split"))
