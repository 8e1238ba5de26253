"""The training loop: loss goes down, KD, callbacks, extra loss, parameter groups, NaN guard, evaluate."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from automtd import ConfigError
from automtd.config import parse_config
from automtd.data import get_dataset, make_loader
from automtd.models import get_model, get_model_spec
from automtd.train import (
    NonFiniteLossError,
    ResumeState,
    StopTraining,
    Teacher,
    TrainConfig,
    evaluate,
    fit,
    kd_loss,
)
from automtd.utils import resolve_device
from automtd.workflows import load_train_config

REPO = Path(__file__).resolve().parents[1]
SPEC = get_model_spec("cifar_resnet20")


def _loader(data_root: Path, n: int, batch: int, *, augment: bool = False) -> torch.utils.data.DataLoader:
    ds = get_dataset(
        "cifar10", "train", root=data_root, subset=n, train_transform=augment, mean=SPEC.mean, std=SPEC.std
    )
    return make_loader(ds, batch_size=batch, shuffle=True, seed=0)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("cifar_resnet20")


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device 'gpu0' is invalid; allowed: auto, cpu, cuda, cuda:N, mps"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            resolve_device("cuda")


def test_train_config_budget_is_validated() -> None:
    assert TrainConfig(steps=3).steps == 3
    with pytest.raises(ConfigError, match="give exactly one budget"):
        parse_config({"epochs": 1, "steps": 3}, TrainConfig)
    with pytest.raises(ConfigError, match="give exactly one budget"):
        parse_config({}, TrainConfig)
    with pytest.raises(ConfigError, match="unknown key 'lr_max'"):
        parse_config({"steps": 1, "lr_max": 1}, TrainConfig)


def test_a_few_steps_reduce_the_loss(data_root: Path) -> None:
    loader = _loader(data_root, 16, 16)
    cfg = TrainConfig(steps=8, lr=0.05, schedule="constant", weight_decay=0.0, seed=0)
    result = fit(_model(), loader, cfg, device="cpu", progress=False)
    assert result.steps == 8 and len(result.losses) == 8 and result.seconds > 0
    assert result.losses[-1] < 0.7 * result.losses[0]
    assert result.mean_loss == pytest.approx(sum(result.losses) / 8)


def test_epoch_budget_and_callbacks(data_root: Path) -> None:
    loader = _loader(data_root, 24, 8, augment=True)  # 3 batches per epoch
    seen: list[int] = []
    result = fit(
        _model(),
        loader,
        TrainConfig(epochs=1, lr=0.01),
        device="cpu",
        progress=False,
        step_callback=lambda step, model: seen.append(step),
    )
    assert result.steps == 3 and seen == [1, 2, 3] and not result.stopped_early

    def stop(step: int, model: torch.nn.Module) -> None:
        if step == 2:
            raise StopTraining

    result = fit(_model(), loader, TrainConfig(steps=5, lr=0.01), device="cpu", progress=False, step_callback=stop)
    assert result.steps == 2 and result.stopped_early

    def boom(step: int, model: torch.nn.Module) -> None:
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        fit(_model(), loader, TrainConfig(steps=5, lr=0.01), device="cpu", progress=False, step_callback=boom)


def test_fit_is_seeded_even_with_a_reused_loader(data_root: Path) -> None:
    loader = _loader(data_root, 16, 8, augment=True)
    cfg = TrainConfig(steps=3, lr=0.01, seed=5)
    first = fit(_model(), loader, cfg, device="cpu", progress=False)
    second = fit(_model(), loader, cfg, device="cpu", progress=False)
    assert first.losses == second.losses
    other = fit(_model(), loader, TrainConfig(steps=3, lr=0.01, seed=6), device="cpu", progress=False)
    assert other.losses != first.losses


def test_extra_loss_and_nan_guard(data_root: Path) -> None:
    loader = _loader(data_root, 8, 8)
    cfg = TrainConfig(steps=1, lr=0.01, seed=0)
    base = fit(_model(), loader, cfg, device="cpu", progress=False)
    plus = fit(_model(), loader, cfg, device="cpu", progress=False, extra_loss=lambda m: torch.tensor(5.0))
    assert plus.losses[0] == pytest.approx(base.losses[0] + 5.0, abs=1e-4)
    with pytest.raises(NonFiniteLossError, match=r"training loss became nan at step 1/1 .*lower the learning rate"):
        fit(_model(), loader, cfg, device="cpu", progress=False, extra_loss=lambda m: torch.tensor(float("nan")))


def test_param_groups_have_their_own_lr(data_root: Path) -> None:
    loader = _loader(data_root, 8, 8)
    model = _model()
    frozen = [p for n, p in model.named_parameters() if not n.startswith("linear")]
    head = [p for n, p in model.named_parameters() if n.startswith("linear")]
    before = copy.deepcopy(model.state_dict())
    fit(
        model,
        loader,
        TrainConfig(steps=2, lr=0.1),
        device="cpu",
        progress=False,
        param_groups=[{"params": frozen, "lr": 0.0}, {"params": head, "lr": 0.1}],
    )
    after = model.state_dict()
    assert torch.equal(after["conv1.weight"], before["conv1.weight"])
    assert not torch.equal(after["linear.weight"], before["linear.weight"])


def test_kd_loss_and_kd_path(data_root: Path, resnet20_checkpoint: Path) -> None:
    from automtd.checkpoints import load_checkpoint

    logits = torch.randn(4, 10)
    assert kd_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, torch.randn(4, 10), 4.0).item() > 0
    teacher, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    loader = _loader(data_root, 16, 16)
    cfg = TrainConfig(steps=2, lr=0.01, kd_alpha=1.0, kd_temperature=4.0, seed=0)
    plain = fit(_model(), loader, cfg, device="cpu", progress=False)
    distilled = fit(_model(), loader, cfg, device="cpu", progress=False, teacher=teacher)
    assert distilled.steps == 2 and all(torch.isfinite(torch.tensor(distilled.losses)))
    assert distilled.losses[0] != pytest.approx(plain.losses[0], abs=1e-3)  # the teacher is used
    assert not teacher.training


def test_evaluate_restores_mode_and_is_exact(data_root: Path, resnet20_checkpoint: Path) -> None:
    from automtd.checkpoints import load_checkpoint

    model, _ = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    ds = get_dataset("cifar10", "test", root=data_root, subset=100, mean=SPEC.mean, std=SPEC.std)
    model.train()
    acc = evaluate(model, make_loader(ds, batch_size=50, shuffle=False), device="cpu")
    assert model.training and model.conv1.weight.is_contiguous()
    x, y = ds.batch(range(len(ds)))
    model.eval()
    with torch.no_grad():
        expected = 100.0 * (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(expected)


def test_model_can_train_after_evaluate() -> None:
    model = _model()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    evaluate(model, [(x, y)], device="cpu")
    assert not any(p.is_inference() for p in model.parameters())
    calls: list[float] = []
    result = fit(
        model,
        [(x, y)],
        TrainConfig(steps=2, lr=0.01),
        device="cpu",
        progress=False,
        step_callback=lambda step, m: calls.append(evaluate(m, [(x, y)], device="cpu")),
    )
    assert result.steps == 2 and len(calls) == 2 and model.training


def test_train_configs_validate() -> None:
    for path in sorted((REPO / "configs").glob("train_*.yaml")):
        cfg = load_train_config(path, ["train.epochs=2"])
        assert cfg.train.epochs == 2 and cfg.model.name.startswith("cifar_")
    with pytest.raises(ConfigError, match="unknown key 'train.lr_max'"):
        load_train_config(REPO / "configs" / "train_vgg11_cifar10.yaml", ["train.lr_max=1"])


def test_train_from_config_saves_a_checkpoint(data_root: Path, tmp_path: Path) -> None:
    from automtd.checkpoints import load_checkpoint
    from automtd.workflows import train_from_config

    cfg = load_train_config(
        REPO / "configs" / "train_vgg11_cifar10.yaml",
        [
            "model.name=cifar_resnet20",
            f"data.root={data_root}",
            "data.train_subset=64",
            "data.batch_size=32",
            "data.val_subset=100",
            "train.epochs=null",
            "train.steps=2",
            "evaluate_test=false",
            "progress=false",
            "device=cpu",
            f"output={tmp_path / 'ckpt'}",
        ],
    )
    summary = train_from_config(cfg)
    assert summary["steps"] == 2 and set(summary["accuracy"]) == {"val"}
    model, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["architecture"]["name"] == "cifar_resnet20" and meta["accuracy"]["val"] == summary["accuracy"]["val"]
    assert meta["dataset"] == "cifar10" and meta["normalization"]["mean"] == list(SPEC.mean)


def _teacher_model(checkpoint: Path) -> torch.nn.Module:
    from automtd.checkpoints import load_checkpoint

    model, _ = load_checkpoint(checkpoint, model_name="cifar_resnet20")
    return model.eval()


def test_teacher_cache_returns_the_recomputed_logits(data_root: Path, resnet20_checkpoint: Path) -> None:
    model = _teacher_model(resnet20_checkpoint)
    ds = get_dataset("cifar10", "train", root=data_root, subset=96, train_transform=True, mean=SPEC.mean, std=SPEC.std)
    loader = make_loader(ds, batch_size=32, shuffle=True, seed=0, keys=True)
    teacher = Teacher(model, fuse=False, channels_last=False)
    calls: list[int] = []
    model.register_forward_hook(lambda _m, inp, _o: calls.append(int(inp[0].shape[0])))
    first = [(x, teacher.logits(x, keys)) for x, _y, keys in loader]
    assert calls == [32, 32, 32] and teacher.misses == 96 and teacher.hits == 0 and len(teacher) == 96
    loader.generator.manual_seed(0)  # a later trial of the study replays the same batches
    for (x, cached), (x2, _y, keys) in zip(first, loader, strict=True):
        assert torch.equal(x, x2)
        again = teacher.logits(x2, keys)
        with torch.no_grad():
            recomputed = model(x2)
        assert torch.allclose(again, recomputed, atol=1e-5) and torch.equal(again, cached)
    assert teacher.hits == 96 and calls == [32, 32, 32, 32, 32, 32]  # only the reference passes ran the model
    x, _y, keys = next(iter(loader))  # a new epoch seed: new keys, the teacher runs again
    teacher.logits(x, keys)
    assert teacher.misses == 96 + 32


def test_teacher_inference_form_is_the_eager_teacher(data_root: Path, resnet20_checkpoint: Path) -> None:
    model = _teacher_model(resnet20_checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, _ = get_dataset("cifar10", "test", root=data_root, subset=64, mean=SPEC.mean, std=SPEC.std).batch(range(64))
    fused = Teacher(model, cache=False)
    form = fused.form(torch.device("cpu"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in form.modules())  # BatchNorm folded
    with torch.no_grad():
        eager = model(x)
    assert torch.allclose(fused.logits(x), eager, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.conv1.weight.is_contiguous() and not model.training  # the caller's model is left as it was


def test_fit_with_a_teacher_and_keys_uses_the_cache(data_root: Path, resnet20_checkpoint: Path) -> None:
    model = _teacher_model(resnet20_checkpoint)
    ds = get_dataset("cifar10", "train", root=data_root, subset=64, train_transform=True, mean=SPEC.mean, std=SPEC.std)
    cfg = TrainConfig(steps=2, lr=0.01, kd_alpha=0.9, seed=0)
    eager = fit(_model(), make_loader(ds, batch_size=32, shuffle=True, seed=0), cfg, teacher=model, device="cpu",
                progress=False)
    teacher = Teacher(model)
    keyed = make_loader(ds, batch_size=32, shuffle=True, seed=0, keys=True)
    runs = [fit(_model(), keyed, cfg, teacher=teacher, device="cpu", progress=False) for _ in range(2)]
    assert teacher.misses == 64 and teacher.hits == 64  # the second fine-tune took every logit from the cache
    assert runs[0].losses == pytest.approx(runs[1].losses, abs=1e-6)
    assert runs[0].losses == pytest.approx(eager.losses, rel=1e-4)  # same batches, folded teacher: same losses


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_autocasts_training_and_evaluation_where_the_cpu_has_bf16(
    native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import automtd.train._loop as loop

    monkeypatch.setattr(loop, "cpu_bf16_supported", lambda: native)
    model = _model()
    dtypes: list[torch.dtype] = []
    model.linear.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    fit(model, [(x, y)], TrainConfig(steps=1, lr=0.01), device="cpu", progress=False)
    fit(model, [(x, y)], TrainConfig(steps=1, lr=0.01, cpu_bf16=True), device="cpu", progress=False)
    evaluate(model, [(x, y)], device="cpu")
    evaluate(model, [(x, y)], device="cpu", bf16=True)
    half = torch.bfloat16 if native else torch.float32  # emulated bf16 is slower than fp32: not used
    assert dtypes == [torch.float32, half, torch.float32, half]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_evaluation_agrees_with_fp32(data_root: Path, resnet20_checkpoint: Path) -> None:
    model = _teacher_model(resnet20_checkpoint)
    loader = make_loader(get_dataset("cifar10", "test", root=data_root, subset=500, mean=SPEC.mean, std=SPEC.std),
                         batch_size=250, shuffle=False)
    assert evaluate(model, loader, device="cpu", bf16=True) == pytest.approx(evaluate(model, loader, device="cpu"),
                                                                            abs=1.0)


def test_a_fine_tune_autocasts_to_bf16_on_cpu_by_default_and_a_training_run_does_not() -> None:
    from automtd.config import FinetuneSection

    assert TrainConfig.from_finetune(FinetuneSection()).cpu_bf16 is True
    assert TrainConfig.from_finetune(FinetuneSection(cpu_bf16=False)).cpu_bf16 is False
    assert TrainConfig(steps=1).cpu_bf16 is False


def test_a_killed_fit_resumes_at_its_last_epoch_end_and_ends_as_if_never_stopped(data_root: Path,
                                                                                   tmp_path: Path) -> None:
    loader = _loader(data_root, 24, 8, augment=True)  # 3 batches per epoch
    cfg = TrainConfig(epochs=3, lr=0.05, warmup_steps=2, seed=1)
    whole_model = _model()
    whole = fit(whole_model, loader, cfg, device="cpu", progress=False, resume=ResumeState(tmp_path / "a.pt", "run"))
    state = ResumeState(tmp_path / "b.pt", "run")

    def kill(step: int, model: torch.nn.Module) -> None:
        if step == 5:  # mid-epoch 2: steps 4 and 5 are lost, epoch 1 was saved
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(_model(), loader, cfg, device="cpu", progress=False, step_callback=kill, resume=state)
    seen: list[int] = []
    resumed_model = _model()
    resumed = fit(resumed_model, loader, cfg, device="cpu", progress=False, resume=state,
                  step_callback=lambda step, model: seen.append(step))
    assert seen == list(range(4, 10))  # from the first step after the saved epoch
    assert resumed.steps == whole.steps == 9 and resumed.losses == whole.losses
    for (name, a), (_, b) in zip(whole_model.state_dict().items(), resumed_model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(ConfigError, match="belongs to another run"):
        fit(_model(), loader, cfg, device="cpu", progress=False, resume=ResumeState(state.path, "other"))
    state.path.write_bytes(b"not a state")
    with pytest.raises(ConfigError, match="cannot be read.*delete it"):
        fit(_model(), loader, cfg, device="cpu", progress=False, resume=state)


def test_train_from_config_resumes_a_killed_run_and_cleans_up(data_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import automtd.workflows._train as train_module
    from automtd.workflows import resume_state, train_from_config

    cfg = load_train_config(REPO / "configs" / "train_vgg11_cifar10.yaml", [
        "model.name=cifar_resnet20", f"data.root={data_root}", "data.train_subset=64", "data.batch_size=32",
        "data.val_size=0", "train.epochs=2", "train.warmup_steps=1", "evaluate_test=false", "progress=false",
        "device=cpu", f"output={tmp_path / 'ckpt'}"])
    state = resume_state(cfg)
    real_fit = train_module.fit
    steps: list[int] = []

    def killed_at_step_3(*args: object, **kwargs: object) -> object:
        def kill(step: int, model: torch.nn.Module) -> None:
            steps.append(step)
            if step == 3:
                raise KeyboardInterrupt
        return real_fit(*args, **{**kwargs, "step_callback": kill})  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "fit", killed_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_from_config(cfg)
    assert state.path.exists() and not (tmp_path / "ckpt").exists()
    monkeypatch.setattr(train_module, "fit", real_fit)
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lr": 0.01})})
    with pytest.raises(ConfigError, match="belongs to another run"):
        train_from_config(other)  # same output, another config: refused, the state kept
    assert state.path.exists()
    summary = train_from_config(cfg)
    assert summary["steps"] == 4 and (tmp_path / "ckpt").is_dir() and not state.path.exists()
