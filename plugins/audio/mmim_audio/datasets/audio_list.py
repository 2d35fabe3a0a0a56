"""AudioSet-style data files: a JSON (AST / Audio-MAE format) or CSV list of audio paths and labels.

JSON: ``{"data": [{"wav": "path/to/clip.wav", "labels": "/m/07rwj,/m/09x0r"}, ...]}``.
CSV: a header row with a path column (``wav``, ``path``, ``file`` or ``filename``) and a label
column (``labels``, ``label``, ``target`` or ``category``); several labels in one field are
separated by ``,`` or ``;``. Labels are AudioSet ids (``/m/...``), display names or integer
indices, resolved through ``label_csv`` (AudioSet's ``class_labels_indices.csv``: ``index,mid,
display_name``) or a ``classes`` list. An unknown label is an error naming the data file and the
line of its entry.

Multi-label lists (AudioSet: 527 classes, several per clip) give ``"label"`` as a float32 multi-hot
``(num_classes,)`` vector, ``(B, num_classes)`` once batched: the target of a BCE loss
(``finetune.multilabel: true``) and of mAP.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_audio.datasets.clips import AudioClipDataset

PATH_COLUMNS = ("wav", "path", "file", "filename")
LABEL_COLUMNS = ("labels", "label", "target", "category")


def _text_file(read):  # noqa: ANN001, ANN202 - decorator
    """A binary or wrongly encoded list file fails naming the file (not a bare UnicodeDecodeError)."""
    @functools.wraps(read)
    def wrapped(path: Path):  # noqa: ANN202
        try:
            return read(path)
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    return wrapped


@_text_file
def read_label_csv(path: Path) -> tuple[list[str], dict[str, int]]:
    """Class names and a lookup ``{mid or display name or index: index}`` from ``index,mid,display_name``."""
    if not path.is_file():
        raise DataError(f"{path}: class label file not found (expected index,mid,display_name)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"index", "display_name"} <= set(rows[0]):
        raise DataError(f"{path}: expected columns index,mid,display_name")
    names: list[str | None] = [None] * len(rows)
    lookup: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        try:
            i = int(row["index"])
        except (TypeError, ValueError):
            raise DataError(f"{path}:{line}: index {row['index']!r} is not an integer") from None
        if not 0 <= i < len(rows):
            raise DataError(f"{path}:{line}: index {i} outside 0..{len(rows) - 1}")
        if names[i] is not None:
            raise DataError(f"{path}:{line}: index {i} given twice")
        names[i] = row["display_name"]
        lookup.update({row["display_name"]: i, str(i): i})
        if row.get("mid"):
            lookup[row["mid"]] = i
    return [str(n) for n in names], lookup


def _entry_lines(text: str, wavs: Sequence[str]) -> list[int]:
    """1-based line of each JSON entry, found by its ``wav`` string in order (0 where not found)."""
    lines, pos = [], 0
    for wav in wavs:
        found = text.find(json.dumps(wav)[1:-1], pos)
        if found < 0:
            lines.append(0)
            continue
        lines.append(text.count("\n", 0, found) + 1)
        pos = found + 1
    return lines


@_text_file
def read_entries(path: Path) -> list[tuple[str, list[str], int]]:
    """``[(audio path, [label strings], line)]`` of a JSON or CSV data file."""
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    if path.suffix.lower() == ".json":
        text = path.read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err
        items = data.get("data") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise DataError(f"{path}: expected {{'data': [{{'wav': ..., 'labels': ...}}, ...]}}")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "wav" not in item:
                raise DataError(f"{path}: entry {i} has no 'wav'")
        lines = _entry_lines(text, [str(item["wav"]) for item in items])
        return [(str(item["wav"]), _split_labels(item.get("labels", "")), line) for item, line in zip(items, lines)]
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        path_col = next((c for c in PATH_COLUMNS if c in fields), None)
        label_col = next((c for c in LABEL_COLUMNS if c in fields), None)
        if path_col is None or label_col is None:
            raise DataError(f"{path}: needs a path column ({'/'.join(PATH_COLUMNS)}) and a label column "
                            f"({'/'.join(LABEL_COLUMNS)}); header is {fields}")
        return [(row[path_col], _split_labels(row[label_col]), reader.line_num) for row in reader]


def _split_labels(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v).strip() for v in value]
    return [part.strip() for part in re.split(r"[,;]", str(value)) if part.strip()]


class AudioList(AudioClipDataset):
    """Labelled audio files listed in a data file (AudioSet, or any list in the same format).

    Args:
        split: fills ``{split}`` in ``data_file`` (e.g. ``/data/audioset/{split}.json``).
        augment: training augmentation.
        data_file: JSON or CSV list; ``{split}`` is replaced by the split name.
        label_csv: AudioSet-style ``index,mid,display_name`` file naming the classes.
        classes: class names instead of ``label_csv`` (labels are names or indices into it).
        root: base folder for relative audio paths (default: the data file's folder).
        multi_label: ``"label"`` is a float32 multi-hot ``(num_classes,)`` vector; ``None``: when any
            file has more than one label. Set it explicitly for AudioSet so that every split (even
            one whose clips all carry a single label) gives the same kind of target.
        **options: :class:`AudioClipDataset` options (defaults: AudioSet's 1024 frames, statistics).
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_audio.datasets.examples import audio_list_example

        return audio_list_example(root)

    def __init__(self, split: str, augment: bool, data_file: str, label_csv: str | None = None,
                 classes: Sequence[str] | None = None, root: str | None = None, multi_label: bool | None = None,
                 **options: Any) -> None:
        self.split = split
        self.data_file = Path(data_file.replace("{split}", split)).expanduser()
        if label_csv is not None:
            names, lookup = read_label_csv(Path(label_csv).expanduser())
        elif classes is not None:
            names = list(classes)
            lookup = {**{n: i for i, n in enumerate(names)}, **{str(i): i for i in range(len(names))}}
        else:
            raise ValueError("AudioList needs label_csv (index,mid,display_name) or a classes list")
        base = Path(root).expanduser() if root is not None else self.data_file.parent
        entries = read_entries(self.data_file)
        samples: list[tuple[str, Any]] = []
        lines = []
        for path, labels, line in entries:
            where = f"{self.data_file}:{line}" if line else f"{self.data_file} (entry {len(samples)})"
            unknown = [lab for lab in labels if lab not in lookup]
            if unknown:
                source = f" (classes from {label_csv})" if label_csv is not None else ""
                raise DataError(f"{where}: unknown label(s) {unknown} for {path}{source}")
            if not labels:
                raise DataError(f"{where}: {path} has no label")
            resolved = str(path if Path(path).is_absolute() else base / path)
            samples.append((resolved, sorted({lookup[lab] for lab in labels})))
            lines.append(where)
        if multi_label is None:
            multi_label = any(len(labels) != 1 for _, labels in samples)
        if not multi_label:
            bad = next((i for i, (_, ls) in enumerate(samples) if len(ls) != 1), None)
            if bad is not None:
                raise DataError(f"{lines[bad]}: {samples[bad][0]} has {len(samples[bad][1])} labels; "
                                f"set multi_label: true")
            samples = [(p, ls[0]) for p, ls in samples]
        super().__init__(samples, names, augment, **options)

    @classmethod
    def shard_decoder(cls, split: str, augment: bool, **options: Any) -> AudioList:
        """Decodes shard records without the list, the label CSV or the audio files."""
        return cls._shard_decoder(augment, options, ("data_file", "label_csv", "classes", "root", "multi_label"))
