"""mmim's point-cloud modality (Point-MAE): FPS + kNN point patches, Chamfer losses, point formats.

Only the :class:`~mmim.registry.Plugin` declaration lives here (no heavy imports).
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="points",
    description="point-patch tokens (FPS + kNN, mini-PointNet), Chamfer losses, point-cloud datasets",
    modality="points",
    components={},
)
