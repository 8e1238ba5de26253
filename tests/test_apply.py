"""apply_plan: exact replacement, refusal of foreign plans, reload from plan + safetensors, counts vs the
flop counter, the factor cache, and torchvision models (grouped/depthwise skipped)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from automtd import PlanMismatchError
from automtd.baselines import ht2_energy_plan, uniform_plan
from automtd.checkpoints import load_checkpoint, save_checkpoint
from automtd.deploy import compare_models
from automtd.methods import get_method
from automtd.metrics import count_macs, count_params, layer_macs
from automtd.models import get_model
from automtd.plan import FactorCache, LayerChoice, Plan, apply_plan, decomposable_layers, make_plan

SIZE = (3, 16, 16)


class TinyNet(nn.Module):
    """1x7 / 7x1 / dilated+strided / depthwise / 1x1 convs and a classifier."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.row = nn.Conv2d(width, 12, (1, 7), padding=(0, 3))
        self.col = nn.Conv2d(12, 12, (7, 1), padding=(3, 0))
        self.dil = nn.Conv2d(12, 16, 3, padding=2, dilation=2, stride=2)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.col(self.row(x)))
        x = self.pw(self.dw(self.dil(x)))
        return self.fc(x.mean(dim=(2, 3)))


METHODS = {"stem": "cp", "row": "tucker2", "col": "ht2", "dil": "svd_spatial", "pw": "svd_channel", "fc": "svd_linear"}


def _tiny_plan(model: nn.Module, *, full: bool, skip: tuple[str, ...] = ()) -> Plan:
    infos = {i.name: i for i in decomposable_layers(model, SIZE)}
    choices = {}
    for name, method in METHODS.items():
        if name in skip:
            continue
        impl = get_method(method)
        shape = infos[name].shape
        ranks = impl.full_ranks(shape) if full and method != "cp" else impl.ranks_for_fraction(shape, 0.5)
        choices[name] = LayerChoice(method, tuple(ranks))
    return make_plan(model, choices, architecture="tiny", input_size=SIZE)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_replaces_exactly_the_named_layers_and_keeps_the_function() -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    x = torch.randn(2, *SIZE)
    reference = model(x)
    untouched = {"dw": model.dw, "stem": model.stem}
    plan = _tiny_plan(model, full=True, skip=("stem",))
    dw_state = _state(model.dw)
    apply_plan(model, plan)
    for name in plan.names:
        assert not isinstance(model.get_submodule(name), (nn.Conv2d, nn.Linear)), name
    assert model.dw is untouched["dw"] and model.stem is untouched["stem"]
    assert all(torch.equal(v, model.dw.state_dict()[k]) for k, v in dw_state.items())
    # full ranks: exact up to float error, so stride, padding and dilation were carried over
    torch.testing.assert_close(model(x), reference, atol=1e-4, rtol=1e-4)


def test_counts_match_the_flop_counter() -> None:
    model = TinyNet()
    plan = _tiny_plan(model, full=False)
    apply_plan(model, plan)
    assert count_params(model) == plan.totals.params_after
    assert count_macs(model, SIZE) == plan.totals.macs_after
    measured = layer_macs(model, SIZE)
    for lp in plan.layers:
        assert measured[lp.name] == lp.macs_after, lp.name
        assert sum(p.numel() for p in model.get_submodule(lp.name).parameters()) == lp.params_after, lp.name


def test_mismatched_plan_is_refused_before_anything_changes() -> None:
    plan = _tiny_plan(TinyNet(width=8), full=False)
    other = TinyNet(width=6)
    before = _state(other)
    modules = dict(other.named_modules())
    with pytest.raises(PlanMismatchError, match=r"fingerprint.*layer 'row' has shape conv 6->12"):
        apply_plan(other, plan)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in before.items())
    assert dict(other.named_modules()) == modules


def test_plan_for_resnet20_is_refused_by_resnet32() -> None:
    r20 = get_model("cifar_resnet20")
    plan = ht2_energy_plan(r20, 0.8, architecture="cifar_resnet20")
    r32 = get_model("cifar_resnet32")
    before = _state(r32)
    with pytest.raises(PlanMismatchError, match="made for 'cifar_resnet20'.*fingerprint"):
        apply_plan(r32, plan)
    assert all(torch.equal(v, r32.state_dict()[k]) for k, v in before.items())
    assert all(isinstance(r32.get_submodule(n), nn.Conv2d) for n in plan.names if n != "linear")
    # applying twice is refused too: the compressed model is another model
    apply_plan(r20, plan)
    with pytest.raises(PlanMismatchError):
        apply_plan(r20, plan)


