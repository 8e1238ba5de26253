"""A user's own model: ``package.module:factory`` names, imported only when the user named the module.

``--model mymodels:make_net`` (or ``model.name: mymodels:make_net`` in a config) imports ``mymodels``
(``importlib.import_module``; it must be on ``PYTHONPATH`` or installed) and calls ``make_net(**kwargs)``,
which must return an ``nn.Module``.  The factory may carry an ``automtd_spec`` attribute saying what the
model expects from its inputs: a :class:`ModelSpec` or a mapping with any of ``input_size`` (C, H, W),
``mean``, ``std``, ``num_classes``.  Without it the normalisation is ImageNet's and the input size must be
given (``--input-size`` / ``model.input_size``).

Code to run is never chosen by data: a ``module:factory`` name read from a checkpoint, a plan file or a
study database is imported only when the user named that module on the command line
(:func:`trust_user_model`, called by the CLI for ``--model``) or lists it in ``$AUTOMTD_PLUGINS``
(comma-separated module names); :func:`require_trusted` enforces it where such names are read.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping

from torch import nn

from automtd._errors import ConfigError
from automtd.models._spec import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_PREFIX, ModelSpec

__all__ = [
    "PLUGINS_ENV",
    "SPEC_ATTRIBUTE",
    "build_user_model",
    "import_user_object",
    "is_user_model",
    "require_trusted",
    "split_user_model",
    "trust_user_model",
    "user_model_spec",
]

PLUGINS_ENV = "AUTOMTD_PLUGINS"
SPEC_ATTRIBUTE = "automtd_spec"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_ATTR = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_TRUSTED: set[str] = set()


def is_user_model(name: str) -> bool:
    """Whether ``name`` is of the ``package.module:factory`` form (not ``torchvision:<name>``)."""
    return isinstance(name, str) and ":" in name and not name.startswith(TORCHVISION_PREFIX)


def split_user_model(name: str) -> tuple[str, str]:
    """``(module, factory)`` of ``package.module:factory``; a one-line :class:`ConfigError` otherwise."""
    module, sep, attr = name.partition(":")
    if not sep or not _MODULE.fullmatch(module) or not _ATTR.fullmatch(attr):
        raise ConfigError(
            f"model {name!r} is not of the form package.module:factory; write e.g. mymodels:make_net "
            "(a module on PYTHONPATH and a function returning an nn.Module)"
        )
    return module, attr


def trust_user_model(name: str) -> None:
    """Allow the module of ``name`` (``pkg.mod:factory`` or ``pkg.mod``) to be imported when data names it."""
    module = split_user_model(name)[0] if ":" in name else name
    split_user_model(module + ":_")  # validates the module part
    _TRUSTED.add(module)


def _plugin_modules() -> set[str]:
    return {m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()}


def require_trusted(name: str, source: str, *, verb: str = "was built by") -> None:
    """Refuse ``name`` read from ``source`` (e.g. ``"checkpoint 'DIR'"``) unless the user named its module."""
    if not is_user_model(name):
        return
    module = split_user_model(name)[0]
    if module in _TRUSTED or module in _plugin_modules():
        return
    raise ConfigError(
        f"{source} {verb} user code {name!r}; pass --model {name} (or add {module} to {PLUGINS_ENV}) "
        "to import it"
    )


def _factory(name: str) -> Callable[..., object]:
    return import_user_object(name, kind="model")


def import_user_object(name: str, *, kind: str = "model") -> Callable[..., object]:
    """The callable ``factory`` of ``package.module:factory`` (``kind`` names it in errors: model, dataset)."""
    module_name, attr = split_user_model(name)
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigError(
                f"{kind} {name!r}: module {module_name!r} cannot be imported; is it on PYTHONPATH / installed?"
            ) from None
        raise ConfigError(f"{kind} {name!r}: importing {module_name!r} failed: {exc}; fix that module") from None
    except Exception as exc:  # noqa: BLE001 - any error raised by the user's module while importing
        raise ConfigError(
            f"{kind} {name!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}; fix that module"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{kind} {name!r}: module {module_name!r} has no attribute {attr!r}; check the name "
                              "after the colon")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{kind} {name!r}: {attr!r} is a {type(obj).__name__}, not callable; point at a "
                          f"function or class returning the {kind}")
    return obj


def build_user_model(name: str, **kwargs: object) -> nn.Module:
    """Import ``package.module`` and call ``factory(**kwargs)``; the result must be an ``nn.Module``."""
    factory = _factory(name)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} does not accept arguments {sorted(kwargs)}: {exc}; "
                          "pass the factory's keyword arguments with --model-arg KEY=VALUE / model.kwargs") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} returned a {type(model).__name__}, not an nn.Module; "
                          "make the factory return the network")
    return model


def user_model_spec(name: str) -> ModelSpec:
    """The spec of a user model: the factory's ``automtd_spec`` if any, else ImageNet normalisation, size unknown."""
    declared = getattr(_factory(name), SPEC_ATTRIBUTE, None)
    if declared is None:
        return ModelSpec(name=name, mean=IMAGENET_MEAN, std=IMAGENET_STD, known_input_size=None, num_classes=0,
                         description=f"user model {name}")
    if isinstance(declared, ModelSpec):
        fields: Mapping[str, object] = {"input_size": declared.known_input_size, "mean": declared.mean,
                                        "std": declared.std, "num_classes": declared.num_classes}
    elif isinstance(declared, Mapping):
        fields = declared
    else:
        raise ConfigError(f"model {name!r}: {SPEC_ATTRIBUTE} is a {type(declared).__name__}; give a ModelSpec or "
                          "a dict with input_size, mean, std")
    unknown = set(fields) - {"input_size", "mean", "std", "num_classes"}
    if unknown:
        raise ConfigError(f"model {name!r}: {SPEC_ATTRIBUTE} has unknown keys {sorted(unknown)}; allowed: "
                          "input_size, mean, std, num_classes")
    try:
        size = fields.get("input_size")
        known = None if size is None else _size(size)
        mean = tuple(float(v) for v in fields.get("mean", IMAGENET_MEAN))  # type: ignore[attr-defined]
        std = tuple(float(v) for v in fields.get("std", IMAGENET_STD))  # type: ignore[attr-defined]
        classes = int(fields.get("num_classes", 0))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise ConfigError(f"model {name!r}: {SPEC_ATTRIBUTE} {dict(fields)!r} is invalid; give input_size as "
                          "(C, H, W) and mean/std as lists of numbers") from None
    return ModelSpec(name=name, mean=mean, std=std, known_input_size=known, num_classes=classes,
                     description=f"user model {name}")


def _size(value: object) -> tuple[int, int, int]:
    items = [int(v) for v in value]  # type: ignore[attr-defined]
    if len(items) != 3 or min(items) <= 0:
        raise ValueError(value)
    return items[0], items[1], items[2]
