"""Contract every registered method must pass, parametrized over ``list_methods()``.

Each method is exercised on every layer configuration it accepts: stride 2, asymmetric (per-axis)
padding, dilation 2, bias, 'same' with even kernels, 'valid', and the reflect/replicate/circular
padding modes.  At full rank the built module must reproduce the dense layer (CP: on a kernel of
exact rank R); analytic costs must equal what torch measures on the built module.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from automtd import DecompositionError, LayerShape, RankError, get_method, list_methods, methods_for
from automtd.methods import FactorizedConv, FactorizedLinear

CONV_CASES = {
    "stride2_asym_dil2_bias": dict(
        in_channels=6, out_channels=8, kernel_size=3, stride=2, padding=(1, 2), dilation=2, bias=True
    ),
    "same_even_kernel": dict(in_channels=5, out_channels=7, kernel_size=(3, 2), padding="same", bias=True),
    "same_even_circular": dict(
        in_channels=4, out_channels=6, kernel_size=(2, 4), padding="same", padding_mode="circular"
    ),
    "reflect_stride21": dict(
        in_channels=4, out_channels=6, kernel_size=3, stride=(2, 1), padding=(1, 2), padding_mode="reflect", bias=True
    ),
    "replicate_dil": dict(
        in_channels=3, out_channels=5, kernel_size=(3, 5), dilation=(2, 1), padding=(2, 2), padding_mode="replicate"
    ),
    "valid_stride3": dict(in_channels=4, out_channels=3, kernel_size=(5, 3), stride=3, padding="valid", bias=True),
    "pointwise_stride2": dict(in_channels=8, out_channels=6, kernel_size=1, stride=2, bias=True),
}
IN_HW = (11, 13)
CP_RANK = 3


def _conv(case: str, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(**CONV_CASES[case])


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(12, 7, bias=True)


def _cases(method_name: str) -> list[str]:
    method = get_method(method_name)
    out = [c for c in CONV_CASES if method.unsupported_reason(LayerShape.of(_conv(c))) is None]
    if method.unsupported_reason(LayerShape.of(_linear())) is None:
        out.append("linear")
    return out


ALL = [(m, c) for m in list_methods() for c in _cases(m)]


def _layer(case: str, seed: int = 0) -> nn.Module:
    return _linear(seed) if case == "linear" else _conv(case, seed)


def _input(layer: nn.Module, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    if isinstance(layer, nn.Linear):
        return torch.randn(batch, layer.in_features, generator=gen)
    return torch.randn(batch, layer.in_channels, *IN_HW, generator=gen)


def _exact_rank_kernel(layer: nn.Conv2d, rank: int) -> None:
    """Overwrite the weight with a random kernel of CP rank exactly ``rank``."""
    gen = torch.Generator().manual_seed(7)
    t, c, kh, kw = layer.weight.shape
    a, b, k1, k2 = (torch.randn(n, rank, generator=gen, dtype=torch.float64) for n in (t, c, kh, kw))
    with torch.no_grad():
        layer.weight.copy_(torch.einsum("tr,cr,ir,jr->tcij", a, b, k1, k2).float())


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_registry_has_the_six_methods() -> None:
    assert list_methods() == sorted(["cp", "tucker2", "ht2", "svd_channel", "svd_spatial", "svd_linear"])
    for name in list_methods():
        m = get_method(name)
        assert m.name == name and len(m.rank_names) >= 1 and m.summary


def test_every_method_has_cases() -> None:
    for name in list_methods():
        assert len(_cases(name)) >= 1, name


@pytest.mark.parametrize(("name", "case"), ALL)
def test_full_rank_module_equals_dense_layer(name: str, case: str) -> None:
    method = get_method(name)
    layer = _layer(case)
    shape = LayerShape.of(layer)
    if name == "cp":
        assert isinstance(layer, nn.Conv2d)
        _exact_rank_kernel(layer, CP_RANK)
        ranks: tuple[int, ...] = (CP_RANK,)
    else:
        ranks = method.full_ranks(shape)
    module = method.from_layer(layer, ranks, seed=0)
    assert isinstance(module, (FactorizedConv, FactorizedLinear))
    x = _input(layer)
    with torch.no_grad():
        expected, got = layer(x), module(x)
    assert got.shape == expected.shape
    assert _rel(got, expected) < 1e-4, (name, case, _rel(got, expected))


@pytest.mark.parametrize(("name", "case"), ALL)
def test_module_equals_conv_with_reconstructed_weight(name: str, case: str) -> None:
    """At a truncating rank, build() and reconstruct() describe the same operator."""
    method = get_method(name)
    layer = _layer(case)
    shape = LayerShape.of(layer)
    ranks = method.ranks_for_fraction(shape, 0.3)
    factors = method.decompose(layer.weight.detach(), ranks, seed=0)
    module = method.build(layer, factors)
    dense = _layer(case)
    with torch.no_grad():
        dense.weight.copy_(method.reconstruct(factors))
        if layer.bias is not None:
            dense.bias.copy_(layer.bias)
        x = _input(layer)
        assert _rel(module(x), dense(x)) < 1e-4


@pytest.mark.parametrize(("name", "case"), ALL)
def test_analytic_costs_match_measured(name: str, case: str) -> None:
    method = get_method(name)
    layer = _layer(case)
    shape = LayerShape.of(layer)
    in_hw = (1, 1) if case == "linear" else IN_HW  # a linear layer on (N, C): one position per sample
    for fraction in (0.2, 1.0):
        ranks = method.ranks_for_fraction(shape, fraction)
        module = method.from_layer(layer, ranks)
        assert sum(p.numel() for p in module.parameters()) == method.params(shape, ranks)
        x = _input(layer, batch=1)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            module(x)
        assert counter.get_total_flops() == 2 * method.macs(shape, ranks, in_hw), (name, case, ranks)
    # the dense layer follows the same convention
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        layer(_input(layer, batch=1))
    assert counter.get_total_flops() == 2 * shape.dense_macs(in_hw)


@pytest.mark.parametrize(("name", "case"), ALL)
def test_error_decreases_with_rank(name: str, case: str) -> None:
    method = get_method(name)
    layer = _layer(case)
    shape = LayerShape.of(layer)
    w = layer.weight.detach()
    errors, seen = [], set()
    for fraction in (0.05, 0.15, 0.3, 0.6, 1.0):
        ranks = method.ranks_for_fraction(shape, fraction)
        if ranks in seen:
            continue
        seen.add(ranks)
        errors.append(_rel(method.reconstruct(method.decompose(w, ranks, seed=0)), w))
    assert len(errors) >= 2, (name, case)
    for low, high in zip(errors[1:], errors[:-1], strict=True):
        assert low <= high + 1e-6, (name, case, errors)
    if name != "cp":
        assert errors[-1] < 1e-5  # exact at full rank
        assert errors[0] > 1e-3  # and truncating at the smallest


@pytest.mark.parametrize(("name", "case"), ALL)
def test_seeded_runs_are_identical(name: str, case: str) -> None:
    method = get_method(name)
    layer = _layer(case)
    ranks = method.ranks_for_fraction(LayerShape.of(layer), 0.5)
    f1 = method.decompose(layer.weight.detach(), ranks, seed=3)
    f2 = method.decompose(layer.weight.detach(), ranks, seed=3)
    assert f1.keys() == f2.keys()
    for key in f1:
        assert torch.equal(f1[key], f2[key]), key
        assert f1[key].dtype == layer.weight.dtype


SHAPE_LAYERS = {
    "narrow_conv": lambda: nn.Conv2d(3, 16, 3, padding=1),
    "wide_conv": lambda: nn.Conv2d(16, 3, (3, 2), stride=2, bias=True),
    "pointwise_conv": lambda: nn.Conv2d(5, 9, 1),
    "narrow_linear": lambda: nn.Linear(3, 11),
    "wide_linear": lambda: nn.Linear(11, 3, bias=False),
}


@pytest.mark.parametrize("name", list_methods())
def test_factor_shapes_are_the_shapes_decompose_returns(name: str) -> None:
    """factor_shapes tells, without decomposing, the shapes decompose gives, at the edge ranks and between."""
    method = get_method(name)
    assert method.factor_names and len(set(method.factor_names)) == len(method.factor_names)
    checked = 0
    for layer_name, make in SHAPE_LAYERS.items():
        torch.manual_seed(0)
        layer = make()
        shape = LayerShape.of(layer)
        if method.unsupported_reason(shape) is not None:
            continue
        bounds = method.rank_bounds(shape)
        edge = [
            tuple(low for low, _ in bounds),
            method.full_ranks(shape),
            method.ranks_for_fraction(shape, 0.3),
            tuple(low if i % 2 else high for i, (low, high) in enumerate(bounds)),
            tuple(high if i % 2 else low for i, (low, high) in enumerate(bounds)),
        ]
        for ranks in edge:
            factors = method.decompose(layer.weight.detach(), ranks, seed=0)
            got = {k: tuple(v.shape) for k, v in factors.items()}
            assert method.factor_shapes(shape, ranks) == got, (name, layer_name, ranks)
            assert tuple(got) == method.factor_names, (name, layer_name)
            checked += 1
        with pytest.raises(RankError):
            method.factor_shapes(shape, tuple(high + 1 for _, high in bounds))
    assert checked >= 5, name


@pytest.mark.parametrize("name", list_methods())
def test_validate_ranks_errors(name: str) -> None:
    method = get_method(name)
    layer = _layer(_cases(name)[0])
    shape = LayerShape.of(layer)
    bounds = method.rank_bounds(shape)
    full = method.full_ranks(shape)
    assert method.validate_ranks(shape, list(full)) == full
    n = len(bounds)
    bad = [
        full + (1,),  # wrong count
        (0,) + full[1:],  # below 1
        full[:-1] + (bounds[-1][1] + 1,),  # beyond the dimension
        (1.5,) + full[1:],  # not an int
    ]
    for ranks in bad:
        with pytest.raises(RankError, match="layer 'blocks.3.conv'") as info:
            method.validate_ranks(shape, ranks, layer="blocks.3.conv")
        assert "\n" not in str(info.value)
    with pytest.raises(RankError, match=r"\.\.") as info:
        method.validate_ranks(shape, (bounds[0][1] + 5,) + full[1:], layer="x")
    assert str(bounds[0][1]) in str(info.value) and name in str(info.value)
    with pytest.raises(RankError):
        method.from_layer(layer, (0,) * n, name="blocks.3.conv")


@pytest.mark.parametrize(("name", "case"), ALL)
def test_ranks_for_fraction_monotone(name: str, case: str) -> None:
    method = get_method(name)
    shape = LayerShape.of(_layer(case))
    prev_ranks: tuple[int, ...] | None = None
    prev_params = -1
    for i in range(31):
        fraction = 0.01 * (100 ** (i / 30))  # 0.01 .. 1
        ranks = method.ranks_for_fraction(shape, fraction)
        method.validate_ranks(shape, ranks)
        params = method.params(shape, ranks)
        assert params >= prev_params
        if prev_ranks is not None:
            assert all(r >= p for r, p in zip(ranks, prev_ranks, strict=True)), (fraction, ranks, prev_ranks)
        if any(r > 1 for r in ranks) and fraction < 1:
            assert params <= fraction * shape.dense_params + 1e-9
        prev_ranks, prev_params = ranks, params
    assert method.ranks_for_fraction(shape, 1.0) == method.full_ranks(shape)
    assert method.ranks_for_fraction(shape, 3.0) == method.full_ranks(shape)
    for bad in (0.0, -0.5, float("nan"), "half"):
        with pytest.raises(RankError):
            method.ranks_for_fraction(shape, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "case"), ALL)
def test_non_finite_weight_is_refused(name: str, case: str) -> None:
    method = get_method(name)
    layer = _layer(case)
    w = layer.weight.detach().clone()
    w.view(-1)[3] = float("nan")
    ranks = method.ranks_for_fraction(LayerShape.of(layer), 0.5)
    with pytest.raises(DecompositionError, match="non-finite"):
        method.decompose(w, ranks)
    w.view(-1)[3] = float("inf")
    with pytest.raises(DecompositionError):
        method.decompose(w, ranks)


def test_cp_on_zero_weight_is_refused() -> None:
    w = torch.zeros(4, 3, 3, 3)
    with pytest.raises(DecompositionError, match="all zeros"):
        get_method("cp").decompose(w, (2,))


def test_depthwise_grouped_and_pointwise_applicability() -> None:
    depthwise = LayerShape.of(nn.Conv2d(8, 8, 3, groups=8))
    grouped = LayerShape.of(nn.Conv2d(8, 8, 3, groups=2))
    pointwise = LayerShape.of(nn.Conv2d(8, 8, 1))
    linear = LayerShape.of(nn.Linear(8, 4))
    assert methods_for(depthwise) == [] and methods_for(grouped) == []
    for name in list_methods():
        reason = get_method(name).unsupported_reason(depthwise)
        assert reason is not None
        if get_method(name).layer_kinds == frozenset({"conv"}):
            assert "depthwise" in reason
    assert methods_for(pointwise) == ["svd_channel"]
    assert methods_for(linear) == ["svd_linear"]
    assert set(methods_for(LayerShape.of(nn.Conv2d(8, 8, 3)))) == {"cp", "ht2", "svd_channel", "svd_spatial", "tucker2"}
    with pytest.raises(RankError, match="depthwise"):
        get_method("tucker2").from_layer(nn.Conv2d(8, 8, 3, groups=8), (2, 2), name="dw")


def test_stride_never_on_a_leading_pointwise_conv() -> None:
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1)
    for name in ("cp", "tucker2", "ht2", "svd_spatial", "svd_channel"):
        method = get_method(name)
        module = method.from_conv(conv, method.ranks_for_fraction(LayerShape.of(conv), 0.5))
        for child in module:
            assert isinstance(child, nn.Conv2d)
            if child.kernel_size == (1, 1):
                assert child.stride == (1, 1), name
        assert module[-1].bias is not None and all(c.bias is None for c in list(module)[:-1])


def test_repr_names_method_shape_and_ranks() -> None:
    conv = nn.Conv2d(64, 64, 3, padding=1)
    module = get_method("tucker2").from_conv(conv, (16, 16))
    assert repr(module).splitlines()[0] == "Tucker2Conv(64->64, k=3x3, ranks=(16, 16))"
    linear = get_method("svd_linear").from_linear(nn.Linear(64, 10), (8,))
    assert repr(linear).splitlines()[0] == "SVDLinear(64->10, ranks=(8,))"
    assert isinstance(module, nn.Sequential) and all(isinstance(c, nn.Conv2d) for c in module)


def test_build_rejects_factors_of_another_layer() -> None:
    method = get_method("tucker2")
    small = nn.Conv2d(4, 4, 3)
    factors = method.decompose(small.weight.detach(), (2, 2))
    with pytest.raises(DecompositionError):
        method.build(nn.Conv2d(6, 4, 3), factors)


def test_cp_recovers_exact_rank_kernel_factors_error() -> None:
    conv = nn.Conv2d(16, 12, 3)
    _exact_rank_kernel(conv, 5)
    factors = get_method("cp").decompose(conv.weight.detach(), (5,), seed=0)
    err = _rel(get_method("cp").reconstruct(factors), conv.weight.detach())
    assert err < 1e-4 and math.isfinite(err)


@pytest.mark.parametrize(("name", "case"), ALL)
def test_inference_form_equals_module(name: str, case: str) -> None:
    """deploy_model (separable pairs merged, ranks padded, BatchNorm folded, channels-last) keeps the function."""
    from automtd.deploy import default_channel_multiple, deploy_model

    method = get_method(name)
    layer = _layer(case)
    module = method.from_layer(layer, method.ranks_for_fraction(LayerShape.of(layer), 0.3), seed=0)
    x = _input(layer)
    with torch.no_grad():
        channels = module(x).shape[1]
        bn = nn.BatchNorm1d(channels) if case == "linear" else nn.BatchNorm2d(channels)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        net = nn.Sequential(module, bn).eval()
        deployed = deploy_model(net, pad_channels=default_channel_multiple())  # padded unmeasured: exactness
        expected, got = net(x), deployed.module(x)
    assert _rel(got, expected) < 1e-5, (name, case)
    assert "fold_bn" in deployed.applied
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in deployed.module.modules())
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())  # the input is untouched
    depthwise_1d = [m for m in module.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and 1 in m.kernel_size]
    merged = [m for m in deployed.module.modules()
              if isinstance(m, nn.Conv2d) and m.groups > 1 and 1 not in m.kernel_size]
    if case != "linear" and any(r % default_channel_multiple() for r in module.ranks):  # ranks off the SIMD width
        assert "pad_channels" in deployed.applied
    if name == "cp" and case in ("stride2_asym_dil2_bias", "same_even_kernel"):
        assert len(depthwise_1d) == 2 and len(merged) == 1 and "merge_separable" in deployed.applied
    else:
        assert len(merged) <= (1 if name == "cp" else 0)


def _moved_module(name: str, layer: nn.Module, *, seed: int) -> nn.Module:
    """The method's module of ``layer`` at 0.3 of its params, its weights moved off the decomposition (as
    fine-tuning moves them)."""
    method = get_method(name)
    module = method.from_layer(layer, method.ranks_for_fraction(LayerShape.of(layer), 0.3), seed=0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen) * p.abs().mean())
    return module


@pytest.mark.parametrize(("name", "case"), ALL)
def test_collapse_gives_the_chain_back_as_one_dense_conv(name: str, case: str) -> None:
    """dense_equivalent / deploy_model(collapse=True): the chain, with its weights moved off the decomposition
    (as fine-tuning moves them), equals one conv of the dense layer's geometry."""
    from automtd.deploy import dense_equivalent, deploy_model

    layer = _layer(case)
    module = _moved_module(name, layer, seed=3)
    x = _input(layer)
    dense = dense_equivalent(module)
    deployed = deploy_model(nn.Sequential(module), collapse=True, pad_channels=1)
    if case == "linear":
        assert dense is None and deployed.skipped["collapse"] == "no factorized conv"
        return
    assert isinstance(dense, nn.Conv2d)
    assert (dense.stride, dense.padding, dense.dilation, dense.padding_mode) == (
        layer.stride, layer.padding, layer.dilation, layer.padding_mode)  # type: ignore[union-attr]
    assert (dense.bias is None) == (layer.bias is None)
    with torch.no_grad():
        expected = module(x)
        assert _rel(dense(x), expected) < 1e-4, (name, case)
        assert _rel(deployed.module(x), expected) < 1e-4, (name, case)
    assert list(deployed.collapsed) == ["0"] and "collapse" in deployed.applied
    assert not any(isinstance(m, FactorizedConv) for m in deployed.module.modules())


