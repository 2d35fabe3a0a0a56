"""mmim's audio modality (Audio-MAE): Kaldi filterbanks, spectrogram patches, time/frequency masking.

Only the :class:`~mmim.registry.Plugin` declaration lives here (no heavy imports); components are
imported when a recipe names them.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="audio",
    description="log-mel spectrogram patches, time/frequency masking, Audio-MAE decoders, audio datasets",
    modality="audio",
    components={
        "tokenizer": {"spectrogram_patch": "mmim_audio.tokenizer:SpectrogramPatchTokenizer"},
        "masker": {
            "time": "mmim_audio.maskers:TimeMasker",
            "frequency": "mmim_audio.maskers:FrequencyMasker",
            "time_frequency": "mmim_audio.maskers:TimeFrequencyMasker",
        },
        "decoder": {"audiomae_local": "mmim_audio.local_decoder:AudioMAELocalDecoder"},
        "visualizer": {"spectrogram_patch": "mmim_audio.visualize:SpectrogramVisualizer"},
        "converter": {"audiomae": "mmim_audio.converters.audiomae:load_audiomae_checkpoint"},
        "dataset": {
            "spoken_digits": "mmim_audio.datasets:SpokenDigits",
            "audio_list": "mmim_audio.datasets:AudioList",
            "esc50": "mmim_audio.datasets:ESC50",
            "speech_commands": "mmim_audio.datasets:SpeechCommands",
            "audio_folder": "mmim_audio.datasets:AudioFolder",
        },
    },
    recipes="mmim_audio/recipes",
    default_recipe="audiomae_spoken_digits.yaml",
    extras={"audio": ("soundfile",)},  # decoding; torchaudio is optional
)
