"""mmim's image modality: 2-D patch tokens, image datasets and the MAE image recipes.

Only the :class:`~mmim.registry.Plugin` declaration lives here, so listing plugins imports
nothing heavy; components are imported when a recipe names them.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="image",
    description="2-D patch tokens, Fashion-MNIST (embedded), IDX and image-folder datasets",
    modality="image",
    components={
        "tokenizer": {"patch": "mmim_image.tokenizer:PatchTokenizer"},
        "dataset": {
            "fashion_mnist": "mmim_image.datasets:FashionMNIST",
            "image_folder": "mmim_image.datasets:ImageFolder",
        },
    },
    recipes="mmim_image/recipes",
    default_recipe="mae_fashion_mnist.yaml",
)
