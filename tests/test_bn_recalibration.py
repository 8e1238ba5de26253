"""BatchNorm recalibration after decomposing a whole pretrained network."""

from __future__ import annotations

from pathlib import Path

import torch

from automtd.baselines import ht2_energy_plan
from automtd.checkpoints import load_checkpoint
from automtd.data import get_dataset, make_loader
from automtd.models import get_model_spec
from automtd.plan import apply_plan
from automtd.train import evaluate, recalibrate_batchnorm


def test_recalibration_recovers_accuracy_and_touches_only_bn_buffers(
    data_root: Path, resnet20_checkpoint: Path
) -> None:
    model, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    apply_plan(model, ht2_energy_plan(model, 0.7, architecture="cifar_resnet20"))
    spec = get_model_spec("cifar_resnet20")
    norm = {"mean": spec.mean, "std": spec.std}
    calib_set = get_dataset("cifar10", "train", root=data_root, subset=512, **norm)
    test_set = get_dataset("cifar10", "test", root=data_root, subset=500, **norm)
    calib = make_loader(calib_set, batch_size=128, shuffle=False)
    test = make_loader(test_set, batch_size=250, shuffle=False)
    before = evaluate(model, test)
    weights = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(("running_mean", "running_var"))}
    seen = recalibrate_batchnorm(model, calib, max_batches=3)
    after = evaluate(model, test)
    assert seen == 384
    assert after > before + 10.0, (before, after)
    for k, v in model.state_dict().items():
        if k in weights and not k.endswith("num_batches_tracked"):
            assert torch.equal(v, weights[k]), k


def test_model_without_batchnorm_is_left_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert recalibrate_batchnorm(model, [(torch.randn(2, 3, 8, 8), torch.zeros(2))]) == 0
