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

    Args:
        test_fraction: share of the scans held out as a test split (by a fixed seed, the
            same whatever ``seed`` is), before the train/validation split of the rest; 0
            keeps every scan for training and validation.
        train_samples: keep only this many training scans (stratified), to make the task
            harder and candidates differ more; ``None`` keeps all.
        **kwargs: see :class:`ImageClassificationDataModule`.
    """

    #: Seed of the test split: fixed, so that searches with different seeds share their test scans.
    TEST_SPLIT_SEED = 12345

    def __init__(self, *args: object, test_fraction: float = 0.0, train_samples: int | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if not 0.0 <= test_fraction < 1.0:
            raise DatasetError(f"test_fraction must lie in [0, 1), got {test_fraction}.")
        if train_samples is not None and train_samples < 10:
            raise DatasetError(f"train_samples must be at least 10 (one scan per class), got {train_samples}.")
        self.test_fraction = test_fraction
        self.train_samples = train_samples

    def load_splits(self) -> DataSplits:
        images, labels = digits_tensors(self.image_size)
        rest_idx, test_idx = list(range(labels.shape[0])), []
        if self.test_fraction > 0:
            rest_idx, test_idx = stratified_split(labels.tolist(), self.test_fraction, self.TEST_SPLIT_SEED)
        train_pos, val_pos = stratified_split(labels[rest_idx].tolist(), self.val_fraction, self.seed)
        train_idx, val_idx = [rest_idx[i] for i in train_pos], [rest_idx[i] for i in val_pos]
        if self.train_samples is not None and self.train_samples < len(train_idx):
            kept, _ = stratified_split(labels[train_idx].tolist(), 1.0 - self.train_samples / len(train_idx), self.seed)
            train_idx = [train_idx[i] for i in kept]
        train_images = images[train_idx]
        # The three channels are copies, so one scalar mean/std is the per-channel statistic.
        mean, std = train_images.mean(), train_images.std()

        def normalised(indices: list[int]) -> InMemoryImages:
            return InMemoryImages((images[indices] - mean) / std, labels[indices])

        return DataSplits(
            train=normalised(train_idx),
            val=normalised(val_idx),
            class_names=tuple(str(d) for d in range(10)),
            test=normalised(test_idx) if test_idx else None,
        )
