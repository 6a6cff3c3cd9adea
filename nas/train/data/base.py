"""The common shape of every image-classification data source, and its registry.

Every DataModule yields batches ``(images, labels)`` with ``images`` a float tensor
``batch x 3 x image_size x image_size`` (normalised) and ``labels`` a ``batch`` long
tensor of class indices in ``range(num_classes)``, whatever the source (an array shipped
with a package, an image folder, a Hugging Face dataset, a torchvision dataset).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import lightning as L
import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from nas.errors import NASError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class DatasetError(NASError):
    """A dataset that cannot be loaded as configured, described in one sentence."""


@dataclass(frozen=True)
class DataSplits:
    """What a data source hands to :class:`ImageClassificationDataModule`."""

    train: Dataset
    val: Dataset
    class_names: tuple[str, ...]
    test: Dataset | None = None  # held out from the search, for the final evaluation of its winners


class ImageClassificationDataModule(L.LightningDataModule, ABC):
    """A train/validation image-classification data source with fixed loader settings.

    Subclasses implement :meth:`load_splits`. ``setup`` is idempotent so that the
    number of classes can be read (to build a candidate network's classifier head)
    before Lightning calls ``setup`` itself.

    Args:
        image_size: side of the square images the networks receive.
        batch_size: per-process batch size (under DDP each process loads this many).
        num_workers: loader worker processes; 0 loads in the training process.
        seed: seeds the train/validation split where the source has no validation split.
        val_fraction: share of the data held out when the split is made by ``seed``.
    """

    def __init__(
        self,
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.2,
    ) -> None:
        super().__init__()
        if image_size < 1 or batch_size < 1 or num_workers < 0:
            raise DatasetError(
                f"image_size and batch_size must be positive and num_workers non-negative, "
                f"got image_size={image_size}, batch_size={batch_size}, num_workers={num_workers}."
            )
        if not 0.0 < val_fraction < 1.0:
            raise DatasetError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}.")
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.val_fraction = val_fraction
        self._splits: DataSplits | None = None

    @abstractmethod
    def load_splits(self) -> DataSplits:
        """Load the source and return its train and validation datasets."""

    def setup(self, stage: str | None = None) -> None:
        if self._splits is None:
            self._splits = self.load_splits()

    @property
    def splits(self) -> DataSplits:
        self.setup()
        assert self._splits is not None
        return self._splits

    @property
    def num_classes(self) -> int:
        return len(self.splits.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.splits.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``channels x height x width`` of one image."""
        return (3, self.image_size, self.image_size)

    def train_dataloader(self) -> DataLoader:
        # drop_last: a final batch of one sample breaks BatchNorm in training mode.
        return self._loader(self.splits.train, shuffle=True, drop_last=len(self.splits.train) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.val, shuffle=False, drop_last=False)

    @property
    def has_test_split(self) -> bool:
        """Whether the source holds a test split that no search has seen."""
        return self.splits.test is not None

    def test_dataloader(self) -> DataLoader:
        if self.splits.test is None:
            raise DatasetError(f"{type(self).__name__} has no test split.")
        return self._loader(self.splits.test, shuffle=False, drop_last=False)

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool, batch_size: int | None = None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=self.num_workers,
            # Workers are forked once per fit, not once per epoch.
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=getattr(dataset, "collate", None),
        )


