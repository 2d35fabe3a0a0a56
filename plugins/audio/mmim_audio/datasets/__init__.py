"""The audio plugin's datasets; each item is ``{"audio": (1, T, F) float32 fbank, "label": int}``.

- :class:`SpokenDigits`: the embedded default (espeak-ng digits, held-out voices for testing).
- :class:`AudioList`: AudioSet-style JSON / CSV data files (path + labels).
- :class:`ESC50`: the ESC-50 folder layout with its 5 folds.
- :class:`SpeechCommands`: the Speech Commands (v1/v2) folder layout and split lists.
- :class:`AudioFolder`: audio files in class folders.
"""

from mmim_audio.datasets.audio_folder import AudioFolder
from mmim_audio.datasets.audio_list import AudioList
from mmim_audio.datasets.clips import AudioClipDataset
from mmim_audio.datasets.esc50 import ESC50
from mmim_audio.datasets.speech_commands import SpeechCommands
from mmim_audio.datasets.spoken_digits import SpokenDigits

__all__ = ["AudioClipDataset", "AudioFolder", "AudioList", "ESC50", "SpeechCommands", "SpokenDigits"]
