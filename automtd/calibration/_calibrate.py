"""Calibrate a compressed network on training images so each factorized layer reproduces the original.

For each factorized layer, in the order the network runs them:

1. collect, chunk by chunk, the layer's input and the ORIGINAL network's output at that layer:
   ``sequential`` takes the input from the compressed network as calibrated so far (its own
   activations, so earlier layers' errors are corrected too), ``parallel`` from the original network;
2. refit the chain's last linear factor (and its bias, if it has one) by ridge least squares
   (:class:`~automtd.calibration.LeastSquares`, shrunk towards the data-free factor);
3. optionally distil the whole chain on the cached pairs (Adam, cosine schedule) and refit the last
   factor once more on the distilled prefix.

Finally the BatchNorm statistics are re-estimated on the calibration images.

In ``parallel`` mode a layer's result depends only on the original network, the layer's choice and the
settings, so a :class:`ChainStore` (e.g. :class:`automtd.plan.FactorCache`) can keep each calibrated chain:
a search calibrates a (layer, method, ranks) once and every later trial that picks it loads the result.
"""

from __future__ import annotations

import copy
import hashlib
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from automtd._errors import ConfigError, PlanMismatchError
from automtd.calibration._chain import (
    chain_rows,
    last_factor,
    last_features,
    prefix,
    set_last_factor,
    unsupported_chain,
)
from automtd.calibration._collect import (
    activation_bytes,
    called_layers,
    capture,
    capture_all,
    execution_order,
    gather_images,
)
from automtd.calibration._inner import inner_refit, inner_supported
from automtd.calibration._lstsq import LeastSquares
from automtd.plan import Plan
from automtd.train import recalibrate_batchnorm

__all__ = ["CALIBRATION_MODES", "ChainStore", "CalibrationReport", "LayerCalibration", "calibrate_plan"]

CALIBRATION_MODES = ("sequential", "parallel")


class ChainStore(Protocol):
    """Where calibrated chains are kept between calls: tensors by string key (``FactorCache`` is one)."""

    def get(self, key: str) -> dict[str, torch.Tensor] | None: ...

    def put(self, key: str, factors: dict[str, torch.Tensor]) -> None: ...


@dataclass(frozen=True)
class LayerCalibration:
    """One layer's calibration: relative squared output error on the calibration rows before and after."""

    name: str
    method: str
    error_before: float
    error_after: float
    rows: int
    seconds: float
    skipped: str | None = None
    stored: bool = False


