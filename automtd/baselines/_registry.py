"""The baseline registry: a generator's name, function, summary and options, and the one entry point."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from automtd._errors import ConfigError
from automtd.plan import Plan, plan_input_size

__all__ = ["Baseline", "register_baseline", "get_baseline", "list_baselines", "run_baseline"]


@dataclass(frozen=True)
class Baseline:
    """A named plan generator: ``func(model, **options, architecture=, arch_kwargs=, input_size=) -> Plan``."""

    name: str
    func: Callable[..., Plan]
    summary: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


_BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> Baseline:
    if baseline.name in _BASELINES:
        raise ValueError(f"An entry is already registered under the name {baseline.name!r}.")
    _BASELINES[baseline.name] = baseline
    return baseline


def get_baseline(name: str) -> Baseline:
    """The baseline called ``name`` (``vbmf_tucker2`` is read as ``vbmf-tucker2``, as in search configs)."""
    try:
        return _BASELINES[name.replace("_", "-")]
    except KeyError:
        raise ConfigError(f"unknown baseline {name!r}; allowed: {', '.join(list_baselines())}") from None


def list_baselines() -> list[str]:
    return sorted(_BASELINES)


def run_baseline(
    name: str,
    model: nn.Module,
    options: Mapping[str, object],
    *,
    architecture: str = "custom",
    arch_kwargs: Mapping[str, object] | None = None,
    input_size: Sequence[int] | None = None,
) -> Plan:
    """Run baseline ``name`` with ``options`` (``None`` values are dropped); wrong options are errors.

    The one entry point of the CLI and of the search's warm start, e.g.
    ``run_baseline("ht2-energy", model, {"energy": 0.8}, architecture="cifar_resnet20")``.
    """
    input_size = plan_input_size(architecture, input_size)
    base = get_baseline(name)

    def show(keys: Sequence[str]) -> str:
        return ", ".join(f"{k} (--{k.replace('_', '-')})" for k in keys)

    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in base.required + base.optional]
    if unknown:
        takes = show(base.required + base.optional) or "no options"
        raise ConfigError(f"baseline {name!r} does not take {show(unknown)}; it takes: {takes}")
    missing = [k for k in base.required if k not in given]
    if missing:
        raise ConfigError(f"baseline {name!r} needs {show(missing)}; give a value for each")
    return base.func(model, **given, architecture=architecture, arch_kwargs=arch_kwargs, input_size=input_size)
