"""Tables (pandas) and text for plans and for a model's decomposable layers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from automtd.methods import LayerShape
from automtd.plan._layers import scan_layers
from automtd.plan._schema import RATIO_DEFINITIONS, Plan

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["describe_shape", "plan_table", "layers_table", "totals_text", "measure_text"]


def describe_shape(shape: LayerShape) -> str:
    """Short human form, e.g. ``conv 16->32 3x3 s2 p1`` or ``linear 64->10``."""
    if shape.kind == "linear":
        return f"linear {shape.in_channels}->{shape.out_channels}"
    kh, kw = shape.kernel_size
    text = f"conv {shape.in_channels}->{shape.out_channels} {kh}x{kw}"
    if shape.stride != (1, 1):
        text += f" s{shape.stride[0]}" if shape.stride[0] == shape.stride[1] else f" s{shape.stride}"
    if shape.dilation != (1, 1):
        text += f" d{shape.dilation[0]}" if shape.dilation[0] == shape.dilation[1] else f" d{shape.dilation}"
    if shape.groups != 1:
        text += f" g{shape.groups}"
    return text


def plan_table(plan: Plan) -> pd.DataFrame:
    """One row per replaced layer: shape, method, ranks, params/MACs before and after and their ratios."""
    import pandas as pd

    rows = [
        {
            "layer": lp.name,
            "shape": describe_shape(lp.shape),
            "in_hw": f"{lp.in_hw[0]}x{lp.in_hw[1]}",
            "method": lp.method,
            "ranks": ",".join(str(r) for r in lp.ranks),
            "params_before": lp.params_before,
            "params_after": lp.params_after,
            "params_x": round(lp.params_before / max(lp.params_after, 1), 2),
            "macs_before": lp.macs_before,
            "macs_after": lp.macs_after,
            "macs_x": round(lp.macs_before / max(lp.macs_after, 1), 2),
        }
        for lp in plan.layers
    ]
    return pd.DataFrame(rows).set_index("layer") if rows else pd.DataFrame(rows)


def layers_table(model: nn.Module, input_size: Sequence[int]) -> pd.DataFrame:
    """Every conv/linear layer of ``model``: shape, input size, params, MACs, applicable methods or skip reason."""
    import pandas as pd

    rows = []
    for info in scan_layers(model, input_size):
        called = info.in_hw != (0, 0)
        rows.append(
            {
                "layer": info.name,
                "shape": describe_shape(info.shape),
                "in_hw": f"{info.in_hw[0]}x{info.in_hw[1]}" if called else "-",
                "params": info.shape.dense_params,
                "macs": info.shape.dense_macs(info.in_hw) if called else 0,
                "methods": ",".join(info.methods) if info.skip_reason is None else f"skipped: {info.skip_reason}",
            }
        )
    return pd.DataFrame(rows).set_index("layer") if rows else pd.DataFrame(rows)


def totals_text(plan: Plan) -> str:
    """The whole-model totals and the two ratios, each printed with its definition."""
    t = plan.totals
    lines = [
        f"architecture: {plan.architecture} {plan.arch_kwargs or ''}".rstrip(),
        f"fingerprint: {plan.fingerprint}  input_size: {list(plan.input_size)}",
        f"layers replaced: {len(plan.layers)}  left dense (listed): {len(plan.skipped)}",
        f"params: {t.params_before:,} -> {t.params_after:,}",
        f"MACs:   {t.macs_before:,} -> {t.macs_after:,}",
        f"params_ratio = {plan.params_ratio:.3f}x  ({RATIO_DEFINITIONS['params_ratio']})",
        f"macs_ratio   = {plan.macs_ratio:.3f}x  ({RATIO_DEFINITIONS['macs_ratio']})",
    ]
    return "\n".join(lines)


def measure_text(report: Mapping[str, object]) -> str:
    """A :func:`~automtd.deploy.compare_models` report as a small text table (latency as median ms per batch)."""
    data = cast("Mapping[str, Any]", report)  # the nested layout compare_models documents
    lines = [f"{'':<11}{'params':>12}{'MACs':>15}  latency (median per batch, automtd.utils.forward_times)"]
    for label in ("original", "compressed"):
        entry = data[label]
        lat = "  ".join(
            f"batch {v['batch_size']}: {v['median_s'] * 1e3:.2f} ms ({v['threads']} threads)"
            for v in (entry.get("latency") or {}).values()
        )
        lines.append(f"{label:<11}{entry['params']:>12,}{entry['macs']:>15,}  {lat}")
        if entry.get("deploy"):
            deploy = entry["deploy"]
            notes = [
                f"{batch.replace('_', ' ')}: ranks padded in {len(chains)} conv chain(s)"
                for batch, chains in (deploy.get("padded") or {}).items()
                if chains
            ]
            notes += [
                f"{batch.replace('_', ' ')}: {len(chains)} factorized conv(s) run as their dense product"
                for batch, chains in (deploy.get("collapsed") or {}).items()
                if chains
            ]
            padded = "; ".join(notes)
            lines.append(
                f"{'':<11}timed in inference form: {', '.join(deploy['applied']) or 'as is'}"
                + (f" ({padded})" if padded else "")
            )
    lines.append(
        f"params_ratio {data['params_ratio']:.3f}x, macs_ratio {data['macs_ratio']:.3f}x (original / compressed)"
    )
    return "\n".join(lines)