@dataclass(frozen=True)
class CalibrationReport:
    """What :func:`calibrate_plan` did: settings, one :class:`LayerCalibration` per layer, time."""

    mode: str
    images: int
    ridge: float
    sweeps: int
    distill_steps: int
    bn_images: int
    seconds: float
    layers: tuple[LayerCalibration, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """One line: mode, images, mean relative error before -> after, seconds."""
        done = [lc for lc in self.layers if lc.skipped is None]
        loaded = sum(lc.stored for lc in done)
        reused = f", {loaded} loaded from the store" if loaded else ""
        before = sum(lc.error_before for lc in done) / max(len(done), 1)
        after = sum(lc.error_after for lc in done) / max(len(done), 1)
        return (f"calibrated {len(done)}/{len(self.layers)} layers ({self.mode}, {self.images} images, ridge "
                f"{self.ridge:g}, {self.sweeps} sweeps, {self.distill_steps} distillation steps): mean relative "
                f"output error {before:.4f} -> {after:.4f} in {self.seconds:.1f} s{reused}")


def _check(images: int, mode: str, ridge: float, sweeps: int, distill_steps: int, chunk: int) -> None:
    if mode not in CALIBRATION_MODES:
        raise ConfigError(f"calibration mode {mode!r} is unknown; allowed: {', '.join(CALIBRATION_MODES)}")
    if isinstance(images, bool) or int(images) <= 0:
        raise ConfigError(f"calibration images={images!r} is invalid; give a positive number, e.g. 512")
    if not float(ridge) >= 0.0:
        raise ConfigError(f"ridge={ridge!r} is invalid; give a number >= 0 (e.g. 1e-4)")
    if int(sweeps) < 0:
        raise ConfigError(f"sweeps={sweeps!r} is invalid; give 0 (last factor only) or more alternating rounds")
    if int(distill_steps) < 0:
        raise ConfigError(f"distill_steps={distill_steps!r} is invalid; give 0 (no distillation) or more")
    if int(chunk) <= 0:
        raise ConfigError(f"chunk={chunk!r} is invalid; give a positive number of images per forward pass")


def _pairs(original: nn.Module, compressed: nn.Module, name: str, x: torch.Tensor, mode: str
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer input, original layer output) for the images ``x``."""
    inp, out = capture(original, name, x)
    if mode == "sequential":
        inp = capture(compressed, name, x)[0]
    return inp, out


def _layer_pairs(original: nn.Module, compressed: nn.Module, name: str, chunks: Sequence[torch.Tensor], mode: str,
                 cached: Sequence[tuple[torch.Tensor | None, torch.Tensor]] | None
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(layer input, original layer output) per chunk, from the cache of the original's pass where there is one."""
    if cached is None:
        return [_pairs(original, compressed, name, c, mode) for c in chunks]
    out = []
    for chunk, (inp, target) in zip(chunks, cached, strict=True):
        out.append((capture(compressed, name, chunk)[0] if inp is None else inp, target))
    return out


def _positions(output: torch.Tensor, chain: nn.Module, keep: int | None, seed: int) -> torch.Tensor | None:
    """A seeded sample of ``keep`` output positions of a conv layer (None: all of them)."""
    if not isinstance(last_factor(chain), nn.Conv2d):
        return None
    total = output.shape[-2] * output.shape[-1]
    if keep is None or total <= keep:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=gen)[:keep].sort().values


def _accumulate(chain: nn.Module, pairs: Iterable[tuple[torch.Tensor, torch.Tensor]], pos: torch.Tensor | None
                ) -> LeastSquares:
    last = last_factor(chain)
    fan_in = last.weight[0].numel()
    acc = LeastSquares(fan_in, int(last.weight.shape[0]), bias=last.bias is not None)
    with torch.no_grad():
        for inp, out in pairs:
            z = prefix(chain, inp)
            acc.add(last_features(last, z, pos), chain_rows(last, out, pos))
    return acc


def _refit(chain: nn.Module, acc: LeastSquares, ridge: float) -> tuple[float, float]:
    last = last_factor(chain)
    before = acc.error(last.weight, last.bias)
    weight, bias = acc.solve(ridge, last.weight, last.bias)
    after = acc.error(weight, bias)
    if after <= before:  # shrinkage keeps this true up to rounding; never accept a worse fit
        set_last_factor(last, weight, bias)
    return before, min(before, after)


def _distill(chain: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int, lr: float,
             batch: int, seed: int) -> None:
    """Adam on the whole chain, MSE to ``targets`` normalised by their energy, cosine learning rate."""
    params = list(chain.parameters())
    flags = [p.requires_grad for p in params]
    gen = torch.Generator().manual_seed(seed)
    scale = targets.pow(2).mean().clamp_min(1e-12)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    try:
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            for _ in range(steps):
                idx = torch.randint(0, inputs.shape[0], (min(batch, inputs.shape[0]),), generator=gen)
                loss = F.mse_loss(chain(inputs[idx]), targets[idx]) / scale
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def _store_key(tag: str, name: str, method: str, ranks: Sequence[int]) -> str:
    text = f"calibrated|{tag}|{name}|{method}|{','.join(str(int(r)) for r in ranks)}"
    return hashlib.sha256(text.encode()).hexdigest()


def _load(chain: nn.Module, name: str, method: str, entry: dict[str, torch.Tensor]) -> LayerCalibration | None:
    """Load a stored chain (``None`` when the entry does not fit the chain: it is then recomputed)."""
    device = next(chain.parameters()).device
    state = {k: v.to(device) for k, v in entry.items() if not k.startswith(_META)}
    if _META + "errors" not in entry:
        return None
    try:
        chain.load_state_dict(state, strict=True)
    except RuntimeError:
        return None
    meta = entry[_META + "errors"].tolist()
    return LayerCalibration(name, method, float(meta[0]), float(meta[1]), int(meta[2]), 0.0, stored=True)


