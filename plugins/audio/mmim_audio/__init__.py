"""mmim's audio modality (Audio-MAE): Kaldi filterbanks, spectrogram patches, time/frequency masking.

Only the :class:`~mmim.registry.Plugin` declaration lives here (no heavy imports).
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="audio",
    description="log-mel spectrogram patches, time/frequency masking, Audio-MAE decoders, audio datasets",
    modality="audio",
    components={},
)