@pytest.mark.parametrize(("name", "case"), ALL)
def test_merged_forms_compute_the_chain(name: str, case: str) -> None:
    """merged_forms: each split of the chain into two merged convs equals the chain, weights moved off the
    decomposition; a CP / HT-2 chain has three such forms (one if it pads other than with zeros: a kx1 and a
    1xk conv are merged only then), a Tucker-2 one two, an SVD pair none."""
    from automtd.deploy import merged_forms

    layer = _layer(case)
    module = _moved_module(name, layer, seed=4)
    forms = merged_forms(module)
    if case == "linear" or name.startswith("svd"):
        assert forms == {}
        return
    zeros = CONV_CASES[case].get("padding_mode", "zeros") == "zeros"
    assert len(forms) == {"cp": 3 if zeros else 1, "ht2": 3 if zeros else 1, "tucker2": 2}[name], list(forms)
    x = _input(layer)
    with torch.no_grad():
        expected = module(x)
        for label, form in forms.items():
            assert [type(m) for m in form] == [nn.Conv2d, nn.Conv2d], label
            assert _rel(form(x), expected) < 1e-4, (name, case, label)


@pytest.mark.parametrize(("name", "case"), ALL)
def test_rank_one_builds_the_reconstructed_operator(name: str, case: str) -> None:
    """All ranks 1 (the smallest a method allows) on the narrow cases: the module is the reconstruction."""
    method = get_method(name)
    layer = _layer(case)
    ranks = (1,) * len(method.rank_names)
    factors = method.decompose(layer.weight.detach(), ranks, seed=0)
    module = method.build(layer, factors)
    dense = _layer(case)
    with torch.no_grad():
        dense.weight.copy_(method.reconstruct(factors))
        x = _input(layer)
        assert _rel(module(x), dense(x)) < 1e-4, (name, case)