_META = "__calibration__."


def _calibrate_layer(original: nn.Module, compressed: nn.Module, name: str, method: str, chunks: Sequence[torch.Tensor],
                     cached: Sequence[tuple[torch.Tensor | None, torch.Tensor]] | None, *, mode: str, ridge: float,
                     sweeps: int, distill_steps: int, distill_lr: float, distill_batch: int, distill_images: int,
                     max_positions: int | None, seed: int) -> LayerCalibration:
    t0 = time.perf_counter()
    chain = compressed.get_submodule(name)
    pairs = _layer_pairs(original, compressed, name, chunks, mode, cached)
    pos = _positions(pairs[0][1], chain, max_positions, seed)
    acc = _accumulate(chain, pairs, pos)
    before, after = _refit(chain, acc, ridge)
    if inner_supported(chain):
        for _ in range(int(sweeps)):
            if not inner_refit(chain, pairs, ridge=ridge, positions=pos):
                break
            acc = _accumulate(chain, pairs, pos)
            after = _refit(chain, acc, ridge)[1]
    if distill_steps > 0:
        inputs = torch.cat([p[0] for p in pairs])[:distill_images]
        targets = torch.cat([p[1] for p in pairs])[:distill_images]
        closed_form = copy.deepcopy(chain.state_dict())
        _distill(chain, inputs, targets, steps=int(distill_steps), lr=distill_lr, batch=distill_batch, seed=seed)
        del inputs, targets
        acc = _accumulate(chain, pairs, pos)
        distilled = _refit(chain, acc, ridge)[1]
        if distilled <= after:
            after = distilled
        else:  # the stochastic steps fitted the calibration rows worse: keep the closed form
            chain.load_state_dict(closed_form)
    return LayerCalibration(name, method, before, after, acc.rows, time.perf_counter() - t0)


