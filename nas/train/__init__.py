"""Training of candidate networks: the objective that a real (non-table) search evaluates.

:func:`train_and_evaluate` trains one network with Lightning on a DataModule
(:mod:`nas.train.data`), hands each epoch's validation metrics to the search
(:class:`EvaluationReporter`) and returns a :class:`TrainingResult` that is failed, with
its reason, instead of raising when the candidate breaks.
"""
from nas.train.callbacks import (
    EpochMetrics,
    EpochSink,
    EvaluationReporter,
    NonFiniteLossError,
    NonFiniteLossGuard,
    TimeLimit,
    TrainingFailure,
)
from nas.train.data import (
    DatasetError,
    DigitsDataModule,
    FashionMNISTDataModule,
    HuggingFaceDataModule,
    ImageClassificationDataModule,
    ImageFolderDataModule,
    TorchvisionDataModule,
    create_datamodule,
    dataset_names,
)
from nas.train.evaluate import (
    TRAINER_PRESETS,
    TrainerSettings,
    TrainingResult,
    describe_failure,
    train_and_evaluate,
    trainer_settings,
)
from nas.train.module import ClassificationModule, OptimizerConfig

__all__ = [
    "ClassificationModule",
    "DatasetError",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "EpochMetrics",
    "EpochSink",
    "EvaluationReporter",
    "HuggingFaceDataModule",
    "ImageClassificationDataModule",
    "ImageFolderDataModule",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "OptimizerConfig",
    "TRAINER_PRESETS",
    "TimeLimit",
    "TorchvisionDataModule",
    "TrainerSettings",
    "TrainingFailure",
    "TrainingResult",
    "create_datamodule",
    "dataset_names",
    "describe_failure",
    "train_and_evaluate",
    "trainer_settings",
]
