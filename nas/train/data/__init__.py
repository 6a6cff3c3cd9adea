"""Image-classification DataModules, built by name with :func:`create_datamodule`.

=============== ============================================== ==========================
name            class                                          source
=============== ============================================== ==========================
``fashion_mnist`` :class:`FashionMNISTDataModule`              shipped in the package (default)
``digits``      :class:`DigitsDataModule`                      scikit-learn (embedded)
``image_folder`` :class:`ImageFolderDataModule`                a local folder of images
``huggingface`` :class:`HuggingFaceDataModule`                 Hugging Face ``datasets``
``torchvision`` :class:`TorchvisionDataModule`                 torchvision datasets
=============== ============================================== ==========================
"""
from nas.train.data.base import (
    DatasetError,
    DataSplits,
    ImageClassificationDataModule,
    PILImageDataModule,
    RunData,
    create_datamodule,
    dataset_names,
    image_transforms,
    register_dataset,
    stratified_split,
)
from nas.train.data.digits import DigitsDataModule
from nas.train.data.fashion_mnist import FASHION_MNIST_FILE, FashionMNISTDataModule, load_fashion_arrays
from nas.train.data.in_memory import SHIFT_AT_FULL_STRENGTH, ImageArrays, InMemoryDataModule, shift_and_flip, strength_shift
from nas.train.data.huggingface import HuggingFaceDataModule
from nas.train.data.image_folder import ImageFolderDataModule
from nas.train.data.torchvision_data import TORCHVISION_SPLITS, TorchvisionDataModule

__all__ = [
    "DatasetError",
    "DataSplits",
    "DigitsDataModule",
    "FASHION_MNIST_FILE",
    "FashionMNISTDataModule",
    "ImageArrays",
    "InMemoryDataModule",
    "HuggingFaceDataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "PILImageDataModule",
    "RunData",
    "SHIFT_AT_FULL_STRENGTH",
    "TORCHVISION_SPLITS",
    "TorchvisionDataModule",
    "create_datamodule",
    "dataset_names",
    "image_transforms",
    "load_fashion_arrays",
    "register_dataset",
    "shift_and_flip",
    "strength_shift",
    "stratified_split",
]
