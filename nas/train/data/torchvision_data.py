"""torchvision's image-classification datasets by name (CIFAR10, MNIST, Imagenette, ...).

The files must already be under ``root`` in torchvision's own layout (these machines
cannot download); ``download=True`` fetches them where a network is available.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torchvision.datasets
from torch.utils.data import Dataset

from nas.train.data.base import DatasetError, DataSplits, PILImageDataModule, register_dataset, stratified_split
from nas.train.data.image_folder import existing_directory

_TRAIN_FLAG = ({"train": True}, {"train": False})


def _split_names(train: str, val: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"split": train}, {"split": val}


#: The constructor arguments selecting each dataset's training and validation split;
#: ``None`` for datasets that come as one set, split here by seed.
TORCHVISION_SPLITS: dict[str, tuple[dict[str, Any], dict[str, Any]] | None] = {
    "CIFAR10": _TRAIN_FLAG,
    "CIFAR100": _TRAIN_FLAG,
    "MNIST": _TRAIN_FLAG,
    "FashionMNIST": _TRAIN_FLAG,
    "KMNIST": _TRAIN_FLAG,
    "QMNIST": _TRAIN_FLAG,
    "USPS": _TRAIN_FLAG,
    "SVHN": _split_names("train", "test"),
    "STL10": _split_names("train", "test"),
    "GTSRB": _split_names("train", "test"),
    "Food101": _split_names("train", "test"),
    "Country211": _split_names("train", "valid"),
    "FER2013": _split_names("train", "test"),
    "PCAM": _split_names("train", "val"),
    "RenderedSST2": _split_names("train", "val"),
    "StanfordCars": _split_names("train", "test"),
    "Flowers102": _split_names("train", "val"),
    "DTD": _split_names("train", "val"),
    "OxfordIIITPet": _split_names("trainval", "test"),
    "FGVCAircraft": _split_names("trainval", "test"),
    "Imagenette": _split_names("train", "val"),
    "ImageNet": _split_names("train", "val"),
    "EuroSAT": None,
    "Caltech101": None,
    "Caltech256": None,
    "SUN397": None,
}


def _targets(dataset: Dataset) -> list[int]:
    """The class index of every sample, read from the attribute each dataset keeps it in."""
    for attribute in ("targets", "labels", "_labels", "y"):
        values = getattr(dataset, attribute, None)
        if values is not None:
            return [int(v) for v in values]
    # Without labels at hand the split is merely shuffled, not stratified.
    return [0] * len(dataset)


def _class_names(dataset: Dataset, targets: list[int]) -> tuple[str, ...]:
    classes = getattr(dataset, "classes", None) or getattr(dataset, "categories", None)
    if classes:
        return tuple(str(c) for c in classes)
    return tuple(str(c) for c in range(max(targets) + 1))


@register_dataset("torchvision")
class TorchvisionDataModule(PILImageDataModule):
    """A torchvision dataset read from ``root``.

    Args:
        name: the torchvision class name, one of :data:`TORCHVISION_SPLITS`.
        root: the directory holding the dataset in torchvision's layout.
        download: fetch the files into ``root`` if absent (needs the network).
        options: image size, loader and transform settings of
            :class:`~nas.train.data.base.PILImageDataModule`.
    """

    def __init__(self, name: str, root: str, download: bool = False, **options: Any) -> None:
        super().__init__(**options)
        if name not in TORCHVISION_SPLITS:
            raise DatasetError(
                f"Unknown torchvision dataset {name!r}; valid names are {', '.join(sorted(TORCHVISION_SPLITS))}."
            )
        self.name = name
        self.root = str(root)
        self.download = download

    def prepare_data(self) -> None:
        # Downloads once, on one process, before every process's setup.
        if self.download:
            self._open({} if TORCHVISION_SPLITS[self.name] is None else TORCHVISION_SPLITS[self.name][0])

    def _open(self, split: dict[str, Any]) -> Dataset:
        cls = getattr(torchvision.datasets, self.name)
        kwargs = dict(split)
        if "download" in inspect.signature(cls.__init__).parameters:
            kwargs["download"] = self.download
        if self.download:
            Path(self.root).expanduser().mkdir(parents=True, exist_ok=True)
        root = existing_directory(self.root, f"torchvision {self.name}")
        try:
            return cls(str(root), **kwargs)
        except (RuntimeError, FileNotFoundError, OSError) as error:
            how = "pass download=True where a network is available" if not self.download else "check the network"
            raise DatasetError(
                f"torchvision's {self.name} could not be read from {str(root)!r} ({error}); "
                f"put its files there in torchvision's layout or {how}."
            ) from None

    def load_splits(self) -> DataSplits:
        splits = TORCHVISION_SPLITS[self.name]
        if splits is None:
            source = self._open({})
            targets = _targets(source)
            train_idx, val_idx = stratified_split(targets, self.val_fraction, self.seed)
            train_set, val_set = self.subsets(source, train_idx, source, val_idx)
            return DataSplits(train_set, val_set, _class_names(source, targets))
        train, val = self._open(splits[0]), self._open(splits[1])
        train_set, val_set = self.subsets(train, range(len(train)), val, range(len(val)))
        return DataSplits(train_set, val_set, _class_names(train, _targets(train)))
