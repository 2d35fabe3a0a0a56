"""mmim: masked modeling across modalities on one engine.

Importing ``mmim`` is light; the trunk, engine and plugins import on use.
"""

__version__ = "0.1.0"


def load_encoder(path, device="cpu"):  # noqa: ANN001, ANN201 - a light alias; see mmim.export.load_encoder
    """Load an ``mmim export`` folder: a module giving the trained encoder's features (``mmim.export``)."""
    from mmim.export import load_encoder as _load

    return _load(path, device)
