"""The one training / fine-tuning / evaluation loop used everywhere (base training, search, funnel)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from automtd._errors import AutomtdError, ConfigError
from automtd.train._config import TrainConfig, TrainResult
from automtd.train._resume import ResumeState, load_state, save_state
from automtd.train._teacher import Teacher
from automtd.utils import resolve_device

__all__ = ["Batch", "NonFiniteLossError", "StopTraining", "cpu_bf16_supported", "fit", "evaluate", "kd_loss"]

Batch = Sequence[torch.Tensor]  # (images, labels), as a DataLoader collates the datasets of automtd.data


class NonFiniteLossError(AutomtdError):
    """The training loss became NaN or infinite (the search fails the trial with this reason)."""

    exit_code = 1


class StopTraining(Exception):  # noqa: N818 - a control-flow signal, like StopIteration
    """Raise from ``step_callback`` to end :func:`fit` early and still get a :class:`TrainResult`."""


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's distillation loss ``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits.float() / t, dim=1),
        F.log_softmax(teacher_logits.float() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 autocast is emulated
    and slower than fp32, so ``cpu_bf16`` falls back to fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _batches(loader: Iterable[Batch]) -> Iterator[Batch]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ConfigError("the training loader yields no batches; use a larger dataset or drop_last=False")


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=max(total, 2), cycle_momentum=False
        )
    warm = min(cfg.warmup_steps, total)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _to_device(batch: Batch, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch[0], batch[1]
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def fit(
    model: nn.Module,
    loader: Iterable[Batch],
    cfg: TrainConfig,
    *,
    teacher: nn.Module | Teacher | None = None,
    device: str | torch.device | None = None,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    param_groups: Sequence[dict[str, object]] | None = None,
    step_callback: Callable[[int, nn.Module], None] | None = None,
    progress: bool = True,
    resume: ResumeState | None = None,
) -> TrainResult:
    """Train ``model`` in place with SGD + momentum for ``cfg.epochs`` or ``cfg.steps``.

    Args:
        model: moved to ``device`` and left there, in train mode.
        loader: yields ``(images, labels)`` batches; re-iterated as often as the budget needs. Training is
            seeded by ``cfg.seed``: torch's global RNG (augmentation, dropout) and the loader's shuffling
            generator (if it has one, as :func:`automtd.data.make_loader` loaders do) are reseeded.
        cfg: hyper-parameters (:class:`TrainConfig`).
        teacher: if given, knowledge distillation from it (``cfg.kd_alpha``, ``cfg.kd_temperature``); a module runs
            as its BatchNorm-folded channels-last form (:class:`Teacher`); a :class:`Teacher` with ``cache`` also
            reuses its logits of batches that carry keys (``make_loader(..., keys=True)``).
        device: ``auto`` (default), ``cpu``, ``cuda``...; AMP and channels_last are used on CUDA, bfloat16
            autocast on CPU with ``cfg.cpu_bf16`` where the CPU has native bf16 (:func:`cpu_bf16_supported`).
        extra_loss: ``extra_loss(model)`` is added to each step's loss (e.g. a funnel penalty).
        param_groups: optimizer parameter groups (dicts with ``params`` and optional ``lr``/``weight_decay``);
            default one group of all trainable parameters.
        step_callback: ``step_callback(step, model)`` after every optimizer step (1-based step);
            raising :class:`StopTraining` ends training early, any other exception propagates.
        progress: show a tqdm progress bar.
        resume: save the whole training state to ``resume.path`` at every epoch end and, when that file is
            there at the start, continue from it (:mod:`automtd.train._resume`; a ``step_callback`` keeps no
            state there). Needs a loader with a length.

    Raises:
        NonFiniteLossError: when the loss becomes NaN or infinite.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    use_cl = cfg.channels_last and cuda
    use_amp = cfg.amp and cuda
    use_bf16 = cfg.cpu_bf16 and dev.type == "cpu" and cpu_bf16_supported()
    torch.manual_seed(cfg.seed)
    generator = getattr(loader, "generator", None)
    if not isinstance(generator, torch.Generator):
        generator = None
    if generator is not None:
        generator.manual_seed(cfg.seed)  # the same shuffling order on every call, even for a reused loader
    model.to(dev)
    if use_cl:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    kd_teacher = None
    if teacher is not None and cfg.kd_alpha > 0:
        kd_teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher, cache=False)
    try:
        per_epoch: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        per_epoch = None
    if per_epoch is None and (cfg.steps is None or resume is not None):
        raise ConfigError("the loader has no length; give the budget as steps instead of epochs, without resume")
    total = int(cfg.steps) if cfg.steps is not None else max(1, math.ceil(float(cfg.epochs or 0) * (per_epoch or 1)))
    groups = list(param_groups) if param_groups is not None else [
        {"params": [p for p in model.parameters() if p.requires_grad]}
    ]
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                          weight_decay=cfg.weight_decay)
    sched = _scheduler(opt, cfg, total)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.float16)) if use_amp else nullcontext
    if use_bf16:
        autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    model.train()
    done, before, losses = 0, 0.0, list[float]()
    if resume is not None:
        done, before, losses = load_state(resume, model=model, optimizer=opt, scheduler=sched, scaler=scaler,
                                          generator=generator)
    stopped = False
    start = time.perf_counter() - before
    bar = tqdm(total=total, initial=done, disable=not progress, desc="train", leave=False, dynamic_ncols=True)
    batches = _batches(loader)
    try:
        for step in range(done + 1, total + 1):
            batch = next(batches)
            x, y = _to_device(batch, dev, use_cl)
            with autocast():
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                if kd_teacher is not None:
                    t_logits = kd_teacher.logits(x, batch[2] if len(batch) > 2 else None)
                    loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd_loss(logits, t_logits, cfg.kd_temperature)
                if extra_loss is not None:
                    loss = loss + extra_loss(model)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"training loss became {value} at step {step}/{total} (lr={opt.param_groups[0]['lr']:.3g}); "
                    "lower the learning rate or check the model/ranks"
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip is not None:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if sched is not None:
                sched.step()
            losses.append(value)
            bar.update(1)
            if step % 10 == 0 or step == total:
                bar.set_postfix(loss=f"{value:.4f}")
            if resume is not None and per_epoch and step % per_epoch == 0 and step < total:
                save_state(resume, step=step, seconds=time.perf_counter() - start, losses=losses, model=model,
                           optimizer=opt, scheduler=sched, scaler=scaler, generator=generator)
            if step_callback is not None:
                try:
                    step_callback(step, model)
                except StopTraining:
                    stopped = True
                    break
    finally:
        bar.close()
        if use_cl:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    tail = losses[-max(1, min(20, len(losses))):] if losses else [float("nan")]
    return TrainResult(
        steps=len(losses),
        final_loss=sum(tail) / len(tail),
        mean_loss=sum(losses) / len(losses) if losses else float("nan"),
        seconds=time.perf_counter() - start,
        losses=losses,
        stopped_early=stopped,
    )


