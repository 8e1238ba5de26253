"""Training, fine-tuning and evaluation: one loop (:func:`fit`) and :func:`evaluate` used everywhere."""

from automtd.train._bn import recalibrate_batchnorm
from automtd.train._config import TrainConfig, TrainResult
from automtd.train._loop import Batch, NonFiniteLossError, StopTraining, evaluate, fit, kd_loss

__all__ = [
    "Batch",
    "NonFiniteLossError",
    "StopTraining",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "fit",
    "kd_loss",
    "recalibrate_batchnorm",
]
