"""The embedded default dataset: scikit-learn's handwritten digits.

1,797 real 8x8 grayscale scans of the digits 0-9 that scikit-learn ships inside its
package, so a search runs with no download. The scans are upsampled to
``image_size`` and repeated over 3 channels so that the networks of the search
spaces (built for RGB input) take them unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from nas.train.data.base import (
    DataSplits,
    ImageClassificationDataModule,
    InMemoryImages,
    register_dataset,
    stratified_split,
)

#: The scans hold integer intensities 0..16.
_DIGITS_MAX_INTENSITY = 16.0


def digits_tensors(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as ``1797 x 3 x image_size x image_size`` floats in [0, 1] and ``1797`` labels."""
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / _DIGITS_MAX_INTENSITY
    if image_size != images.shape[-1]:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images.clamp_(0.0, 1.0).expand(-1, 3, -1, -1).contiguous(), torch.as_tensor(digits.target, dtype=torch.long)


@register_dataset("digits")
class DigitsDataModule(ImageClassificationDataModule):
    """scikit-learn's digits, split by ``seed`` and normalised with the training statistics.

    Held in memory as tensors (about 22 MB at 32x32), so ``num_workers`` 0 is fastest.
    """

    def load_splits(self) -> DataSplits:
        images, labels = digits_tensors(self.image_size)
        train_idx, val_idx = stratified_split(labels.tolist(), self.val_fraction, self.seed)
        train_images, val_images = images[train_idx], images[val_idx]
        # The three channels are copies, so one scalar mean/std is the per-channel statistic.
        mean, std = train_images.mean(), train_images.std()
        return DataSplits(
            train=InMemoryImages((train_images - mean) / std, labels[train_idx]),
            val=InMemoryImages((val_images - mean) / std, labels[val_idx]),
            class_names=tuple(str(d) for d in range(10)),
        )
