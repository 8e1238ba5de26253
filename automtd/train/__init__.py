"""Training, fine-tuning and evaluation: one loop (:func:`fit`) and :func:`evaluate` used everywhere."""

from automtd.train._bn import recalibrate_batchnorm
from automtd.train._config import TrainConfig, TrainResult
from automtd.train._loop import Batch, NonFiniteLossError, StopTraining, cpu_bf16_supported, evaluate, fit, kd_loss
from automtd.train._resume import ResumeState
from automtd.train._teacher import Teacher

__all__ = [
    "Batch",
    "NonFiniteLossError",
    "ResumeState",
    "StopTraining",
    "Teacher",
    "TrainConfig",
    "TrainResult",
    "cpu_bf16_supported",
    "evaluate",
    "fit",
    "kd_loss",
    "recalibrate_batchnorm",
]
