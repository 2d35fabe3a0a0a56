"""Speech Commands (Warden 2018), v1 or v2: one-second words in class folders plus split lists.

Layout of the official release::

    root/<word>/<speaker>_nohash_<n>.wav
    root/validation_list.txt, root/testing_list.txt     paths relative to root
    root/_background_noise_/                             not a class

``validation`` and ``test`` are the listed files; ``train`` is every other clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmim.data import DataError
from mmim_audio.datasets.clips import AudioClipDataset, check_split
from mmim_audio.frontend import NORM_STATS, TARGET_FRAMES

# Audio-MAE's Speech Commands settings: 128 frames, dataset statistics
SPEECHCOMMANDS_FRAMES, SPEECHCOMMANDS_STATS = TARGET_FRAMES["speechcommands"], NORM_STATS["speechcommands"]
LISTS = {"validation": "validation_list.txt", "test": "testing_list.txt"}


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise DataError(f"{path}: split list not found (expected the Speech Commands layout)")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a UTF-8 text list ({err.reason} at byte {err.start})") from None
    return {line.strip() for line in text.splitlines() if line.strip()}


class SpeechCommands(AudioClipDataset):
    """Speech Commands read from its official folder layout; classes are the word folders.

    Args:
        split: ``"train"``, ``"validation"`` (``"val"``) or ``"test"``.
        augment: training augmentation.
        root: the extracted dataset folder.
        **options: :class:`AudioClipDataset` options (defaults: 128 frames, Speech Commands statistics).
    """

    @staticmethod
    def example_options(root: Path) -> dict[str, Any]:
        """A tiny instance for the conformance kit (``mmim check-plugin``): files written under ``root``."""
        from mmim_audio.datasets.examples import speech_commands_example

        return speech_commands_example(root)

    # defaults it gives the AudioClipDataset options (read by the visualizer for audio files)
    option_defaults = {"target_frames": SPEECHCOMMANDS_FRAMES, "norm_mean": SPEECHCOMMANDS_STATS[0],
                       "norm_std": SPEECHCOMMANDS_STATS[1]}

    def __init__(self, split: str, augment: bool, root: str, **options: Any) -> None:
        self.split = check_split(split, ("train", "validation", "test"))
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: Speech Commands root does not exist")
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        if not classes:
            raise DataError(f"{self.root}: no word folders")
        held_out = {name: _read_list(self.root / file) for name, file in LISTS.items()}
        samples = []
        for label, word in enumerate(classes):
            for wav in sorted((self.root / word).glob("*.wav")):
                rel = f"{word}/{wav.name}"
                in_split = rel in held_out[self.split] if self.split in held_out else \
                    not any(rel in listed for listed in held_out.values())
                if in_split:
                    samples.append((str(wav), label))
        for key, value in self.option_defaults.items():
            options.setdefault(key, value)
        super().__init__(samples, classes, augment, **options)
