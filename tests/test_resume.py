"""A resumed search samples new parameters: no two trials of a study share them unless one is a retry or was
enqueued (warm start, retry), whether the run was interrupted or given a larger budget."""

from __future__ import annotations

import json
from pathlib import Path

from test_search import tiny_config

from automtd.search._run import run_search


def _sampled(study_trials: list) -> list[str]:
    # enqueued trials (warm start, retries) carry Optuna's fixed_params: only the sampled ones must differ
    return [json.dumps(t.params, sort_keys=True) for t in study_trials if "fixed_params" not in t.system_attrs]


def test_resume_with_a_larger_budget_samples_new_parameters(
    tmp_path: Path, data_root: Path, resnet20_checkpoint: Path
) -> None:
    cfg = tiny_config(
        data_root,
        resnet20_checkpoint,
        f"sqlite:///{tmp_path / 'r.db'}",
        **{
            "study.name": "resume",
            "study.n_trials": 2,
            "sensitivity.enabled": False,
            "warmstart.enabled": False,
            "finetune.steps": 0,
            "data.train_subset": 64,
            "data.val_subset": 64,
            "sampler.n_startup_trials": 8,  # the default: the first trials are the sampler's seeded random draws
        },
    )
    first = run_search(cfg, progress=False)
    assert first.exit_code == 0 and len(first.study.trials) == 2
    again = run_search(cfg, n_trials=4, progress=False)
    trials = again.study.get_trials(deepcopy=False)
    assert again.exit_code == 0 and again.trials_run == 2 and len(trials) == 4
    sampled = _sampled(trials)
    assert len(sampled) == 4 and len(set(sampled)) == 4, sampled
