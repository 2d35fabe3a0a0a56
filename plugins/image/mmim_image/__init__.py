"""mmim's image modality: 2-D patch tokens, image datasets and the MAE image recipes.

Only the :class:`~mmim.registry.Plugin` declaration lives here, so listing plugins imports
nothing heavy; components are imported when a recipe names them.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="image",
    description="2-D patch tokens, block and SimMIM masking, HOG targets, Fashion-MNIST (embedded), image folders",
    modality="image",
    components={
        "tokenizer": {
            "patch": "mmim_image.tokenizer:PatchTokenizer",
            "segmap": "mmim_image.tokenizer:SegMapTokenizer",
        },
        "masker": {
            "block": "mmim_image.maskers:BlockMasker",
            "mask_patch": "mmim_image.maskers:MaskPatchMasker",
        },
        "target": {"hog": "mmim_image.hog:HOGTarget"},
        "visualizer": {
            "patch": "mmim_image.visualize:ImageVisualizer",
            "segmap": "mmim_image.visualize:SegMapVisualizer",
        },
        "converter": {
            "mae": "mmim_image.converters.mae:load_mae_checkpoint",
            "hf": "mmim_image.converters.transformers:load_transformers_checkpoint",
        },
        "exporter": {
            "patch": "mmim_image.export:export_timm",
            "transformers": "mmim_image.converters.transformers:export_transformers",
        },
        "dataset": {
            "fashion_mnist": "mmim_image.datasets:FashionMNIST",
            "image_folder": "mmim_image.datasets:ImageFolder",
        },
    },
    recipes="mmim_image/recipes",
    default_recipe="mae_fashion_mnist.yaml",
)