class RunData(ImageClassificationDataModule):
    """``source`` as one training run sees it: the same splits (loaded once, by the source),
    training batches of the run's own ``batch_size``, and the source's augmentation of
    training batches at the run's own ``augment_strength`` in [0, 1] (sources that augment
    whole batches, :meth:`~nas.train.data.in_memory.InMemoryDataModule.augment_batch`).
    Unset (``None``), each is the source's; validation and test batches keep the source's size.
    """

    def __init__(self, source: ImageClassificationDataModule, batch_size: int | None = None, augment_strength: float | None = None) -> None:
        super().__init__(
            image_size=source.image_size, batch_size=source.batch_size, num_workers=source.num_workers, seed=source.seed, val_fraction=source.val_fraction
        )
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise DatasetError(f"A training batch size is a whole number of at least 1, got {batch_size!r}.")
        if augment_strength is not None and not callable(getattr(source, "augment_batch", None)):
            raise DatasetError(f"{type(source).__name__} augments its images in its loader, so a run cannot set its own augmentation strength; use an in-memory dataset (digits, fashion_mnist).")
        if augment_strength is not None and not 0.0 <= augment_strength <= 1.0:
            raise DatasetError(f"An augmentation strength lies in [0, 1], got {augment_strength}.")
        self.source = source
        self.train_batch_size = int(batch_size) if batch_size is not None else source.batch_size
        self.augment_strength = augment_strength

    def load_splits(self) -> DataSplits:
        return self.source.splits

    def train_dataloader(self) -> DataLoader:
        train = self.splits.train
        return self._loader(train, shuffle=True, drop_last=len(train) > self.train_batch_size, batch_size=self.train_batch_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # The source's augmentation of training batches (embedded datasets augment on the fly).
        augment = getattr(self.source, "augment_batch", None)
        if augment is None or self.trainer is None or not self.trainer.training:
            return batch
        return augment(batch) if self.augment_strength is None else augment(batch, self.augment_strength)


_DATASETS: dict[str, type[ImageClassificationDataModule]] = {}
_D = TypeVar("_D", bound=type[ImageClassificationDataModule])


def register_dataset(name: str) -> Callable[[_D], _D]:
    """Register a DataModule class under ``name`` for :func:`create_datamodule`."""

    def decorate(cls: _D) -> _D:
        _DATASETS[name] = cls
        return cls

    return decorate


def dataset_names() -> tuple[str, ...]:
    return tuple(sorted(_DATASETS))


def create_datamodule(name: str, **kwargs: Any) -> ImageClassificationDataModule:
    """Build the registered DataModule ``name`` with its keyword arguments."""
    if name not in _DATASETS:
        raise DatasetError(f"Unknown dataset {name!r}; valid datasets are {', '.join(dataset_names())}.")
    return _DATASETS[name](**kwargs)


class InMemoryImages(Dataset):
    """Images held as one tensor, fetched a whole batch at a time.

    Indexing the tensor once per batch (``__getitems__``) instead of stacking
    ``batch_size`` single images keeps the loader out of the training time.

    Args:
        images: ``n x 3 x H x W`` float tensor, already normalised.
        labels: ``n`` long tensor.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels.")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.labels[index]

    @staticmethod
    def collate(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch


class TransformedSubset(Dataset):
    """The samples ``indices`` of ``source``, each image passed through ``transform``.

    ``source[i]`` is ``(image, label)`` with ``image`` a PIL image; the item is
    ``(transform(image), label)``, ``transform(image)`` a ``3 x H x W`` tensor.
    """

    def __init__(
        self,
        source: Dataset,
        indices: Sequence[int],
        transform: Callable[[Image.Image], torch.Tensor],
    ) -> None:
        self.source = source
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[self.indices[index]]
        return self.transform(image), int(label)


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic train/validation indices with the class proportions of ``labels``.

    Falls back to a plain shuffled split when some class has too few samples to
    appear on both sides.
    """
    indices = np.arange(len(labels))
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    stratify = labels if counts[counts > 0].min() >= 2 else None
    try:
        train, val = train_test_split(indices, test_size=val_fraction, random_state=seed, stratify=stratify)
    except ValueError:
        train, val = train_test_split(indices, test_size=val_fraction, random_state=seed, stratify=None)
    return sorted(train.tolist()), sorted(val.tolist())


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def image_transforms(
    image_size: int,
    train: bool,
    augment: bool = True,
    crop_ratio: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """PIL image (any mode) -> normalised ``3 x image_size x image_size`` float tensor.

    Validation images are resized so that a centred crop keeps ``crop_ratio`` of the
    short side (ImageNet's convention is 0.875; 1.0 keeps whole images, as is usual
    for CIFAR-sized data); training images get a random resized crop and a horizontal
    flip when ``augment`` is set.
    """
    if train and augment:
        geometry = [v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(round(image_size / crop_ratio), antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(
        [
            _to_rgb,
            v2.PILToTensor(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


class PILImageDataModule(ImageClassificationDataModule, ABC):
    """A source of PIL images, decoded and transformed on the fly.

    Args:
        augment: random resized crop and flip for training images.
        crop_ratio: share of the short side kept by the validation centre crop.
        mean, std: per-channel normalisation (ImageNet statistics by default).
        image_size, num_workers: as in :class:`ImageClassificationDataModule`, with
            defaults for decoded images (larger images, decoding in worker processes).
        options: ``batch_size``, ``seed``, ``val_fraction`` of :class:`ImageClassificationDataModule`.
    """

    def __init__(
        self,
        augment: bool = True,
        crop_ratio: float = 0.875,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        image_size: int = 64,
        num_workers: int = 2,
        **options: Any,
    ) -> None:
        super().__init__(image_size=image_size, num_workers=num_workers, **options)
        if not 0.0 < crop_ratio <= 1.0:
            raise DatasetError(f"crop_ratio must lie in (0, 1], got {crop_ratio}.")
        self.augment = augment
        self.crop_ratio = crop_ratio
        self.mean = tuple(mean)
        self.std = tuple(std)

    def transform(self, train: bool) -> v2.Compose:
        return image_transforms(self.image_size, train, self.augment, self.crop_ratio, self.mean, self.std)

    def subsets(
        self,
        train_source: Dataset,
        train_indices: Sequence[int],
        val_source: Dataset,
        val_indices: Sequence[int],
    ) -> tuple[TransformedSubset, TransformedSubset]:
        return (
            TransformedSubset(train_source, train_indices, self.transform(train=True)),
            TransformedSubset(val_source, val_indices, self.transform(train=False)),
        )
