"""BatchNorm recalibration after decomposing a whole pretrained network."""

from __future__ import annotations

import copy
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


def _reference_recalibration(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    """Cumulative-average re-estimation written out: reset, momentum None, forward in train mode."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)


def test_same_statistics_as_the_written_out_loop_and_state_restored() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8, momentum=0.3), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 4, 1), torch.nn.BatchNorm2d(4),
    ).eval()
    batches = [(torch.randn(n, 3, 8, 8) * 2 + 1, torch.zeros(n, dtype=torch.long)) for n in (5, 7, 3, 6)]
    reference = copy.deepcopy(model)
    _reference_recalibration(reference, [x for x, _ in batches[:3]])
    seen = recalibrate_batchnorm(model, iter(batches), max_batches=3, device="cpu", channels_last=False)
    assert seen == 15
    for (k, got), want in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(got, want), k
    assert not model.training  # eval mode kept
    assert [m.momentum for m in model if isinstance(m, torch.nn.BatchNorm2d)] == [0.3, 0.1]
    # the whole loader when max_batches is None; bare image tensors are accepted too
    assert recalibrate_batchnorm(model, [x for x, _ in batches], device="cpu") == 21


def test_model_without_batchnorm_is_left_alone() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    assert recalibrate_batchnorm(model, [(torch.randn(2, 3, 8, 8), torch.zeros(2))]) == 0


def test_channels_last_passes_give_the_same_statistics_and_keep_the_format() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1),
        torch.nn.BatchNorm2d(4),
    ).eval()
    batches = [torch.randn(6, 3, 8, 8) * 2 + 1 for _ in range(3)]
    reference = copy.deepcopy(model)
    recalibrate_batchnorm(reference, batches, device="cpu", channels_last=False)
    formats: list[bool] = []
    model[0].register_forward_hook(lambda _m, inp, _o: formats.append(
        inp[0].is_contiguous(memory_format=torch.channels_last) and not inp[0].is_contiguous()))
    assert recalibrate_batchnorm(model, batches, device="cpu") == 18
    assert formats == [True, True, True]  # the passes ran in channels-last
    for (k, got), want in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.allclose(got.float(), want.float(), atol=1e-5), k
    assert model[0].weight.is_contiguous()  # the model's own format is back
