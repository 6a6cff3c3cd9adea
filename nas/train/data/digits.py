"""scikit-learn's handwritten digits, shipped inside scikit-learn: no download.

1,797 real 8x8 grayscale scans of the digits 0-9, upsampled to ``image_size`` and
repeated over 3 channels so that the networks of the search spaces (built for RGB input)
take them unchanged. Easy: a 1-nearest-neighbour classifier gets 99 % on them, so they
suit quick checks better than telling architectures apart (the default dataset is
Fashion-MNIST, :mod:`nas.train.data.fashion_mnist`).
"""
from __future__ import annotations

from typing import Any

import torch
from sklearn.datasets import load_digits

from nas.train.data.base import register_dataset
from nas.train.data.in_memory import ImageArrays, InMemoryDataModule

#: The scans hold integer intensities 0..16.
_DIGITS_MAX_INTENSITY = 16.0


@register_dataset("digits")
class DigitsDataModule(InMemoryDataModule):
    """scikit-learn's digits (see :class:`~nas.train.data.in_memory.InMemoryDataModule`).

    Held in memory as tensors (about 22 MB at 32x32), so ``num_workers`` 0 is fastest; no
    test split of their own: ``test_fraction`` holds one out. Digits are not mirrored by
    augmentation (``flip`` defaults to false).
    """

    def __init__(self, flip: bool = False, **options: Any) -> None:
        super().__init__(flip=flip, **options)

    def arrays(self) -> ImageArrays:
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / _DIGITS_MAX_INTENSITY
        return ImageArrays(images, torch.as_tensor(digits.target, dtype=torch.long), tuple(str(d) for d in range(10)))
