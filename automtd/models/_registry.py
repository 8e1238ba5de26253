"""The model registry: builders registered by name, each with a :class:`ModelSpec`.

A builder is a function taking keyword-only arguments (``num_classes`` at least) and returning an
``nn.Module``.  :func:`register_model` refuses a second entry under the same name, the way
``torchvision.models.register_model`` does.  ``torchvision:<name>`` is resolved on the fly by
:mod:`automtd.models._torchvision` and ``package.module:factory`` (a user's own code) by
:mod:`automtd.models._import`; neither needs registration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

from automtd._errors import ConfigError
from automtd.models._import import build_user_model, is_user_model, user_model_spec
from automtd.models._spec import TORCHVISION_PREFIX, ModelSpec
from automtd.models._torchvision import build_torchvision, torchvision_spec

__all__ = ["register_model", "get_model", "get_model_spec", "list_models"]

Builder = Callable[..., nn.Module]
F = TypeVar("F", bound=Builder)

_BUILDERS: dict[str, Builder] = {}
_SPECS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> Callable[[F], F]:
    """Decorator: register a builder under ``spec.name``; duplicates are refused."""

    def wrap(fn: F) -> F:
        name = spec.name
        if name in _BUILDERS:
            raise ValueError(f"An entry is already registered under the name {name!r}.")
        if ":" in name:
            raise ValueError(f"model names may not contain ':' (torchvision:<name>, package.module:factory): {name!r}")
        _BUILDERS[name] = fn
        _SPECS[name] = spec
        return fn

    return wrap


def _unknown(name: str) -> ConfigError:
    return ConfigError(
        f"unknown model {name!r}; allowed: {', '.join(sorted(_BUILDERS))}, torchvision:<name> or your own "
        "package.module:factory (see `automtd models`)"
    )


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model, ``torchvision:<name>`` or ``package.module:factory``."""
    if not isinstance(name, str):
        raise ConfigError(f"model name must be a string, got {name!r}; e.g. 'cifar_resnet20'")
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_spec(name[len(TORCHVISION_PREFIX) :])
    if is_user_model(name):
        return user_model_spec(name)
    try:
        return _SPECS[name]
    except KeyError:
        raise _unknown(name) from None


def get_model(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered as ``name`` (or ``torchvision:<name>``, ``package.module:factory``)."""
    if not isinstance(name, str):
        raise ConfigError(f"model name must be a string, got {name!r}; e.g. 'cifar_resnet20'")
    if name.startswith(TORCHVISION_PREFIX):
        return build_torchvision(name[len(TORCHVISION_PREFIX) :], **kwargs)
    if is_user_model(name):
        return build_user_model(name, **kwargs)
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise _unknown(name) from None
    try:
        return builder(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not accept arguments {sorted(kwargs)}: {exc}; "
                          "use keyword arguments such as num_classes=10") from None


def list_models() -> list[str]:
    """Names of the registered models, sorted (``torchvision:<name>`` works too)."""
    return sorted(_BUILDERS)