def calibrate_plan(
    original: nn.Module,
    compressed: nn.Module,
    plan: Plan,
    loader: Iterable[object],
    *,
    images: int = 512,
    mode: str = "sequential",
    ridge: float = 1e-4,
    sweeps: int = 2,
    distill_steps: int = 0,
    distill_lr: float = 1e-3,
    distill_batch: int = 32,
    distill_images: int | None = None,
    chunk: int = 128,
    max_positions: int | None = 256,
    max_cache_bytes: float = 2**31,
    recalibrate_bn: bool = True,
    seed: int = 0,
    store: ChainStore | None = None,
    store_tag: str = "",
) -> CalibrationReport:
    """Calibrate ``compressed`` (``original`` with ``plan`` applied) in place on ``images`` images of ``loader``.

    Args:
        original: the dense network (not modified; its train/eval mode is restored).
        compressed: the same network after :func:`automtd.plan.apply_plan` (modified in place).
        plan: the applied plan; its layers are calibrated in the order the network runs them.
        loader: training images (batches of images or ``(images, labels, ...)``), not the images you report on.
        images: how many calibration images to take from ``loader``.
        mode: ``sequential`` (inputs from the compressed network so far) or ``parallel`` (from the original).
        ridge: shrinkage towards the data-free last factor, relative to the mean feature energy.
        sweeps: alternating least-squares rounds that also refit the factor before a final 1x1 conv/linear
            (Tucker-2's core, HT-2's 1xk, the SVDs' first factor); 0 refits the last factor only.
        distill_steps: Adam steps of local distillation of each whole chain (0: closed form only).
        distill_lr, distill_batch, distill_images: its learning rate, batch (images) and cached images.
        chunk: images per forward pass; one layer's inputs and outputs for all ``images`` are held at once.
        max_positions: output positions per image kept for the least squares (seeded sample), None for all.
        max_cache_bytes: the original network's activations at every layer are computed in one pass and
            held while they fit in this many bytes, else recomputed layer by layer.
        recalibrate_bn: re-estimate the BatchNorm statistics on the calibration images afterwards.
        seed: seed of the position sample and of the distillation batches (mixed with each layer's name).
        store: ``parallel`` mode only: calibrated chains are loaded from / saved to it, keyed by ``store_tag``,
            the layer name, method and ranks.  ``store_tag`` must identify everything else the result depends
            on (the original weights, the calibration images, the other arguments, the decomposition seed).
    """
    _check(images, mode, ridge, sweeps, distill_steps, chunk)
    if store is not None and mode != "parallel":
        raise ConfigError(f"a calibration store needs mode 'parallel' (got {mode!r}): in sequential mode a layer's "
                          "result depends on the layers before it; drop the store or use mode='parallel'")
    start = time.perf_counter()
    device = next(compressed.parameters()).device
    x_all = gather_images(loader, int(images), device)
    chunks = list(torch.split(x_all, int(chunk)))
    modes = (original.training, compressed.training)
    original.eval()
    compressed.eval()
    done: dict[str, LayerCalibration] = {}
    choices = {lp.name: (lp.method, tuple(lp.ranks)) for lp in plan.layers}
    keep = int(images if distill_images is None else distill_images)
    cache: dict[str, list[tuple[torch.Tensor | None, torch.Tensor]]] = {}
    try:
        order = execution_order(compressed, list(choices), chunks[0][:2])
        in_original = set(called_layers(original, order, chunks[0][:2]))
        todo: list[str] = []
        for name in order:
            chain = compressed.get_submodule(name)
            reason = unsupported_chain(chain)
            if name not in in_original:  # e.g. an attention's out_proj, whose weight the attention reads itself
                reason = "the original network never calls this layer as a module (no outputs to fit)"
            if reason == "not a factor chain":
                raise PlanMismatchError(
                    f"layer {name!r} of the compressed model is not factorized; apply the plan first (apply_plan)"
                )
            method, ranks = choices[name]
            if reason is not None:
                done[name] = LayerCalibration(name, method, 0.0, 0.0, 0, 0.0, skipped=reason)
                continue
            entry = store.get(_store_key(store_tag, name, method, ranks)) if store is not None else None
            loaded = _load(chain, name, method, entry) if entry else None
            if loaded is not None:
                done[name] = loaded
            else:
                todo.append(name)
        if todo:
            per_image = activation_bytes(original, todo, chunks[0][:2]) / min(2, int(chunks[0].shape[0]))
            # one pass of the original for every layer's targets (and inputs, in parallel mode) when they fit
            fits = per_image * int(x_all.shape[0]) * (1.0 if mode == "parallel" else 0.5) <= max_cache_bytes
            cache = capture_all(original, todo, chunks, inputs=mode == "parallel") if fits else {}
        for name in todo:
            method, ranks = choices[name]
            record = _calibrate_layer(
                original, compressed, name, method, chunks, cache.pop(name, None), mode=mode, ridge=ridge,
                sweeps=sweeps, distill_steps=distill_steps, distill_lr=distill_lr, distill_batch=distill_batch,
                distill_images=keep, max_positions=max_positions, seed=seed + zlib.crc32(name.encode()) % 100_003)
            done[name] = record
            if store is not None:
                chain = compressed.get_submodule(name)
                meta = torch.tensor([record.error_before, record.error_after, float(record.rows)], dtype=torch.float64)
                store.put(_store_key(store_tag, name, method, ranks),
                          {**{k: v.detach() for k, v in chain.state_dict().items()}, _META + "errors": meta})
        bn_images = recalibrate_batchnorm(compressed, chunks, device=device) if recalibrate_bn else 0
    finally:
        original.train(modes[0])
        compressed.train(modes[1])
    records = tuple(done[name] for name in order)
    return CalibrationReport(mode, int(x_all.shape[0]), float(ridge), int(sweeps), int(distill_steps), bn_images,
                             time.perf_counter() - start, records)
