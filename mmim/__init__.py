"""mmim: masked modeling across modalities on one engine.

Importing ``mmim`` is light; the trunk, engine and plugins import on use.
"""

__version__ = "0.1.0"
