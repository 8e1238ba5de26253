"""What a front's accuracy is measured on, and the commands that turn a front trial into a model."""

from __future__ import annotations

import optuna

from automtd._errors import AutomtdError
from automtd.search._config import SearchConfig
from automtd.search._objective import config_from_study
from automtd.search._redact import redact_url

__all__ = ["front_notes", "score_data"]


def score_data(config: SearchConfig) -> str:
    """The images a study's trials are scored on, in words."""
    d = config.data
    images = f"{d.val_subset} of the " if d.val_subset else "the "
    if d.score_split == "test-select":
        return (f"{images}{d.dataset} test-select images (a fixed class-balanced half of the test set; the other "
                "half, test-report, is never scored by the search)")
    return (f"{images}{d.val_size} validation images carved from the {d.dataset} training set (honest only for a "
            "base trained without them)")


def front_notes(study: optuna.Study, *, storage_url: str, trial: int | None) -> list[str]:
    """Lines to print under a front table: the data behind its accuracy column, then the next commands."""
    try:
        config = config_from_study(study)
    except AutomtdError:  # a study not created by `automtd search`: nothing known about its data
        config = None
    if config is None:
        where = "the study's score data"
        checkpoint = "CK"
        report = "test"
    else:
        where = score_data(config)
        checkpoint = config.model.checkpoint or "CK"
        report = "test-report" if config.data.score_split == "test-select" else "test"
    storage = redact_url(storage_url)
    pick = f"--trial {trial}" if trial is not None else "--max-drop 1.0"
    return [
        f"accuracy: top-1 % on {where}; drop: the original's accuracy there minus it. The plans were selected "
        f"on these images: measure the one you pick on others (--split {report}).",
        f"next: automtd export --study {study.study_name} --storage {storage} {pick} -o plan.yaml",
        f"      automtd apply --plan plan.yaml --checkpoint {checkpoint} -o compressed/ --finetune-epochs 1",
        f"      automtd evaluate --checkpoint compressed/ --split {report}",
    ]
