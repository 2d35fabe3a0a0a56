"""mmim's point-cloud modality (Point-MAE): FPS + kNN point patches, Chamfer losses, point formats.

Only the :class:`~mmim.registry.Plugin` declaration lives here (no heavy imports); components
are imported when a recipe names them.
"""

from mmim.registry import Plugin

plugin = Plugin(
    name="points",
    description="point patches (FPS + kNN, mini-PointNet), Chamfer losses, ModelNet40/ShapeNet-55/ScanObjectNN/mesh files, procedural primitives (embedded)",
    modality="points",
    components={
        "tokenizer": {"point_patch": "mmim_points.tokenizer:PointPatchTokenizer"},
        "masker": {
            "point_random": "mmim_points.maskers:PointRandomMasker",
            "point_block": "mmim_points.maskers:PointBlockMasker",
        },
        "loss": {
            "chamfer_l2": "mmim_points.loss:ChamferL2Loss",
            "chamfer_l1": "mmim_points.loss:ChamferL1Loss",
        },
        "decoder": {"pointmae": "mmim_points.decoder:PointMAEDecoder"},
        "converter": {"pointmae": "mmim_points.converters.pointmae:load_pointmae_checkpoint"},
        "visualizer": {"point_patch": "mmim_points.visualize:PointVisualizer"},
        "dataset": {
            "primitives": "mmim_points.datasets.primitives:Primitives",
            "modelnet40": "mmim_points.datasets.modelnet:ModelNet40",
            "modelnet40_h5": "mmim_points.datasets.modelnet:ModelNet40H5",
            "shapenet55": "mmim_points.datasets.shapenet:ShapeNet55",
            "scanobjectnn": "mmim_points.datasets.scanobjectnn:ScanObjectNN",
            "point_folder": "mmim_points.datasets.folder:PointFolder",
        },
    },
    recipes="mmim_points/recipes",
    default_recipe="pointmae_primitives.yaml",
)
