"""Data sources small enough to hold in memory as tensors: the embedded datasets.

:class:`InMemoryDataModule` turns a source's arrays (grey or RGB images in [0, 1], labels,
an optional fixed test split) into normalised ``3 x image_size x image_size`` tensors,
splits training and validation by ``seed``, optionally keeps only ``train_samples`` of the
training images, and augments training batches on the fly (random shifts and flips, a
whole batch at once, so augmentation costs no loader time).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nas.train.data.base import DatasetError, DataSplits, ImageClassificationDataModule, InMemoryImages, stratified_split

#: Pixels of random shift at augmentation strength 1 (a run's ``augment_strength``, see
#: :meth:`InMemoryDataModule.augment_batch`).
SHIFT_AT_FULL_STRENGTH = 4


def strength_shift(strength: float) -> int:
    """The largest shift, in pixels, of augmentation at ``strength`` in [0, 1]."""
    return round(SHIFT_AT_FULL_STRENGTH * strength)


@dataclass(frozen=True)
class ImageArrays:
    """What an embedded source holds.

    Attributes:
        images: ``n x c x h x w`` floats in [0, 1] (``c`` 1 or 3).
        labels: ``n`` long class indices.
        class_names: one name per class.
        test_images, test_labels: a test split kept apart by the source itself (``None``:
            the module holds out ``test_fraction`` of ``images`` by a fixed seed).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    test_images: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None


def shift_and_flip(images: torch.Tensor, max_shift: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n x c x h x w`` images, each translated by up to ``max_shift`` pixels in x and y
    (edges replicated, like a random crop of a padded image) and mirrored with probability 1/2."""
    n, _, h, w = images.shape
    out = images
    if max_shift > 0:
        padded = F.pad(images, (max_shift,) * 4, mode="replicate")  # edges are background
        dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(images.device)  # n x h
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(images.device)  # n x w
        batch = torch.arange(n, device=images.device).view(n, 1, 1)
        # n x h x w x c gathered at (row, col), back to n x c x h x w
        out = padded.permute(0, 2, 3, 1)[batch, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    if flip:
        mirrored = torch.rand(n, generator=generator) < 0.5
        out = torch.where(mirrored.view(n, 1, 1, 1).to(images.device), out.flip(-1), out)
    return out.contiguous()


class InMemoryDataModule(ImageClassificationDataModule):
    """An embedded source as tensors, split by ``seed`` and normalised with the training statistics.

    Args:
        test_fraction: for sources without a test split of their own, the share of images
            held out as one (by a fixed seed, the same whatever ``seed`` is), before the
            train/validation split of the rest; 0 keeps every image for the search.
        train_samples: keep only this many training images (stratified by class), to make
            candidates train faster; ``None`` keeps all.
        augment: random shifts of up to ``max_shift`` pixels and horizontal flips
            (``flip``) of training batches; validation and test images are never augmented.
            A training run may set its own strength instead (:meth:`augment_batch`).
        max_shift, flip: the augmentation (``flip``: whether mirrored images keep their
            class, which also holds for a run's own strength).
        **options: ``image_size``, ``batch_size``, ``num_workers``, ``seed``, ``val_fraction``
            of :class:`ImageClassificationDataModule`.
    """

    #: Seed of a test split made here: fixed, so that searches with different seeds share their test images.
    TEST_SPLIT_SEED = 12345

    def __init__(
        self,
        test_fraction: float = 0.0,
        train_samples: int | None = None,
        augment: bool = False,
        max_shift: int = 2,
        flip: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not 0.0 <= test_fraction < 1.0:
            raise DatasetError(f"test_fraction must lie in [0, 1), got {test_fraction}.")
        if train_samples is not None and train_samples < 10:
            raise DatasetError(f"train_samples must be at least 10 (one image per class), got {train_samples}.")
        if max_shift < 0:
            raise DatasetError(f"max_shift is a number of pixels, 0 or more, got {max_shift}.")
        self.test_fraction = test_fraction
        self.train_samples = train_samples
        self.augment = augment
        self.max_shift = max_shift
        self.flip = flip

    @abstractmethod
    def arrays(self) -> ImageArrays:
        """The source's images and labels (see :class:`ImageArrays`)."""

    def _resized(self, images: torch.Tensor) -> torch.Tensor:
        """``n x c x h x w`` in [0, 1] -> ``n x 3 x image_size x image_size``."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
        return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images

    def load_splits(self) -> DataSplits:
        source = self.arrays()
        images, labels = self._resized(source.images), source.labels
        rest_idx, test_idx = list(range(labels.shape[0])), []
        if source.test_images is None and self.test_fraction > 0:
            rest_idx, test_idx = stratified_split(labels.tolist(), self.test_fraction, self.TEST_SPLIT_SEED)
        train_pos, val_pos = stratified_split(labels[rest_idx].tolist(), self.val_fraction, self.seed)
        train_idx, val_idx = [rest_idx[i] for i in train_pos], [rest_idx[i] for i in val_pos]
        if self.train_samples is not None and self.train_samples < len(train_idx):
            kept, _ = stratified_split(labels[train_idx].tolist(), 1.0 - self.train_samples / len(train_idx), self.seed)
            train_idx = [train_idx[i] for i in kept]
        train_images = images[train_idx]
        mean = train_images.mean(dim=(0, 2, 3), keepdim=True)
        std = train_images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

        def normalised(pixels: torch.Tensor, targets: torch.Tensor) -> InMemoryImages:
            return InMemoryImages((pixels - mean) / std, targets)

        test = None
        if source.test_images is not None and source.test_labels is not None:
            test = normalised(self._resized(source.test_images), source.test_labels)
        elif test_idx:
            test = normalised(images[test_idx], labels[test_idx])
        return DataSplits(
            train=normalised(train_images, labels[train_idx]),
            val=normalised(images[val_idx], labels[val_idx]),
            class_names=source.class_names,
            test=test,
        )

    @property
    def own_shift(self) -> int:
        """The largest shift of the module's own augmentation (0 without ``augment``)."""
        return self.max_shift if self.augment else 0

    def augment_batch(self, batch: tuple[torch.Tensor, torch.Tensor], strength: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch ``(images, labels)`` augmented as the module is set (unchanged
        without ``augment``), or, given a run's ``strength`` in [0, 1] instead, shifted by up to
        :func:`strength_shift` pixels and, where ``flip`` allows it, mirrored when ``strength > 0``."""
        if strength is None:
            shift, flip = self.own_shift, self.augment and self.flip
        else:
            if not 0.0 <= strength <= 1.0:
                raise DatasetError(f"An augmentation strength lies in [0, 1], got {strength}.")
            shift, flip = strength_shift(strength), strength > 0 and self.flip
        if shift == 0 and not flip:
            return batch
        images, labels = batch
        # The training process' own seeded generator (seed_everything) makes augmentation repeatable.
        return shift_and_flip(images, shift, flip), labels

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        return self.augment_batch(batch) if trainer is not None and trainer.training else batch
