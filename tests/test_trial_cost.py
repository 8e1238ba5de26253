"""The cheaper trial: each speed-up of :class:`automtd.search.TrialOptions` keeps what a trial computes.

The teacher-logit cache makes a later trial of the same plan score exactly as the first (the seeded
batches replay with the same augmentation), and the path with every speed-up off scores the same
plans within noise.  Speed is measured by ``python -m benchmarks trial-cost``, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from automtd.baselines import uniform_plan
from automtd.plan import Plan
from automtd.search import SearchConfig, SearchContext, TrialOptions, build_context, directions, run_trial

OFF = TrialOptions(batched_loader=False, teacher_cache=False, teacher_fused=False, bn_channels_last=False,
                   eval_bf16=False)


def _config(data_root: Path, checkpoint: Path, *, bf16: bool) -> SearchConfig:
    return SearchConfig.model_validate({
        "model": {"name": "cifar_resnet20", "checkpoint": str(checkpoint)},
        "data": {"root": str(data_root), "train_subset": 256, "val_subset": 300, "batch_size": 32},
        "finetune": {"steps": 3, "lr": 0.002, "bn_recalibration_images": 64, "cpu_bf16": bf16,
                     "early_stop": {"enabled": False}},
        "sensitivity": {"enabled": False},
        "warmstart": {"enabled": False},
        "device": "cpu",
    })


def _plan(ctx: SearchContext) -> Plan:
    cfg = ctx.config
    return uniform_plan(ctx.base_model, "tucker2", 0.5, architecture=cfg.model.name, input_size=cfg.model.input_size)


def _trial(ctx: SearchContext, plan: Plan) -> dict[str, Any]:
    study = optuna.create_study(directions=directions(ctx.config), sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({}, user_attrs={"warm_plan": plan.to_dict()})
    trial = study.ask()
    study.tell(trial, run_trial(ctx, trial))
    return dict(study.trials[-1].user_attrs)


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory, data_root: Path,
             resnet20_checkpoint: Path) -> dict[str, SearchContext]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    new, old = (_config(data_root, resnet20_checkpoint, bf16=bf16) for bf16 in (True, False))
    return {"new": build_context(new, tmp_path_factory.mktemp("new")),
            "old": build_context(old, tmp_path_factory.mktemp("old"), OFF)}


def test_the_options_choose_the_loader_and_the_teacher(contexts: dict[str, SearchContext]) -> None:
    new, old = contexts["new"], contexts["old"]
    assert len(next(iter(new.train_loader))) == 3 and len(next(iter(old.train_loader))) == 2  # keys or not
    assert new.teacher.cache and new.teacher.fuse and not old.teacher.cache and not old.teacher.fuse
    assert len(new.train_loader) == len(old.train_loader) == 8


def test_a_later_trial_takes_the_teacher_logits_from_the_cache_and_scores_the_same(
    contexts: dict[str, SearchContext],
) -> None:
    ctx = contexts["new"]
    plan = _plan(ctx)
    first = _trial(ctx, plan)
    misses = ctx.teacher.misses
    assert misses == 3 * 32 and ctx.teacher.hits == 0  # 3 fine-tune steps of 32 images
    second = _trial(ctx, plan)
    assert ctx.teacher.misses == misses and ctx.teacher.hits == 3 * 32  # the teacher did not run at all
    assert second["accuracy"] == first["accuracy"] and second["accuracy_before"] == first["accuracy_before"]


def test_the_old_path_scores_the_same_plan_within_noise(contexts: dict[str, SearchContext]) -> None:
    plan = _plan(contexts["new"])
    new, old = _trial(contexts["new"], plan), _trial(contexts["old"], plan)
    # 300 validation images: a binomial standard error near 2.5 points; different augmentation draws too
    assert new["accuracy"] == pytest.approx(old["accuracy"], abs=8.0)
    assert new["accuracy_before"] == pytest.approx(old["accuracy_before"], abs=8.0)
    assert contexts["new"].base_accuracy == pytest.approx(contexts["old"].base_accuracy, abs=1.0)
