"""DataModules on small data made here: digits, an image folder, a saved Hugging Face
dataset, a torchvision (MNIST-format) folder, and the errors for bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nas.train import (
    DatasetError,
    DigitsDataModule,
    HuggingFaceDataModule,
    ImageFolderDataModule,
    TorchvisionDataModule,
    create_datamodule,
    train_and_evaluate,
)
from nas.train.data import ImageClassificationDataModule
from nas.train.reference import SmallCNN

def first_batch(datamodule: ImageClassificationDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(datamodule.train_dataloader()))


# --- digits -------------------------------------------------------------------------


def test_digits_are_normalised_three_channel_images_split_by_seed() -> None:
    data = DigitsDataModule(image_size=16, batch_size=50, seed=3)
    images, labels = first_batch(data)

    assert images.shape == (50, 3, 16, 16) and images.dtype == torch.float32
    assert labels.shape == (50,) and labels.dtype == torch.long
    assert torch.equal(images[:, 0], images[:, 2])
    train = data.splits.train.images
    assert abs(train.mean().item()) < 1e-4 and abs(train.std().item() - 1.0) < 1e-3
    assert (len(data.splits.train), len(data.splits.val)) == (1437, 360)
    # Stratified: every class is in the validation set in its share of the data (~36 each).
    assert torch.bincount(data.splits.val.labels, minlength=10).min() >= 34

    same = DigitsDataModule(image_size=16, seed=3).splits.val.labels
    other = DigitsDataModule(image_size=16, seed=4).splits.val.labels
    assert torch.equal(same, data.splits.val.labels)
    assert not torch.equal(other, data.splits.val.labels)


# --- image folder --------------------------------------------------------------------


def test_image_folder_split_by_seed(tmp_path: Path, sample_data: type) -> None:
    sample_data.write_class_folders(tmp_path, per_class=10)
    data = ImageFolderDataModule(str(tmp_path), image_size=12, batch_size=8, num_workers=0, val_fraction=0.3)

    images, labels = first_batch(data)

    assert data.class_names == sample_data.CLASSES and data.num_classes == 3
    assert (len(data.splits.train), len(data.splits.val)) == (21, 9)
    assert images.shape == (8, 3, 12, 12)
    assert set(labels.tolist()) <= {0, 1, 2}
    val_images, val_labels = next(iter(data.val_dataloader()))
    # The validation images are not augmented: the dominant channel still names the class.
    assert torch.equal(val_images.mean(dim=(2, 3)).argmax(dim=1), val_labels)


def test_image_folder_with_train_and_val_folders_keeps_training_class_indices(
    tmp_path: Path, sample_data: type
) -> None:
    sample_data.write_class_folders(tmp_path / "train", per_class=4)
    sample_data.write_class_folders(tmp_path / "val", per_class=2, classes=("square", "triangle"), start=50)
    data = ImageFolderDataModule(str(tmp_path), image_size=8, batch_size=4, num_workers=0, augment=False)

    assert (len(data.splits.train), len(data.splits.val)) == (12, 4)
    val_labels = sorted(label for _, label in data.splits.val)
    assert val_labels == [1, 1, 2, 2]  # square and triangle, as numbered in train/


def test_training_on_an_image_folder(tmp_path: Path, sample_data: type) -> None:
    sample_data.write_class_folders(tmp_path, per_class=8)
    data = ImageFolderDataModule(str(tmp_path), image_size=8, batch_size=6, num_workers=0)

    result = train_and_evaluate(lambda: SmallCNN(data.num_classes, width=4), data, epochs=1)

    assert result.ok, result.reason
    assert result.final_val_acc is not None


def test_image_folder_errors(tmp_path: Path, sample_data: type) -> None:
    with pytest.raises(DatasetError, match=r"path '.*nowhere' does not exist"):
        ImageFolderDataModule(str(tmp_path / "nowhere")).setup()
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "cats" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match="holds no images"):
        ImageFolderDataModule(str(tmp_path / "empty")).setup()
    sample_data.write_class_folders(tmp_path / "mixed" / "train", per_class=2, classes=("circle",))
    sample_data.write_class_folders(tmp_path / "mixed" / "val", per_class=2, classes=("square",))
    with pytest.raises(DatasetError, match="classes that training lacks: square"):
        ImageFolderDataModule(str(tmp_path / "mixed")).setup()


# --- Hugging Face --------------------------------------------------------------------


def test_huggingface_dataset_saved_to_disk(tmp_path: Path, sample_data: type) -> None:
    sample_data.save_hf_dataset(tmp_path / "hf")
    data = HuggingFaceDataModule(
        path=str(tmp_path / "hf"),
        image_column="picture",
        label_column="kind",
        image_size=10,
        batch_size=5,
        num_workers=0,
    )

    images, labels = first_batch(data)

    assert data.class_names == sample_data.CLASSES
    assert (len(data.splits.train), len(data.splits.val)) == (18, 6)  # its "test" split validates
    assert images.shape == (5, 3, 10, 10)
    val_images, val_labels = next(iter(data.val_dataloader()))
    assert torch.equal(val_images.mean(dim=(2, 3)).argmax(dim=1), val_labels)


def test_huggingface_single_split_with_string_labels_is_split_by_seed(tmp_path: Path, sample_data: type) -> None:
    sample_data.save_hf_dataset(tmp_path / "hf", labels_as_strings=True, as_dict=False)
    data = HuggingFaceDataModule(
        path=str(tmp_path / "hf"), image_column="picture", label_column="kind", val_fraction=0.5, num_workers=0
    )

    assert data.class_names == sample_data.CLASSES  # sorted label values
    assert (len(data.splits.train), len(data.splits.val)) == (12, 12)
    assert sorted(label for _, label in data.splits.val) == [0] * 4 + [1] * 4 + [2] * 4


def test_huggingface_errors(tmp_path: Path, sample_data: type) -> None:
    sample_data.save_hf_dataset(tmp_path / "hf")
    with pytest.raises(DatasetError, match="no column 'image'; its columns are picture, kind"):
        HuggingFaceDataModule(path=str(tmp_path / "hf")).setup()
    with pytest.raises(DatasetError, match="no split 'validation'; its splits are train, test"):
        HuggingFaceDataModule(
            path=str(tmp_path / "hf"), image_column="picture", label_column="kind", val_split="validation"
        ).setup()
    with pytest.raises(DatasetError, match="does not exist"):
        HuggingFaceDataModule(path=str(tmp_path / "missing")).setup()
    with pytest.raises(DatasetError, match="exactly one of `name`"):
        HuggingFaceDataModule(name="frgfm/imagenette", path=str(tmp_path / "hf"))
    (tmp_path / "not_saved").mkdir()
    with pytest.raises(DatasetError, match="not a dataset saved with `save_to_disk`"):
        HuggingFaceDataModule(path=str(tmp_path / "not_saved")).setup()


# --- torchvision -------------------------------------------------------------------


def test_torchvision_dataset_from_its_folder(tmp_path: Path, sample_data: type) -> None:
    sample_data.write_mnist(tmp_path, train=40, test=20)
    data = TorchvisionDataModule("MNIST", str(tmp_path), image_size=16, batch_size=8, num_workers=0)

    images, labels = first_batch(data)

    assert data.num_classes == 10 and data.class_names[0] == "0 - zero"
    assert (len(data.splits.train), len(data.splits.val)) == (40, 20)
    assert images.shape == (8, 3, 16, 16)  # grayscale made RGB
    assert torch.allclose(images[:, 0] * 0.229 + 0.485, images[:, 1] * 0.224 + 0.456, atol=1e-5)


def test_torchvision_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="could not be read from .*download=True"):
        TorchvisionDataModule("CIFAR10", str(tmp_path)).setup()
    with pytest.raises(DatasetError, match="does not exist"):
        TorchvisionDataModule("CIFAR10", str(tmp_path / "missing")).setup()
    with pytest.raises(DatasetError, match=r"Unknown torchvision dataset 'Cifar10'; valid names are .*CIFAR10"):
        TorchvisionDataModule("Cifar10", str(tmp_path))


def test_unknown_dataset_name_lists_the_valid_ones() -> None:
    with pytest.raises(DatasetError, match="valid datasets are digits, fashion_mnist, huggingface, image_folder, torchvision"):
        create_datamodule("imagenet")
    assert isinstance(create_datamodule("digits", image_size=8), DigitsDataModule)