def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    device: str | torch.device | None = None,
    progress: bool = False,
    bf16: bool = False,
) -> float:
    """Top-1 accuracy in percent of ``model`` on ``loader`` (``device=None`` means ``auto``; the model stays there).

    Runs in fp32 under ``inference_mode`` in eval mode, with channels_last activations for conv nets
    (faster on CPU and CUDA); the model's previous mode and memory format are restored, and its
    parameters stay ordinary tensors (it can be trained afterwards, e.g. from a ``step_callback``).
    ``bf16``: bfloat16 autocast on a CPU with native bf16 (:func:`cpu_bf16_supported`; about twice as fast; an
    image whose top two logits nearly tie may change its prediction), fp32 elsewhere.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    convert = _has_conv(model) and not _is_channels_last(model)
    if convert:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    correct = total = 0
    use_bf16 = bf16 and dev.type == "cpu" and cpu_bf16_supported()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    try:
        with torch.inference_mode(), autocast:
            for batch in tqdm(loader, disable=not progress, desc="eval", leave=False, dynamic_ncols=True):
                x, y = _to_device(batch, dev, True)
                pred = model(x).argmax(dim=1)
                correct += int((pred == y).sum())
                total += int(y.numel())
    finally:
        if convert:
            model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
        model.train(was_training)
    if total == 0:
        raise ConfigError("the evaluation loader yields no samples; use a non-empty split/subset")
    return 100.0 * correct / total


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _is_channels_last(model: nn.Module) -> bool:
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.weight.dim() == 4:
            w = m.weight
            return w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    return False
