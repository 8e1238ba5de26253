"""Speed part ``collapse``: whole plans deployed with and without running slow chains as their dense product.

For each plan (the baselines and the front plans, as the ``models`` part), at each batch size, four
modules are timed in turn in one process on the same channels-last batch: the original deployed, the plan
deployed with ``collapse=False`` (every factorized conv as its chain), with the default ``collapse='auto'``
(a chain runs as its exact dense product or as two merged convs where
:func:`automtd.deploy.tune_collapse` measured that faster on its input) and, to show what the merged forms
add, with ``tune_collapse`` offered the dense product only.
The efficiencies use the plan's MAC ratio (what the factorized model promises); ``deployed_macs_ratio`` is what
the collapsed form really runs.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from automtd.deploy import DENSE, deploy_model, exact_forms, tune_collapse
from automtd.metrics import count_macs
from automtd.plan import Plan
from benchmarks._common import log
from benchmarks._speed_cases import interleaved_latency, structure_model

__all__ = ["ROUNDS", "collapse_rows", "collapse_summary"]

ROUNDS = 3  # rounds of the full run (median); the smoke run takes 2


def collapse_rows(model_name: str, base: nn.Module, plans: Sequence[tuple[str, str, Plan]], *,
                  batches: Sequence[int], rounds: int, min_run_time: float) -> list[dict[str, Any]]:
    """One row per (plan, batch): ms of the original / chains / collapsed form, speed-ups, efficiencies, how
    many of the plan's factorized convs were collapsed (``merged``: of those, how many run as two merged convs
    rather than one dense conv) and the MAC ratio the collapsed form runs at."""
    base_macs = count_macs(base, (3, 32, 32))
    inputs = {b: torch.randn(b, 3, 32, 32).contiguous(memory_format=torch.channels_last) for b in batches}
    originals = {b: deploy_model(base, example_input=x).module for b, x in inputs.items()}
    rows: list[dict[str, Any]] = []
    for label, method, plan in plans:
        comp = structure_model(copy.deepcopy(base), plan)
        chains = sum(1 for m in comp.modules() if type(m).__name__ == "FactorizedConv")
        for batch in batches:
            x, original = inputs[batch], originals[batch]
            plain = deploy_model(comp, example_input=x, collapse=False).module
            auto = deploy_model(comp, example_input=x)
            dense_only, n_dense = _dense_only(comp, x)
            t_orig, t_plain, t_auto, t_dense = interleaved_latency([original, plain, auto.module, dense_only], x,
                                                                   rounds=rounds, min_run_time=min_run_time)
            deployed_macs = count_macs(auto.module, (3, 32, 32))
            merged = sum(not isinstance(auto.module.get_submodule(n), nn.Conv2d) for n in auto.collapsed)
            rows.append({
                "model": model_name, "plan": label, "method": method, "batch": batch,
                "macs_ratio": plan.macs_ratio, "deployed_macs_ratio": base_macs / deployed_macs,
                "chains": chains, "collapsed": len(auto.collapsed), "merged": merged,
                "orig_ms": t_orig, "chains_ms": t_plain,
                "collapse_ms": t_auto, "speedup_chains": t_orig / t_plain, "speedup_collapse": t_orig / t_auto,
                "eff_chains": t_orig / t_plain / plan.macs_ratio, "eff_collapse": t_orig / t_auto / plan.macs_ratio,
                "collapsed_dense": n_dense, "dense_only_ms": t_dense,
                "eff_dense_only": t_orig / t_dense / plan.macs_ratio,
            })
            log(f"collapse {model_name} {label} batch {batch}: {len(auto.collapsed)}/{chains} chains collapsed "
                f"({merged} to two merged convs), "
                f"x{t_orig / t_plain:.2f} -> x{t_orig / t_auto:.2f}, dense only x{t_orig / t_dense:.2f} "
                f"(MACs x{plan.macs_ratio:.2f})")
    return rows


def _dense_only(comp: nn.Module, x: torch.Tensor) -> tuple[nn.Module, int]:
    """``comp`` deployed as ``deploy_model`` does, but with ``tune_collapse`` offered only each chain's dense
    product; returns it and how many chains it collapsed.  BatchNorm is folded by ``torch.fx``'s ``fuse``, the
    step ``deploy_model`` runs."""
    out = deploy_model(comp, example_input=x, collapse=False, fold_bn=False, channels_last=False).module
    chosen = tune_collapse(out, {name: {DENSE: f[DENSE]} for name, f in exact_forms(comp).items()}, x)
    folded = fuse(out, inplace=False).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return folded.eval(), len(chosen)


def collapse_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, methods, batch): plans, median efficiency as chains and with collapse, plans reaching 0.7 each
    way, plans slower than the original each way, and how many had a chain collapsed (to two merged convs: None
    for rows without that column).  Per model, as the models may come from different runs."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["model"]), str(r["method"]), int(r["batch"])), []).append(r)
    out = []
    for (model, method, batch), group in sorted(groups.items(),
                                                key=lambda kv: (kv[0][0], kv[0][2], len(kv[0][1]), kv[0][1])):
        out.append({
            "model": model, "method": method, "batch": batch, "plans": len(group),
            "eff_chains": statistics.median(float(r["eff_chains"]) for r in group),
            "eff_collapse": statistics.median(float(r["eff_collapse"]) for r in group),
            "eff_dense_only": statistics.median(float(r["eff_dense_only"]) for r in group)
            if all("eff_dense_only" in r for r in group) else None,
            "reach_chains": sum(float(r["eff_chains"]) >= 0.7 for r in group),
            "reach_collapse": sum(float(r["eff_collapse"]) >= 0.7 for r in group),
            "slower_chains": sum(float(r["speedup_chains"]) < 1.0 for r in group),
            "slower_collapse": sum(float(r["speedup_collapse"]) < 1.0 for r in group),
            "with_collapse": sum(int(r["collapsed"]) > 0 for r in group),
            "with_merged": sum(int(r["merged"]) > 0 for r in group) if all("merged" in r for r in group) else None,
        })
    return out
