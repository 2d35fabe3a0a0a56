"""mmim's video modality (VideoMAE / VideoMAE v2): tubelet tokens, tube and running-cell masking,
per-tubelet normalised pixel targets, the VideoMAE decoder and official checkpoint converters.

Only the :class:`~mmim.registry.Plugin` declaration lives here (no heavy imports); components are
imported when a recipe names them.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="video",
    description="3-D tubelet tokens, tube and running-cell masking, VideoMAE targets and decoder, official converters, video list files, Kinetics CSVs and folders, Moving Fashion-MNIST (embedded)",
    modality="video",
    components={
        "tokenizer": {"tubelet": "mmim_video.tokenizer:TubeletTokenizer"},
        "masker": {
            "tube": "mmim_video.maskers:TubeMasker",
            "running_cell": "mmim_video.maskers:RunningCellMasker",
        },
        "target": {"tubelet_pixels": "mmim_video.target:TubeletPixelTarget"},
        "decoder": {"videomae": "mmim_video.decoder:VideoMAEDecoder"},
        "visualizer": {"tubelet": "mmim_video.visualize:VideoVisualizer"},
        "converter": {
            "videomae": "mmim_video.converters.videomae:load_videomae_checkpoint",
            "hf": "mmim_video.converters.transformers:load_transformers_checkpoint",
        },
        "exporter": {"transformers": "mmim_video.converters.transformers:export_transformers"},
        "dataset": {
            "video_list": "mmim_video.dataset:VideoList",
            "video_folder": "mmim_video.dataset:VideoFolder",
            "kinetics_csv": "mmim_video.kinetics:KineticsCSV",
            "moving_fashion": "mmim_video.embedded:MovingFashion",
        },
    },
    recipes="mmim_video/recipes",
    default_recipe="videomae_moving_fashion.yaml",
    extras={"video": ("av", "decord", "torchcodec")},  # any one decoding backend
)
