"""The embedded default dataset (Fashion-MNIST's shipped subset) and in-memory augmentation."""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nas.paths import resolve_path
from nas.train import DatasetError, FashionMNISTDataModule, OptimizerConfig, create_datamodule, train_and_evaluate
from nas.train.data import FASHION_MNIST_FILE, shift_and_flip
from nas.train.reference import SmallCNN


def test_the_shipped_file_is_the_documented_subset_with_its_licence() -> None:
    path = resolve_path(FASHION_MNIST_FILE)
    assert (path.parent / "LICENSE").read_text().startswith("The MIT License")
    with np.load(path, allow_pickle=False) as data:
        # The MD5 prefixes of the arrays' bytes that the data's README gives.
        assert hashlib.md5(data["x_train"].tobytes()).hexdigest()[:12] == "a4981bf2e00d"
        assert hashlib.md5(data["x_test"].tobytes()).hexdigest()[:12] == "2c04bf788055"


def test_validation_comes_from_training_images_and_the_test_split_is_the_files_own() -> None:
    data = FashionMNISTDataModule(image_size=28, seed=0)
    splits = data.splits
    assert data.class_names[0] == "T-shirt/top" and data.num_classes == 10
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8000, 2000, 2000)
    assert torch.bincount(splits.val.labels, minlength=10).tolist() == [200] * 10  # stratified
    with np.load(resolve_path(FASHION_MNIST_FILE), allow_pickle=False) as raw:
        test_pixels = torch.as_tensor(raw["x_test"][..., 0], dtype=torch.float32)
        train_pixels = torch.as_tensor(raw["x_train"][..., 0], dtype=torch.float32)
    def pixels(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Normalised images back in 0..255, by the affine map that normalisation was."""
        return (images[:, 0] - reference.min()) / (reference.max() - reference.min()) * 255.0

    # The test images, un-normalised, are the file's test images in order.
    test = splits.test.images
    assert torch.allclose(pixels(test, test), test_pixels, atol=1e-2)
    # Validation images are training images of the file.
    train_rows = {row.numpy().tobytes() for row in train_pixels.to(torch.uint8)}
    val = pixels(splits.val.images[:50], test).round().to(torch.uint8)
    assert all(row.numpy().tobytes() in train_rows for row in val)
    # Another seed validates on other training images; the test images and labels stay.
    other = FashionMNISTDataModule(image_size=28, seed=1).splits
    assert not torch.equal(pixels(other.val.images[:50], other.test.images).round().to(torch.uint8), val)
    assert torch.equal(other.test.labels, splits.test.labels)
    assert torch.allclose(pixels(other.test.images, other.test.images), test_pixels, atol=1e-2)


def test_train_samples_resizing_and_registry() -> None:
    data = create_datamodule("fashion_mnist", image_size=16, train_samples=500, batch_size=50)
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (50, 3, 16, 16) and torch.equal(images[:, 0], images[:, 1])
    assert len(data.splits.train) == 500 and torch.bincount(data.splits.train.labels).tolist() == [50] * 10
    train = data.splits.train.images
    assert abs(train.mean().item()) < 1e-4 and abs(train.std().item() - 1.0) < 1e-2


def test_a_small_cnn_learns_it_well_above_chance() -> None:
    data = FashionMNISTDataModule(image_size=14, train_samples=1000, batch_size=32)
    result = train_and_evaluate(lambda: SmallCNN(10, width=8), data, epochs=2, seed=0, optimizer=OptimizerConfig(lr=1e-2))
    assert result.ok and result.final_val_acc is not None and result.final_val_acc > 0.6  # chance: 0.1


def test_missing_and_damaged_files_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist; give dataset.path"):
        FashionMNISTDataModule(path=str(tmp_path / "nowhere.npz")).setup()
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(resolve_path(FASHION_MNIST_FILE).read_bytes()[:5000])
    with pytest.raises(DatasetError, match="is damaged and cannot be read"):
        FashionMNISTDataModule(path=str(damaged)).setup()
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="lacks y_train, x_test, y_test, class_names"):
        FashionMNISTDataModule(path=str(partial)).setup()


def test_shift_and_flip_moves_and_mirrors_whole_images() -> None:
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    assert torch.equal(shift_and_flip(images, 0, False), images)
    generator = torch.Generator().manual_seed(0)
    moved = shift_and_flip(images, 1, False, generator)
    for out, src in zip(moved, images):
        # Every output is the source shifted by at most one pixel (edges replicated).
        padded = torch.nn.functional.pad(src.unsqueeze(0), (1, 1, 1, 1), mode="replicate")[0]
        assert any(torch.equal(out, padded[:, dy : dy + 5, dx : dx + 5]) for dy in range(3) for dx in range(3))
    flipped = shift_and_flip(images.repeat(64, 1, 1, 1), 0, True, torch.Generator().manual_seed(1))
    mirrored = [torch.equal(f, images[i % 2].flip(-1)) for i, f in enumerate(flipped)]
    kept = [torch.equal(f, images[i % 2]) for i, f in enumerate(flipped)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 40 < sum(mirrored) < 88  # 128 images, each mirrored with p = 1/2


def test_augmentation_touches_training_batches_only() -> None:
    data = FashionMNISTDataModule(image_size=12, train_samples=100, batch_size=20, augment=True)
    batch = next(iter(data.train_dataloader()))
    data.trainer = SimpleNamespace(training=False)  # type: ignore[assignment]
    assert data.on_after_batch_transfer(batch, 0) is batch
    data.trainer = SimpleNamespace(training=True)  # type: ignore[assignment]
    images, labels = data.on_after_batch_transfer(batch, 0)
    assert torch.equal(labels, batch[1]) and images.shape == batch[0].shape and not torch.equal(images, batch[0])
    plain = FashionMNISTDataModule(image_size=12, train_samples=100, batch_size=20)
    plain.trainer = SimpleNamespace(training=True)  # type: ignore[assignment]
    assert plain.on_after_batch_transfer(batch, 0) is batch
