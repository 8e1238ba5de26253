"""Training, fine-tuning and evaluation: one loop (:func:`fit`) and :func:`evaluate` used everywhere."""

from automtd.train._bn import recalibrate_batchnorm
from automtd.train._config import TrainConfig, TrainResult
from automtd.train._loop import NonFiniteLossError, StopTraining, evaluate, fit, kd_loss, resolve_device
from automtd.train._recipe import TrainRunConfig, load_train_config, train_from_config

__all__ = [
    "NonFiniteLossError",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "TrainRunConfig",
    "evaluate",
    "fit",
    "kd_loss",
    "load_train_config",
    "recalibrate_batchnorm",
    "resolve_device",
    "train_from_config",
]