def test_compressed_checkpoint_round_trip(tmp_path: Path) -> None:
    model = get_model("cifar_resnet20").eval()
    plan = ht2_energy_plan(model, 0.7, architecture="cifar_resnet20")
    apply_plan(model, plan)
    save_checkpoint(tmp_path / "ck", model, architecture="cifar_resnet20", plan=plan.to_dict())
    assert not any(p.suffix in (".pt", ".pth", ".pkl") for p in (tmp_path / "ck").iterdir())
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert Plan.from_dict(meta["plan"]) == plan
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # structure_only builds the same modules without decomposing
    fresh = apply_plan(get_model("cifar_resnet20"), plan, structure_only=True)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_factor_cache_hit_on_repeat(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = TinyNet()
    plan = _tiny_plan(base, full=False)
    cache = FactorCache(tmp_path / "cache")
    first = apply_plan(copy.deepcopy(base), plan, cache=cache)
    assert (cache.hits, cache.misses) == (0, len(plan.layers))
    assert len(cache) == len(plan.layers)
    second = apply_plan(copy.deepcopy(base), plan, cache=cache)
    assert (cache.hits, cache.misses) == (len(plan.layers), len(plan.layers))
    x = torch.randn(2, *SIZE)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    # another seed or other weights are other entries
    apply_plan(copy.deepcopy(base), plan, cache=cache, seed=1)
    assert cache.misses == 2 * len(plan.layers)


def test_torchvision_resnet18() -> None:
    # layer3/layer4 (256-512 channels) are left out only to keep the test fast: their SVDs take ~1 s each here
    size = (3, 64, 64)
    model = get_model("torchvision:resnet18", num_classes=10).eval()
    choices = {}
    for info in decomposable_layers(model, size):
        if info.shape.kind == "linear":
            choices[info.name] = LayerChoice("svd_linear", (5,))
        elif info.shape.out_channels <= 128:
            method = "svd_channel" if info.shape.kernel_size == (1, 1) or info.name == "conv1" else "ht2"
            choices[info.name] = LayerChoice(method, get_method(method).ranks_for_fraction(info.shape, 0.3))
    plan = make_plan(
        model, choices, architecture="torchvision:resnet18", arch_kwargs={"num_classes": 10}, input_size=size
    )
    assert {"conv1", "layer2.0.downsample.0", "layer2.1.conv2", "fc"} <= set(plan.names)
    apply_plan(model, plan)
    assert getattr(model.get_submodule("layer2.0.downsample.0"), "method", None) == "svd_channel"
    assert count_params(model) == plan.totals.params_after
    assert count_macs(model, size) == plan.totals.macs_after
    assert model(torch.randn(1, *size)).shape == (1, 10)


def test_torchvision_mobilenet_v3_small_skips_depthwise() -> None:
    size = (3, 64, 64)
    model = get_model("torchvision:mobilenet_v3_small", num_classes=10).eval()
    plan = uniform_plan(
        model,
        "tucker2",
        0.5,
        architecture="torchvision:mobilenet_v3_small",
        arch_kwargs={"num_classes": 10},
        input_size=size,
    )
    reasons = {s.name: s.reason for s in plan.skipped}
    depthwise = [n for n, r in reasons.items() if "depthwise" in r]
    assert depthwise and all(isinstance(model.get_submodule(n), nn.Conv2d) for n in depthwise)
    assert "first conv" in reasons["features.0.0"] and "classifier" in reasons["classifier.3"]
    assert {lp.method for lp in plan.layers} == {"svd_channel", "svd_linear"}  # all remaining kxk are depthwise
    apply_plan(model, plan)
    assert count_params(model) == plan.totals.params_after
    assert count_macs(model, size) == plan.totals.macs_after
    assert all(isinstance(model.get_submodule(n), nn.Conv2d) for n in depthwise)


def test_cifar_vgg11_bn(tmp_path: Path) -> None:
    model = get_model("cifar_vgg11_bn").eval()
    plan = uniform_plan(model, "tucker2", 0.3, include_first=True, architecture="cifar_vgg11_bn")
    assert len(plan.layers) == 8 and plan.params_ratio > 2.5  # every conv; the classifier is left dense
    # decompose the two small convs for real; all layers get their structure (weights loaded afterwards)
    small = make_plan(
        model,
        {
            n: LayerChoice(lp.method, lp.ranks)
            for n, lp in zip(plan.names, plan.layers, strict=True)
            if lp.shape.out_channels <= 128
        },
        architecture="cifar_vgg11_bn",
    )
    assert len(small.layers) == 2
    apply_plan(copy.deepcopy(model), small)
    apply_plan(model, plan, structure_only=True)
    assert count_params(model) == plan.totals.params_after
    assert count_macs(model, (3, 32, 32)) == plan.totals.macs_after
    save_checkpoint(tmp_path / "vgg", model, architecture="cifar_vgg11_bn", plan=plan.to_dict())
    loaded, _ = load_checkpoint(tmp_path / "vgg")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_compare_models_reports_params_macs_and_latency() -> None:
    original = TinyNet()
    compressed = apply_plan(copy.deepcopy(original), _tiny_plan(original, full=False, skip=("stem",)))
    report = compare_models(original, compressed, SIZE, min_run_time=0.01, threads=1)
    assert report["original"]["params"] == count_params(original)
    assert report["compressed"]["macs"] == count_macs(compressed, SIZE)
    assert report["params_ratio"] == report["original"]["params"] / report["compressed"]["params"]
    for entry in (report["original"], report["compressed"]):
        assert set(entry["latency"]) == {"batch_1", "batch_64"}
        assert entry["latency"]["batch_64"]["batch_size"] == 64 and entry["latency"]["batch_1"]["threads"] == 1
        assert entry["latency"]["batch_1"]["median_s"] > 0
        assert entry["latency"]["batch_1"]["channels_last"] is True  # the deployed form, fed its own layout
    assert isinstance(report["keep_freed_memory"], bool)


# --- `automtd apply`: BatchNorm re-estimated by default, a harmful fine-tune undone ---


@pytest.fixture()
def cp_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_root: Path, resnet20_checkpoint: Path) -> Path:
    from automtd.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AUTOMTD_DATA", str(data_root))
    assert main(["plan", "--model", "cifar_resnet20", "--checkpoint", str(resnet20_checkpoint), "--baseline",
                 "uniform", "--method", "cp", "--fraction", "0.25", "-o", "cp.yaml"]) == 0  # fmt: skip
    return tmp_path / "cp.yaml"


