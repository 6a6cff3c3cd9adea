"""The embedded default dataset: a 12,000-image, class-balanced subset of Fashion-MNIST.

Real 28 x 28 grey photographs of clothing in 10 classes (Xiao, Rasul & Vollgraf, 2017,
arXiv:1708.07747; MIT licence, ``nas/data/fashion_mnist/LICENSE``), 1,000 training and 200
test images per class from the official files, shipped inside the package
(``nas/data/fashion_mnist``, 5.3 MB). Hard enough that small networks differ by points: a
1-nearest-neighbour classifier gets 80.6 % on the test images. The test images are the
official test set's and stay out of every search; validation comes from the training images.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.paths import resolve_path
from nas.train.data.base import DatasetError, register_dataset
from nas.train.data.in_memory import ImageArrays, InMemoryDataModule

#: The subset shipped with the package.
FASHION_MNIST_FILE = "package://fashion_mnist/fashion_mnist_10k_2k.npz"
_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")


def load_fashion_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a Fashion-MNIST ``.npz`` file (without pickle), checked for shape, or a
    :class:`DatasetError` that says what is wrong with the file."""
    file = resolve_path(path)
    if not file.is_file():
        raise DatasetError(f"The Fashion-MNIST file {file} does not exist; give dataset.path of an .npz file with {', '.join(_KEYS)}.")
    try:
        with np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in _KEYS if k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DatasetError(f"The Fashion-MNIST file {file} is damaged and cannot be read as .npz ({type(error).__name__}).") from None
    missing = [k for k in _KEYS if k not in arrays]
    if missing:
        raise DatasetError(f"The Fashion-MNIST file {file} lacks {', '.join(missing)}; it needs {', '.join(_KEYS)}.")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim not in (3, 4) or x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise DatasetError(f"The Fashion-MNIST file {file} holds x_{split} of shape {x.shape} and y_{split} of shape {y.shape}; expected n x 28 x 28 (x 1) images and n labels.")
    return arrays


def _images(pixels: np.ndarray) -> torch.Tensor:
    """``n x h x w (x 1)`` uint8 -> ``n x 1 x h x w`` floats in [0, 1]."""
    images = torch.as_tensor(np.ascontiguousarray(pixels), dtype=torch.float32) / 255.0
    return (images.squeeze(-1) if images.ndim == 4 else images).unsqueeze(1)


@register_dataset("fashion_mnist")
class FashionMNISTDataModule(InMemoryDataModule):
    """Fashion-MNIST's embedded subset (see :class:`~nas.train.data.in_memory.InMemoryDataModule`).

    Args:
        path: the ``.npz`` file (default: the subset shipped with the package).
        **options: see :class:`~nas.train.data.in_memory.InMemoryDataModule`; ``test_fraction``
            is unused, as the file holds its own test images.
    """

    def __init__(self, path: str = FASHION_MNIST_FILE, **options: Any) -> None:
        super().__init__(**options)
        self.path = path

    def arrays(self) -> ImageArrays:
        data = load_fashion_arrays(self.path)
        return ImageArrays(
            images=_images(data["x_train"]),
            labels=torch.as_tensor(data["y_train"], dtype=torch.long),
            class_names=tuple(str(name) for name in data["class_names"]),
            test_images=_images(data["x_test"]),
            test_labels=torch.as_tensor(data["y_test"], dtype=torch.long),
        )
