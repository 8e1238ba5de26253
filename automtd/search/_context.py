"""What every trial of a study shares, loaded once per process: model, teacher, data, layers, space.

The context is cached per (config, study directory) so a worker builds it once for all its trials;
:func:`get_context` is the entry point (:func:`build_context` builds one uncached, with chosen
:class:`TrialOptions`: the benchmark of a trial's cost runs both settings side by side).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from automtd.calibration import CalibrationReport, calibrate_plan
from automtd.checkpoints import load_checkpoint, resolve_checkpoint
from automtd.data import get_dataset, make_loader, resolve_data
from automtd.models import get_model_spec
from automtd.plan import FactorCache, LayerInfo, Plan, decomposable_layers, model_totals
from automtd.search._config import SearchConfig, search_config_from_dict
from automtd.search._space import SpaceLayer, build_space
from automtd.train import Teacher, evaluate
from automtd.utils import resolve_device

__all__ = [
    "Loader",
    "SearchContext",
    "TrialOptions",
    "build_context",
    "get_context",
    "config_key",
    "checkpoint_sha256",
    "with_locations",
]

Loader = DataLoader[tuple[torch.Tensor, int]]  # over (image, label) samples


@dataclass(frozen=True)
class TrialOptions:
    """How a trial spends its CPU time; every speed-up is on by default and each can be turned off (the trial-cost
    benchmark measures each one against the path without it; the scores agree within noise).

    Attributes:
        batched_loader: the train loader fetches whole batches of the in-memory uint8 images (no per-image
            collation), augmented per ``(epoch_seed, row)``.
        teacher_cache: the teacher's logits are kept per image and augmentation and reused by later trials
            (needs ``batched_loader``: the batches carry their keys).
        teacher_fused: the teacher runs BatchNorm-folded in channels-last.
        bn_channels_last: the BatchNorm passes run in channels-last.
        eval_bf16: the trial scores (and the original model's) are computed under bfloat16 autocast on a CPU with
            native bf16 (``automtd.train.cpu_bf16_supported``).
    """

    batched_loader: bool = True
    teacher_cache: bool = True
    teacher_fused: bool = True
    bn_channels_last: bool = True
    eval_bf16: bool = True


@dataclass
class SearchContext:
    """Loaded once per process and shared by the trials (the base model is never modified)."""

    config: SearchConfig
    study_dir: Path
    device: torch.device
    base_model: nn.Module
    layers: list[LayerInfo]
    space: list[SpaceLayer]
    train_loader: Loader
    val_loader: Loader
    sens_loader: Loader
    checkpoint_sha256: str
    totals: tuple[int, int]
    teacher: Teacher
    calibration_images: torch.Tensor | None = None
    options: TrialOptions = field(default_factory=TrialOptions)
    _base_accuracy: float | None = None

    def fresh_model(self) -> nn.Module:
        """A deep copy of the original model, in eval mode."""
        return copy.deepcopy(self.base_model).eval()

    @property
    def base_accuracy(self) -> float:
        """Validation accuracy (percent) of the original model on the validation subset."""
        if self._base_accuracy is None:
            self._base_accuracy = self.score(self.base_model, self.val_loader)
        return self._base_accuracy

    def score(self, model: nn.Module, loader: Loader) -> float:
        """Top-1 accuracy (percent) of ``model`` on ``loader`` as trials are scored (see :class:`TrialOptions`)."""
        return float(evaluate(model, loader, device=self.device, bf16=self.options.eval_bf16))

    def cache(self) -> FactorCache:
        """The study's factor cache (shared on disk by every worker of the study directory)."""
        return FactorCache(self.study_dir / "factors")

    def calibrate(self, model: nn.Module, plan: Plan, *, batchnorm: bool = True) -> CalibrationReport | None:
        """Calibrate ``model`` (the original with ``plan`` applied) in place as the config says (None when off).

        In ``parallel`` mode each calibrated chain is kept in the study directory (``calibrated/``), keyed by the
        original weights, the calibration images and settings, so a layer choice is calibrated once per study.
        """
        c = self.config.calibration
        if self.calibration_images is None or not plan.layers:
            return None
        store = FactorCache(self.study_dir / "calibrated") if c.mode == "parallel" else None
        return calibrate_plan(
            self.base_model, model, plan, [self.calibration_images], images=int(self.calibration_images.shape[0]),
            mode=c.mode, ridge=c.ridge, sweeps=c.sweeps, distill_steps=c.distill_steps, recalibrate_bn=batchnorm,
            seed=self.config.seed, store=store, store_tag=self._calibration_tag(),
        )

    def _calibration_tag(self) -> str:
        # what a calibrated chain depends on besides its layer, method and ranks
        d = self.config.data
        model = self.config.model.model_dump(mode="json", exclude={"checkpoint"})
        data = {"weights": self.checkpoint_sha256, "model": model,
                "dataset": d.dataset, "val_size": d.val_size, "seed": self.config.seed,
                "calibration": self.config.calibration.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


_CACHE: dict[str, SearchContext] = {}
_LOCK = threading.Lock()


def config_key(config: SearchConfig, study_dir: Path) -> str:
    # the study section (name, storage, budget) does not change what the context holds
    data = config.model_dump(mode="json", exclude={"study"})
    text = json.dumps(data, sort_keys=True) + str(Path(study_dir).resolve())
    return hashlib.sha256(text.encode()).hexdigest()


def get_context(config: SearchConfig, study_dir: Path) -> SearchContext:
    """The process-wide context of ``config`` (built on first use).

    Building it writes nothing (the factor cache creates its folder on first use), so it doubles as the check
    of the model name, the checkpoint (exists, loads safely, fits the architecture) and the data (found,
    readable) before a study is created.
    """
    key = config_key(config, study_dir)
    with _LOCK:
        if key not in _CACHE:
            _CACHE.clear()  # one study per process at a time; free the previous one
            _CACHE[key] = build_context(config, Path(study_dir))
        return _CACHE[key]


def build_context(config: SearchConfig, study_dir: Path, options: TrialOptions | None = None) -> SearchContext:
    """A new context of ``config`` (not the process-wide one of :func:`get_context`) with ``options``."""
    opts = TrialOptions() if options is None else options
    device = resolve_device(config.device)
    ckpt = resolve_checkpoint(config.model.checkpoint, download=config.data.download)
    model, _meta = load_checkpoint(ckpt, model_name=config.model.name, model_kwargs=config.model.kwargs or None)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    spec = get_model_spec(config.model.name)
    root = resolve_data(config.data.root, config.data.dataset, download=config.data.download)
    common: dict[str, Any] = {
        "root": root,
        "mean": spec.mean,
        "std": spec.std,
        "val_size": config.data.val_size,
        "seed": config.seed,
        "image_size": int(config.model.input_size[-1]),  # image folders are cropped to the model's input
    }
    train = get_dataset(config.data.dataset, "train", train_transform=True, subset=config.data.train_subset, **common)
    score = config.data.score_split
    val = get_dataset(config.data.dataset, score, subset=config.data.val_subset, **common)
    sens = get_dataset(config.data.dataset, score, subset=min(config.sensitivity.val_subset, len(val)), **common)
    calibration = None
    if config.calibration.enabled:
        pool = len(train)  # type: ignore[arg-type]
        calib = get_dataset(config.data.dataset, "train", subset=min(config.calibration.images, pool), **common)
        calibration = torch.cat([batch[0] for batch in make_loader(calib, batch_size=256, shuffle=False)]).to(device)
    bs, ebs = config.data.batch_size, config.data.eval_batch_size
    layers = decomposable_layers(model, config.model.input_size)
    return SearchContext(
        config=config,
        study_dir=study_dir,
        device=device,
        base_model=model,
        layers=layers,
        space=build_space(layers, config),
        train_loader=make_loader(train, batch_size=bs, shuffle=True, seed=config.seed, batched=opts.batched_loader,
                                 keys=opts.batched_loader and opts.teacher_cache),
        val_loader=make_loader(val, batch_size=ebs, shuffle=False),
        sens_loader=make_loader(sens, batch_size=ebs, shuffle=False),
        checkpoint_sha256=checkpoint_sha256(ckpt),
        totals=model_totals(model, config.model.input_size),
        teacher=Teacher(model, fuse=opts.teacher_fused, channels_last=opts.teacher_fused, cache=opts.teacher_cache),
        calibration_images=calibration,
        options=opts,
    )


def with_locations(
    config: SearchConfig, *, data_root: str | None = None, checkpoint: str | None = None
) -> SearchConfig:
    """``config`` with another data root and/or checkpoint path (neither is part of the study spec)."""
    if data_root is None and checkpoint is None:
        return config
    data = config.model_dump(mode="json")
    if data_root is not None:
        data["data"]["root"] = data_root
    if checkpoint is not None:
        data["model"]["checkpoint"] = checkpoint
    return search_config_from_dict(data, source="--data-root/--checkpoint")


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 of a weights file's bytes (what ``sha256sum`` prints: a copy under another name has the same), or of
    the sorted files of a checkpoint directory (names inside the directory and bytes)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
