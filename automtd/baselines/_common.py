"""What the baseline generators share: layer roles, the SVD fallback, growth checks, option checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from automtd._errors import ConfigError
from automtd.methods import get_method
from automtd.plan import LayerChoice, LayerInfo, Plan, make_plan

__all__ = ["SVD_ALIAS", "roles", "fallback_method", "finish", "check_unit"]

SVD_ALIAS = ("svd_channel", "svd_linear")  # what fallback="svd" means, tried in order


def roles(infos: Sequence[LayerInfo], input_channels: int) -> tuple[str | None, str | None]:
    """Names of the first conv (reads the input channels, runs first) and the classifier (last, linear)."""
    called = [i for i in infos if i.in_hw != (0, 0)]
    first = called[0].name if called and called[0].shape.kind == "conv" else None
    if first is not None and called[0].shape.in_channels != input_channels:
        first = None
    last = called[-1].name if called and called[-1].shape.kind == "linear" else None
    return first, last


def fallback_method(fallback: str, info: LayerInfo) -> str | None:
    """The method ``fallback`` stands for on this layer (``svd`` picks the SVD variant), or None."""
    if fallback == "none":
        return None
    names = SVD_ALIAS if fallback == "svd" else (fallback,)
    for name in names:
        if get_method(name).unsupported_reason(info.shape) is None:
            return name
    return None


def finish(
    model: nn.Module,
    infos: Sequence[LayerInfo],
    chosen: Mapping[str, LayerChoice],
    notes: dict[str, str],
    *,
    allow_growth: bool,
    architecture: str,
    arch_kwargs: Mapping[str, object] | None,
    input_size: Sequence[int],
) -> Plan:
    """The plan of ``chosen``; a choice not smaller than its dense layer is kept dense unless ``allow_growth``."""
    by_name = {i.name: i for i in infos}
    choices: dict[str, LayerChoice] = {}
    for name, choice in chosen.items():
        shape = by_name[name].shape
        after = get_method(choice.method).params(shape, choice.ranks)
        if after >= shape.dense_params and not allow_growth:
            notes[name] = (
                f"{choice.method} at ranks {list(choice.ranks)} has {after} >= {shape.dense_params} dense params; "
                "kept dense"
            )
        else:
            choices[name] = choice
    return make_plan(
        model, choices, architecture=architecture, arch_kwargs=arch_kwargs, input_size=input_size, notes=notes
    )


def check_unit(value: float, what: str) -> float:
    v = float(value)
    if not 0.0 < v <= 1.0:
        raise ConfigError(f"{what} {value!r} is out of range; give a float in (0, 1], e.g. 0.25")
    return v
