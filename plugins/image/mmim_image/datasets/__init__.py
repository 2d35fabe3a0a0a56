"""The image plugin's datasets: Fashion-MNIST (IDX files, embedded subset by default) and image folders.

Both are map-style datasets built as ``Dataset(split=..., augment=..., **options)`` whose items are
``{"image": float32 (C, H, W), "label": int}``; see :mod:`mmim_image.transforms` for the transforms.
"""

from mmim_image.datasets.fashion_mnist import FashionMNIST
from mmim_image.datasets.idx import read_idx, write_idx
from mmim_image.datasets.image_folder import ImageFolder

__all__ = ["FashionMNIST", "ImageFolder", "read_idx", "write_idx"]
