"""Workflows that combine checkpoints, data, training and plans; the only package that imports them all.

* :func:`compress_checkpoint`: ``automtd apply`` (load, apply a plan, fine-tune with KD or DeepTwist,
  save, measure).
* :func:`train_from_config`: ``automtd train`` (a base model from a config).
* :func:`run_funnel`: ``automtd funnel`` (funnel regularization: gate, train, prune, fold, fine-tune).

Their configs are built from the sections every command shares (:mod:`automtd.config`).
"""

from automtd.workflows._compress import CompressResult, FinetuneOptions, compress_checkpoint, finetune
from automtd.workflows._funnel import (
    FunnelConfig,
    FunnelData,
    FunnelStage,
    funnel_plan,
    load_funnel_config,
    run_funnel,
)
from automtd.workflows._train import TrainData, TrainRunConfig, load_train_config, resume_state, train_from_config

__all__ = [
    "CompressResult",
    "FinetuneOptions",
    "FunnelConfig",
    "FunnelData",
    "FunnelStage",
    "TrainData",
    "TrainRunConfig",
    "compress_checkpoint",
    "finetune",
    "funnel_plan",
    "load_funnel_config",
    "load_train_config",
    "resume_state",
    "run_funnel",
    "train_from_config",
]
