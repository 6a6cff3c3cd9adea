"""Any local folder of images, one sub-folder per class (torchvision's ``ImageFolder``).

Two layouts are accepted::

    root/train/<class>/*.png  and  root/val/<class>/*.png   (also validation/, valid/, test/)
    root/<class>/*.png                                      (split by seed)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from nas.train.data.base import (
    DatasetError,
    DataSplits,
    PILImageDataModule,
    register_dataset,
    stratified_split,
)

VAL_DIR_NAMES: tuple[str, ...] = ("val", "validation", "valid", "test")


def existing_directory(path: str | Path, what: str) -> Path:
    """``path`` as a ``Path``, or a :class:`DatasetError` saying that it does not exist."""
    resolved = Path(path).expanduser()
    if not resolved.is_dir():
        raise DatasetError(f"The {what} path {str(resolved)!r} does not exist or is not a directory.")
    return resolved


def _image_folder(root: Path) -> ImageFolder:
    try:
        return ImageFolder(root)
    except FileNotFoundError as error:
        raise DatasetError(
            f"The image folder {str(root)!r} holds no images in class sub-folders "
            f"(expected {root}/<class>/<image> with one of {', '.join(IMG_EXTENSIONS)}): {error}"
        ) from None


@register_dataset("image_folder")
class ImageFolderDataModule(PILImageDataModule):
    """Images from ``root``, either already split into train/val or split by ``seed``.

    Args:
        root: the dataset directory.
        options: image size, loader and transform settings of
            :class:`~nas.train.data.base.PILImageDataModule`.
    """

    def __init__(self, root: str, **options: Any) -> None:
        super().__init__(**options)
        self.root = str(root)

    def load_splits(self) -> DataSplits:
        root = existing_directory(self.root, "image folder")
        val_dir = next((root / name for name in VAL_DIR_NAMES if (root / name).is_dir()), None)
        if (root / "train").is_dir() and val_dir is not None:
            train = _image_folder(root / "train")
            val = _image_folder(val_dir)
            unknown = sorted(set(val.classes) - set(train.classes))
            if unknown:
                raise DatasetError(
                    f"The validation folder {str(val_dir)!r} has classes that training lacks: {', '.join(unknown)}."
                )
            # A class missing from validation would shift ImageFolder's indices: use training's.
            val.samples = [(path, train.class_to_idx[val.classes[t]]) for path, t in val.samples]
            val.targets = [t for _, t in val.samples]
            train_set, val_set = self.subsets(train, range(len(train)), val, range(len(val)))
            return DataSplits(train_set, val_set, tuple(train.classes))
        source = _image_folder(root / "train" if (root / "train").is_dir() else root)
        train_idx, val_idx = stratified_split(source.targets, self.val_fraction, self.seed)
        train_set, val_set = self.subsets(source, train_idx, source, val_idx)
        return DataSplits(train_set, val_set, tuple(source.classes))
