"""What a front's accuracy is measured on, and the commands that turn a front trial into a model."""

from __future__ import annotations

import optuna

from automtd._errors import AutomtdError
from automtd.search._objective import config_from_study
from automtd.search._redact import redact_url

__all__ = ["front_notes"]


def front_notes(study: optuna.Study, *, storage_url: str, trial: int | None) -> list[str]:
    """Lines to print under a front table: the data behind its accuracy column, then the next commands."""
    try:
        config = config_from_study(study)
    except AutomtdError:  # a study not created by `automtd search`: nothing known about its data
        config = None
    if config is None:
        where = "the study's validation data"
        checkpoint = "CK"
    else:
        d = config.data
        images = f"{d.val_subset} of the " if d.val_subset else "the "
        where = f"{images}{d.val_size} validation images carved from the {d.dataset} training set (not the test set)"
        checkpoint = config.model.checkpoint or "CK"
    storage = redact_url(storage_url)
    pick = f"--trial {trial}" if trial is not None else "--max-drop 1.0"
    return [
        f"accuracy: top-1 % on {where}; drop: the original's accuracy there minus it. A base trained on the "
        "whole training set (e.g. the akamaster CIFAR weights) has seen these images, so compare plans by drop "
        "and measure the one you pick on the test split.",
        f"next: automtd export --study {study.study_name} --storage {storage} {pick} -o plan.yaml",
        f"      automtd apply --plan plan.yaml --checkpoint {checkpoint} -o compressed/ --finetune-epochs 1",
        "      automtd evaluate --checkpoint compressed/ --split test",
    ]
