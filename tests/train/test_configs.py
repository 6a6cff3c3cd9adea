"""The dataset and trainer configs instantiate the classes they mirror."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from nas.train import (
    TRAINER_PRESETS,
    DigitsDataModule,
    HuggingFaceDataModule,
    ImageFolderDataModule,
    TorchvisionDataModule,
    TrainerSettings,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_group(group: str, option: str, overrides: tuple[str, ...] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name=None, overrides=[f"+{group}={option}", *(f"{group}.{o}" for o in overrides)])[group]


@pytest.mark.parametrize("name", sorted(TRAINER_PRESETS))
def test_trainer_configs_are_the_presets(name: str) -> None:
    settings = instantiate(compose_group("trainer", name))

    assert isinstance(settings, TrainerSettings)
    assert settings == TRAINER_PRESETS[name]


def test_dataset_configs_instantiate_working_datamodules(tmp_path: Path, sample_data: type) -> None:
    sample_data.write_class_folders(tmp_path / "folder", per_class=4)
    sample_data.save_hf_dataset(tmp_path / "hf")
    sample_data.write_mnist(tmp_path / "tv", train=12, test=6)
    cases = {
        "digits": (DigitsDataModule, ()),
        "image_folder": (ImageFolderDataModule, (f"root={tmp_path / 'folder'}",)),
        "huggingface": (
            HuggingFaceDataModule,
            ("name=null", f"path={tmp_path / 'hf'}", "image_column=picture", "label_column=kind"),
        ),
        "torchvision": (TorchvisionDataModule, ("name=MNIST", f"root={tmp_path / 'tv'}")),
    }
    for option, (cls, overrides) in cases.items():
        data = instantiate(compose_group("dataset", option, (*overrides, "num_workers=0", "batch_size=4")))
        assert type(data) is cls
        images, labels = next(iter(data.train_dataloader()))
        assert images.shape == (4, *data.input_shape) and labels.max() < data.num_classes


def test_image_folder_config_requires_its_root() -> None:
    from omegaconf.errors import MissingMandatoryValue

    with pytest.raises(MissingMandatoryValue, match="root"):
        instantiate(compose_group("dataset", "image_folder"))
