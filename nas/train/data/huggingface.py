"""Hugging Face ``datasets`` image-classification datasets (Imagenette, Imagewoof, Alzheimer MRI, ...).

Online, ``name`` is passed to ``datasets.load_dataset`` (downloaded once into the
Hugging Face cache). Offline, a dataset saved with ``save_to_disk`` is read from
``path`` with ``datasets.load_from_disk``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from nas.train.data.base import (
    DatasetError,
    DataSplits,
    PILImageDataModule,
    register_dataset,
    stratified_split,
)
from nas.train.data.image_folder import VAL_DIR_NAMES, existing_directory


class HuggingFaceImages(Dataset):
    """``(PIL image, class index)`` pairs from two columns of a Hugging Face ``Dataset``.

    Args:
        table: the Hugging Face dataset, reduced to the two columns.
        label_index: maps each raw label value to its class index.
    """

    def __init__(self, table: Any, image_column: str, label_column: str, label_index: dict[Any, int]) -> None:
        self.table = table
        self.image_column = image_column
        self.label_column = label_column
        self.label_index = label_index

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        row = self.table[index]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        return image, self.label_index[row[self.label_column]]

    def targets(self) -> list[int]:
        return [self.label_index[value] for value in self.table[self.label_column]]


@register_dataset("huggingface")
class HuggingFaceDataModule(PILImageDataModule):
    """A Hugging Face image-classification dataset, by hub name or saved directory.

    Args:
        name: hub dataset name for ``load_dataset`` (e.g. ``"frgfm/imagenette"``); needs the network
            the first time.
        path: directory written by ``save_to_disk``; used instead of ``name`` when given.
        config_name: the hub dataset's configuration (e.g. ``"160px"``).
        revision: the hub branch or commit; ``"refs/convert/parquet"`` reads the hub's Parquet
            copy of datasets published as loading scripts, which recent ``datasets`` no longer run.
        image_column, label_column: the columns holding the image and its class.
        train_split: the split to train on.
        val_split: the split to validate on; ``None`` takes the first of validation/valid/val/test
            that exists, or else holds out ``val_fraction`` of ``train_split`` by ``seed``.
        options: image size, loader and transform settings of
            :class:`~nas.train.data.base.PILImageDataModule`.
    """

    def __init__(
        self,
        name: str | None = None,
        path: str | None = None,
        config_name: str | None = None,
        revision: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        train_split: str = "train",
        val_split: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if (name is None) == (path is None):
            raise DatasetError(
                "A Hugging Face dataset needs exactly one of `name` (hub name) or `path` (saved directory)."
            )
        self.name = name
        self.path = path
        self.config_name = config_name
        self.revision = revision
        self.image_column = image_column
        self.label_column = label_column
        self.train_split = train_split
        self.val_split = val_split

    def prepare_data(self) -> None:
        # Downloads into the shared cache once, on one process, before every process's setup.
        if self.name is not None:
            self._load()

    def _load(self) -> Any:
        import datasets

        if self.path is not None:
            directory = existing_directory(self.path, "Hugging Face dataset")
            try:
                return datasets.load_from_disk(str(directory))
            except FileNotFoundError as error:
                raise DatasetError(
                    f"{str(directory)!r} is not a dataset saved with `save_to_disk`: {error}"
                ) from None
        try:
            return datasets.load_dataset(self.name, self.config_name, revision=self.revision)
        except Exception as error:  # the hub raises many types: connection, not found, gated, ...
            raise DatasetError(
                f"Could not load the Hugging Face dataset {self.name!r} ({type(error).__name__}: {error}); "
                f"offline, save it once with `save_to_disk` and pass that directory as `path`."
            ) from None

    def load_splits(self) -> DataSplits:
        import datasets

        loaded = self._load()
        if isinstance(loaded, datasets.DatasetDict):
            tables = dict(loaded)
        else:
            tables = {self.train_split: loaded}
        train = self._split(tables, self.train_split)
        val_name = self.val_split or next((n for n in VAL_DIR_NAMES if n in tables), None)
        val = self._split(tables, val_name) if val_name is not None else None

        for table in (train,) if val is None else (train, val):
            for column in (self.image_column, self.label_column):
                if column not in table.column_names:
                    raise DatasetError(
                        f"The Hugging Face dataset has no column {column!r}; "
                        f"its columns are {', '.join(table.column_names)}."
                    )
        train = train.select_columns([self.image_column, self.label_column])
        feature = train.features[self.label_column]
        if isinstance(feature, datasets.ClassLabel):
            class_names = tuple(feature.names)
            label_index: dict[Any, int] = {i: i for i in range(len(class_names))}
        else:
            values = sorted(set(train[self.label_column]))
            class_names = tuple(str(v) for v in values)
            label_index = {v: i for i, v in enumerate(values)}

        train_images = HuggingFaceImages(train, self.image_column, self.label_column, label_index)
        if val is None:
            train_idx, val_idx = stratified_split(train_images.targets(), self.val_fraction, self.seed)
            train_set, val_set = self.subsets(train_images, train_idx, train_images, val_idx)
        else:
            val = val.select_columns([self.image_column, self.label_column])
            unknown = sorted(set(val[self.label_column]) - set(label_index), key=str)
            if unknown:
                raise DatasetError(f"The validation split has labels that training lacks: {unknown}.")
            val_images = HuggingFaceImages(val, self.image_column, self.label_column, label_index)
            train_set, val_set = self.subsets(
                train_images, range(len(train_images)), val_images, range(len(val_images))
            )
        return DataSplits(train_set, val_set, class_names)

    @staticmethod
    def _split(tables: dict[str, Any], name: str) -> Any:
        if name not in tables:
            raise DatasetError(f"The Hugging Face dataset has no split {name!r}; its splits are {', '.join(tables)}.")
        return tables[name]
