"""mmim's multimodal plugin: MultiMAE checkpoints, paired and derived-modality data sets, and the
fusion recipes. The fusion machinery itself (budgets, decoders) is in the core (:mod:`mmim.fusion`);
this plugin holds no modality code of its own — its data sets combine other plugins' data.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="multimodal",
    description="MultiMAE/4M fusion recipes, MultiMAE checkpoints, image+derived-modality and audio-visual data",
    modality="multimodal",
    components={
        "converter": {"multimae": "mmim_multimodal.converters.multimae:load_multimae_checkpoint"},
        "dataset": {
            "image_derived": "mmim_multimodal.derived:ImageDerived",
            "multitask_folder": "mmim_multimodal.folder:MultiTaskFolder",
        },
    },
    recipes="mmim_multimodal/recipes",
    default_recipe="multimae_fashion_derived.yaml",
)