def _val_accuracy(directory: Path, images: int) -> float:
    from automtd.data import get_dataset, make_loader
    from automtd.train import evaluate

    model, meta = load_checkpoint(directory)
    norm = meta["normalization"]
    val = get_dataset("cifar10", "val", subset=images, mean=norm["mean"], std=norm["std"])
    return evaluate(model, make_loader(val, batch_size=250, shuffle=False))


def test_apply_reestimates_batchnorm_by_default(
    cp_plan: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from automtd.checkpoints import read_meta
    from automtd.cli.main import main

    base = ["apply", "--plan", str(cp_plan), "--checkpoint", str(resnet20_checkpoint), "--val-subset", "500",
            "--calibrate", "0"]
    assert main([*base, "-o", "bn"]) == 0
    assert "BatchNorm re-estimated, no fine-tune; val top-1" in capsys.readouterr().out
    ft = read_meta(cp_plan.parent / "bn")["extra"]["finetune"]
    assert ft["recalibrate_bn"] is True and ft["steps"] == 0
    assert main([*base, "--no-bn-recalibration", "-o", "raw"]) == 0
    with_bn, without = _val_accuracy(cp_plan.parent / "bn", 500), _val_accuracy(cp_plan.parent / "raw", 500)
    assert with_bn == pytest.approx(ft["val_accuracy"])
    assert with_bn > without + 10, (with_bn, without)  # measured: about 85% against 55%
    assert main([*base, "--bn-only", "-o", "bn2"]) == 0  # the explicit spelling of the default
    assert _val_accuracy(cp_plan.parent / "bn2", 500) > without + 10


def test_apply_calibrate_refits_the_chains_on_training_images(
    cp_plan: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from automtd.checkpoints import read_meta
    from automtd.cli.main import main

    base = ["apply", "--plan", str(cp_plan), "--checkpoint", str(resnet20_checkpoint), "--val-subset", "500"]
    assert main([*base, "--calibrate", "256", "-o", "cal"]) == 0
    out = capsys.readouterr().out
    assert main([*base, "-o", "default"]) == 0  # calibrated on 512 images unless told otherwise
    assert read_meta(cp_plan.parent / "default")["extra"]["calibration"]["images"] == 512
    line = next(x for x in out.splitlines() if x.startswith("calibrated "))
    before, after = (float(v) for v in line.split("output error ")[1].split(" in ")[0].split(" -> "))
    assert after < before, line
    meta = read_meta(cp_plan.parent / "cal")
    assert meta["extra"]["calibration"]["images"] == 256
    assert main([*base, "--calibrate", "0", "-o", "plain"]) == 0  # BatchNorm re-estimated only
    assert _val_accuracy(cp_plan.parent / "cal", 500) > _val_accuracy(cp_plan.parent / "plain", 500)
    assert main([*base, "--calibrate", "-1", "-o", "bad"]) == 2


def test_apply_keeps_the_better_weights_when_the_finetune_hurts(
    cp_plan: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from automtd.checkpoints import read_meta
    from automtd.cli.main import main

    common = ["apply", "--plan", str(cp_plan), "--checkpoint", str(resnet20_checkpoint), "--val-subset", "300",
              "--subset", "256", "--batch-size", "64"]  # fmt: skip
    hurt = [*common, "--finetune-epochs", "1", "--lr", "0.5", "--warmup-steps", "0"]
    assert main([*hurt, "-o", "kept"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1 and "LOWERED val top-1" in warning[0] and "before the fine-tune" in warning[0]
    ft = read_meta(cp_plan.parent / "kept")["extra"]["finetune"]
    assert ft["kept"] == "before" and ft["val_accuracy_finetuned"] < ft["val_accuracy_before"]
    assert ft["val_accuracy"] == ft["val_accuracy_before"]
    assert read_meta(cp_plan.parent / "kept")["accuracy"] == {"val": ft["val_accuracy_before"]}
    assert _val_accuracy(cp_plan.parent / "kept", 300) == ft["val_accuracy_before"]  # the pre-fine-tune model
    assert main([*hurt, "--keep-finetuned", "-o", "worse"]) == 0
    assert "saved the worse weights" in capsys.readouterr().err
    assert read_meta(cp_plan.parent / "worse")["extra"]["finetune"]["kept"] == "finetuned"


def test_apply_help_shows_the_finetune_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from automtd.cli.main import main

    with pytest.raises(SystemExit):
        main(["apply", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    from automtd.cli._apply import DEFAULT_LR, DEFAULT_WARMUP

    assert f"(default {DEFAULT_LR:g}" in text and f"(default {DEFAULT_WARMUP})" in text
    assert "(default 0: BatchNorm re-" in text and DEFAULT_LR < 0.01
    assert "--no-bn-recalibration" in text and "--bn-only" in text and "--keep-finetuned" in text


def test_a_killed_apply_finetune_resumes_and_saves_the_uninterrupted_weights(
    cp_plan: Path, resnet20_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import automtd.workflows._compress as compress_module
    from automtd.cli.main import main

    args = ["apply", "--plan", str(cp_plan), "--checkpoint", str(resnet20_checkpoint), "--val-subset", "100",
            "--subset", "128", "--batch-size", "64", "--finetune-epochs", "2", "--calibrate", "0"]
    assert main([*args, "-o", "whole"]) == 0
    real_fit = compress_module.fit

    def killed_at_step_3(*a: object, **kw: object) -> object:
        def kill(step: int, model: nn.Module) -> None:
            if step == 3:  # epoch 1 (steps 1-2) was saved
                raise KeyboardInterrupt
        return real_fit(*a, **{**kw, "step_callback": kill})  # type: ignore[arg-type]

    monkeypatch.setattr(compress_module, "fit", killed_at_step_3)
    assert main([*args, "-o", "resumed"]) == 130  # Ctrl-C: "interrupted"
    state = cp_plan.parent / "resumed.train-state.pt"
    assert state.exists() and not (cp_plan.parent / "resumed").exists()
    monkeypatch.setattr(compress_module, "fit", real_fit)
    capsys.readouterr()
    assert main([*args, "--lr", "0.01", "-o", "resumed"]) == 2  # other options: the state is another run's
    [line] = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == (f"error: resume state '{state.name}' belongs to another run (other settings, plan or model); "
                    "delete it to start over, or rerun the command that wrote it")
    assert state.exists()
    with caplog.at_level("INFO"):
        assert main([*args, "-o", "resumed"]) == 0
    assert "resuming the fine-tune from" in caplog.text and not state.exists()
    whole, _ = load_checkpoint(cp_plan.parent / "whole")
    resumed, _ = load_checkpoint(cp_plan.parent / "resumed")
    assert _state(whole).keys() == _state(resumed).keys()
    for name, value in _state(whole).items():
        assert torch.equal(value, _state(resumed)[name]), name
