"""Generic components of the core, registered as the ``core`` plugin through the entry-point group.

They know nothing about any modality: they work on token layouts, token contents and tensors.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="core",
    description="generic maskers, targets, losses and decoders shared by every modality",
    components={
        "masker": {"random": "mmim.components.random_masker:RandomMasker"},
        "target": {
            "content": "mmim.components.content_target:ContentTarget",
            "class_ids": "mmim.components.content_target:ClassIdTarget",
            "teacher_features": "mmim.components.feature_target:TeacherFeatureTarget",
        },
        "loss": {
            "mse": "mmim.components.regression_loss:MSELoss",
            "l1": "mmim.components.regression_loss:L1Loss",
            "smooth_l1": "mmim.components.regression_loss:SmoothL1Loss",
            "info_nce": "mmim.components.contrastive_loss:InfoNCELoss",
            "cosine": "mmim.components.contrastive_loss:CosineLoss",
            "cross_entropy": "mmim.components.classification_loss:CrossEntropyLoss",
        },
        "decoder": {
            "mae": "mmim.components.mae_decoder:MAEDecoder",
            "linear": "mmim.components.linear_head:LinearHead",
            "multimae": "mmim.fusion.decoders:MultiMAEDecoder",
            "joint": "mmim.fusion.decoders:JointDecoder",
        },
        "dataset": {"paired": "mmim.data.paired:PairedDataset"},
    },
)
