"""deploy_model on whole networks: exact on a compressed ResNet, graceful on an untraceable model."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.baselines import uniform_plan
from automtd.deploy import (
    DENSE,
    compare_models,
    dense_equivalents,
    deploy_model,
    exact_forms,
    merge_convs,
    merge_separable_convs,
    tune_collapse,
)
from automtd.methods import LayerShape, get_method
from automtd.models import get_model
from automtd.plan import apply_plan, measure_text


def _resnet20_cp() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    original = get_model("cifar_resnet20").eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding is really tested
        for m in original.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    plan = uniform_plan(original, "cp", 0.5, architecture="cifar_resnet20")
    compressed = apply_plan(copy.deepcopy(original), plan).eval()
    return original, compressed


def test_compressed_resnet_inference_form_is_exact_and_smaller_graph() -> None:
    _, compressed = _resnet20_cp()
    n_cp = sum(1 for m in compressed.modules() if type(m).__name__ == "FactorizedConv")
    deployed = deploy_model(compressed, pad_channels=8)
    assert deployed.applied == ("merge_separable", "pad_channels", "fold_bn", "channels_last")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected, got = compressed(x), deployed.module(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), float((got - expected).abs().max())
    modules = list(deployed.module.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in modules)
    kxk_depthwise = [m for m in modules if isinstance(m, nn.Conv2d) and m.groups > 1 and m.kernel_size == (3, 3)]
    assert len(kxk_depthwise) == n_cp > 0
    assert any(isinstance(m, nn.BatchNorm2d) for m in compressed.modules())  # the input is untouched
    assert deployed.module.conv1.weight.is_contiguous(memory_format=torch.channels_last)


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y if float(y.sum()) > 0 else -y  # torch.fx cannot trace this branch


def test_untraceable_model_keeps_batchnorm_and_says_why() -> None:
    model = _DataDependent().eval()
    deployed = deploy_model(model)
    assert "fold_bn" in deployed.skipped and "fold_bn" not in deployed.applied
    assert deployed.skipped["merge_separable"]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(deployed.module(x), model(x), atol=1e-6)


def test_merge_leaves_non_depthwise_spatial_pairs() -> None:
    seq = nn.Sequential(nn.Conv2d(4, 3, (3, 1), padding=(1, 0), bias=False), nn.Conv2d(3, 5, (1, 3), padding=(0, 1)))
    assert merge_separable_convs(seq) == 0 and len(seq) == 2


def test_compare_models_times_the_inference_form() -> None:
    original, compressed = _resnet20_cp()
    report = compare_models(original, compressed, (3, 32, 32), batch_sizes=(2,), min_run_time=0.01, threads=1)
    assert report["original"]["deploy"]["applied"] == ["fold_bn", "channels_last"]
    deploy = report["compressed"]["deploy"]
    # padding is measured per chain at each batch size: applied exactly when some chain was padded
    # padding and collapse are measured per chain: applied or skipped with a reason, by what was measured
    measured = ("pad_channels", "collapse")
    assert [s for s in deploy["applied"] if s not in measured] == ["merge_separable", "fold_bn", "channels_last"]
    assert all((s in deploy["applied"]) != (s in deploy["skipped"]) for s in measured)
    assert list(deploy["padded"]) == ["batch_2"]
    assert ("pad_channels" in deploy["applied"]) == bool(deploy["padded"]["batch_2"])
    assert ("pad_channels" in deploy["skipped"]) != ("pad_channels" in deploy["applied"])
    assert "timed in inference form: merge_separable, " in measure_text(report)
    eager = compare_models(original, compressed, (3, 32, 32), batch_sizes=(2,), min_run_time=0.01, deploy=False)
    assert "deploy" not in eager["compressed"] and "inference form" not in measure_text(eager)


def _chain_timer(dense_ms: float, chain_ms: float) -> Callable[[nn.Module, torch.Tensor], float]:
    def timer(module: nn.Module, x: torch.Tensor) -> float:
        return dense_ms if isinstance(module, nn.Conv2d) else chain_ms
    return timer


@pytest.mark.parametrize(("dense_ms", "chain_ms", "collapsed"),
                         [(1.0, 2.0, True), (1.0, 1.02, False), (2.0, 1.0, False)])
def test_collapse_keeps_a_chain_unless_its_dense_product_is_measured_faster(
        dense_ms: float, chain_ms: float, collapsed: bool) -> None:
    _, compressed = _resnet20_cp()
    assert len(dense_equivalents(compressed)) == 18  # every 3x3 conv of the ResNet-20 but the stem (uniform CP)
    forms = {name: {DENSE: f[DENSE]} for name, f in exact_forms(compressed).items()}
    model = copy.deepcopy(compressed)
    x = torch.randn(2, 3, 32, 32)
    chosen = tune_collapse(model, forms, x, timer=_chain_timer(dense_ms, chain_ms), rounds=1)
    assert bool(chosen) is collapsed and (len(chosen) == 18 if collapsed else not chosen)
    assert isinstance(model.layer1[0].conv1, nn.Conv2d) is collapsed
    with torch.no_grad():
        assert torch.allclose(model(x), compressed(x), atol=1e-4, rtol=1e-4)


def test_collapse_refuses_a_dense_conv_that_computes_something_else() -> None:
    _, compressed = _resnet20_cp()
    forms = exact_forms(compressed)
    with torch.no_grad():
        forms["layer1.0.conv1"][DENSE].weight.mul_(1.5)  # type: ignore[operator]
    forms = {name: {DENSE: f[DENSE]} for name, f in forms.items()}
    model = copy.deepcopy(compressed)
    chosen = tune_collapse(model, forms, torch.randn(2, 3, 32, 32), timer=_chain_timer(1.0, 9.0), rounds=1)
    assert "layer1.0.conv1" not in chosen and len(chosen) == 17
    assert type(model.layer1[0].conv1).__name__ == "FactorizedConv"


def test_collapse_takes_the_fastest_exact_form() -> None:
    """The chain, its dense product and its three merged forms timed: the fastest (here the kx1 + 1xk pair)
    replaces the chain, outputs unchanged; the same CP layers with only their dense product stay chains."""
    _, compressed = _resnet20_cp()
    forms = exact_forms(compressed)
    assert all(len(f) == 4 for f in forms.values())  # dense + three merged forms per CP chain

    def timer(module: nn.Module, x: torch.Tensor) -> float:
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        if len(convs) == 2 and convs[0].kernel_size[1] == 1 and convs[1].kernel_size[0] == 1:
            return 1.0  # kx1 + 1xk
        return 2.0 if len(convs) == 1 else 1.5  # the dense conv, the chain and the other merged forms

    model = copy.deepcopy(compressed)
    x = torch.randn(2, 3, 32, 32)
    chosen = tune_collapse(model, forms, x, timer=timer, rounds=1)
    assert len(chosen) == 18 and set(chosen.values()) == {1.5}
    conv1 = model.layer1[0].conv1
    assert [m.kernel_size for m in conv1] == [(3, 1), (1, 3)]
    with torch.no_grad():
        assert torch.allclose(model(x), compressed(x), atol=1e-4, rtol=1e-4)
    dense_only = copy.deepcopy(compressed)
    assert not tune_collapse(dense_only, {n: {DENSE: f[DENSE]} for n, f in forms.items()}, x, timer=timer, rounds=1)


def test_merge_convs_carries_biases_and_refuses_what_no_single_conv_computes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 9)
    pair = [(nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=True), nn.Conv2d(5, 6, 1, bias=True)),  # bias through 1x1
            (nn.Conv2d(4, 5, 1, bias=False), nn.Conv2d(5, 6, 3, padding=2, dilation=2, groups=1, bias=True)),
            (nn.Conv2d(4, 6, (3, 1), padding=(1, 0), groups=2, bias=False),
             nn.Conv2d(6, 6, (1, 3), padding=(0, 1), groups=3))]
    for first, second in pair:
        merged = merge_convs(first, second)
        assert merged is not None
        with torch.no_grad():
            assert torch.allclose(merged(x), second(first(x)), atol=1e-5)
    assert merge_convs(nn.Conv2d(4, 5, 1, bias=True), nn.Conv2d(5, 6, 3, padding=1)) is None  # padded bias
    assert merge_convs(nn.Conv2d(4, 5, 3), nn.Conv2d(5, 6, 3)) is None  # two kxk convs: a 5x5 kernel, not built
    assert merge_convs(nn.Conv2d(4, 5, (3, 1), padding=(1, 0), padding_mode="reflect"),
                       nn.Conv2d(5, 6, (1, 3), padding=(0, 1))) is None
    assert merge_convs(nn.Conv2d(4, 5, 1), nn.Conv2d(4, 6, 1)) is None  # widths do not chain


def test_collapse_options() -> None:
    _, compressed = _resnet20_cp()
    assert "needs example_input" in deploy_model(compressed).skipped["collapse"]
    assert deploy_model(compressed, collapse=False).skipped["collapse"] == "turned off (collapse=False)"
    every = deploy_model(compressed, collapse=True)
    assert len(every.collapsed) == 18 and "collapse" in every.applied
    assert not any(type(m).__name__ == "FactorizedConv" for m in every.module.modules())
    with pytest.raises(ConfigError, match="collapse='yes' is not allowed"):
        deploy_model(compressed, collapse="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["cp", "tucker2", "ht2"])
def test_a_chain_that_is_the_whole_model_deploys_exactly(method: str) -> None:
    """Rewrites replace a chain inside its parent: a chain deployed on its own (a latency-table block) must
    not be rewritten into a second copy of itself."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 3, padding=1).eval()
    impl = get_method(method)
    ranks = impl.ranks_for_fraction(LayerShape.of(conv), 0.3)
    chain = impl.build(conv, impl.decompose(conv.weight.detach(), ranks)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = chain(x)
        for options in ({"collapse": True}, {"collapse": False, "pad_channels": 8},
                        {"collapse": "auto", "example_input": x}):
            got = deploy_model(chain, **options).module(x)  # type: ignore[arg-type]
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
