"""Shared fixtures: small, fast training set-ups on the embedded digits dataset, small
image datasets in each supported layout, and networks that break in the ways candidates
break (NaN outputs, exceptions, OOM)."""
from __future__ import annotations

import struct
from pathlib import Path


import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from nas.train import DigitsDataModule, TrainerSettings
from nas.train.reference import SmallCNN


@pytest.fixture
def digits() -> DigitsDataModule:
    """The digits at their native 8x8 resolution: the fastest real training data."""
    return DigitsDataModule(image_size=8, batch_size=32)


@pytest.fixture
def cpu() -> TrainerSettings:
    return TrainerSettings(num_threads=1)


class BreaksAfter(nn.Module):
    """A :class:`SmallCNN` whose ``forward`` breaks from its ``after``-th training call on.

    ``mode``: ``"nan"`` returns NaN logits, ``"raise"`` raises ``RuntimeError``,
    ``"oom"`` raises ``torch.cuda.OutOfMemoryError`` (as CUDA does when memory runs out).
    """

    def __init__(self, mode: str, after: int = 3) -> None:
        super().__init__()
        self.net = SmallCNN(10, width=4)
        self.mode = mode
        self.after = after
        self.calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images)
        if self.training:
            self.calls += 1
            if self.calls >= self.after:
                if self.mode == "nan":
                    return logits * torch.nan
                if self.mode == "raise":
                    raise RuntimeError("candidate forward failed")
                if self.mode == "oom":
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return logits


@pytest.fixture
def breaking_model() -> type[BreaksAfter]:
    return BreaksAfter


class SampleData:
    """Small image datasets written to disk in each supported layout; every image's
    dominant colour channel is its class, so a network can learn them."""

    CLASSES = ("circle", "square", "triangle")

    @staticmethod
    def colour_image(label: int, index: int, size: tuple[int, int] = (20, 14)) -> Image.Image:
        """A small RGB image whose dominant channel is its class (so a network can learn it)."""
        rng = np.random.default_rng(100 * label + index)
        pixels = rng.integers(0, 80, size=(size[1], size[0], 3), dtype=np.uint8)
        pixels[..., label] += 150
        return Image.fromarray(pixels)

    @staticmethod
    def write_class_folders(
        root: Path, per_class: int, classes: tuple[str, ...] = CLASSES, start: int = 0
    ) -> None:
        """``root/<class>/<i>.png`` for each class; ``start`` offsets the image seeds."""
        for name in classes:
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                SampleData.colour_image(SampleData.CLASSES.index(name), start + i).save(root / name / f"{i}.png")

    @staticmethod
    def save_hf_dataset(path: Path, labels_as_strings: bool = False, as_dict: bool = True) -> None:
        """24 images in columns ``picture``/``kind``, as train/test splits or one ``Dataset``."""
        import datasets  # a declared dependency: the Hugging Face loader is part of the product

        labels = [i % 3 for i in range(24)]
        features = datasets.Features(
            {
                "picture": datasets.Image(),
                "kind": (
                    datasets.Value("string")
                    if labels_as_strings
                    else datasets.ClassLabel(names=list(SampleData.CLASSES))
                ),
            }
        )
        table = datasets.Dataset.from_dict(
            {
                "picture": [SampleData.colour_image(label, i) for i, label in enumerate(labels)],
                "kind": [SampleData.CLASSES[label] for label in labels] if labels_as_strings else labels,
            },
            features=features,
        )
        (table.train_test_split(test_size=0.25, seed=0) if as_dict else table).save_to_disk(str(path))

    @staticmethod
    def write_mnist(root: Path, train: int, test: int) -> None:
        """torchvision's MNIST raw layout: IDX files of 28x28 uint8 images and their labels."""
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for prefix, count in (("train", train), ("t10k", test)):
            images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
            labels = (np.arange(count) % 10).astype(np.uint8)
            # IDX headers: magic number (2051 images, 2049 labels), then the dimensions.
            images_header = struct.pack(">iiii", 2051, count, 28, 28)
            (raw / f"{prefix}-images-idx3-ubyte").write_bytes(images_header + images.tobytes())
            (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, count) + labels.tobytes())


@pytest.fixture
def sample_data() -> type[SampleData]:
    return SampleData