WIDE_LAYERS = {  # beyond FAST_GRAM_SIZE (384): the Gram eigenpairs come from scipy's LAPACK path
    "conv": lambda: nn.Conv2d(512, 512, 3, padding=1),
    "linear": lambda: nn.Linear(512, 1000),
}


@pytest.mark.parametrize("name", list_methods())
def test_rank_one_on_a_wide_layer(name: str) -> None:
    """One rank-1 decomposition per method on a layer 512 wide: builds, computes its reconstruction, and
    truncates (error below the whole weight's norm, SVD of a linear layer at the Eckart-Young optimum)."""
    method = get_method(name)
    torch.manual_seed(0)
    layers = [make() for make in WIDE_LAYERS.values()]
    layer = next(item for item in layers if method.unsupported_reason(LayerShape.of(item)) is None)
    w = layer.weight.detach()
    ranks = (1,) * len(method.rank_names)
    factors = method.decompose(w, ranks, seed=0)
    module = method.build(layer, factors)
    approx = method.reconstruct(factors)
    assert torch.isfinite(approx).all()
    error = _rel(approx, w)
    assert error < 1.0, (name, error)
    if isinstance(layer, nn.Linear):
        s = torch.linalg.svdvals(w.double())
        assert error == pytest.approx(float(s[1:].norm() / s.norm()), rel=1e-4)
        x = torch.randn(2, layer.in_features)
        reference = nn.functional.linear(x, approx, layer.bias)
    else:
        x = torch.randn(1, layer.in_channels, 4, 4)
        reference = nn.functional.conv2d(x, approx, layer.bias, padding=1)
    with torch.no_grad():
        assert _rel(module(x), reference) < 1e-4, name
