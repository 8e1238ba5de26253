"""``torchvision:<name>``: any torchvision classification model, built without pretrained weights."""

from __future__ import annotations

from torch import nn

from automtd._errors import ConfigError
from automtd.models._spec import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_PREFIX, ModelSpec

__all__ = ["build_torchvision", "torchvision_spec", "torchvision_names"]


def torchvision_names() -> list[str]:
    """Names of torchvision's classification models (``torchvision.models.list_models(models)``)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _check(name: str) -> None:
    names = torchvision_names()
    if name not in names:
        close = [n for n in names if n.startswith(name[:4])][:8] if name else []
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"unknown torchvision model {TORCHVISION_PREFIX + name!r}; allowed: any of "
            f"torchvision.models.list_models(torchvision.models){hint}"
        )


def torchvision_spec(name: str) -> ModelSpec:
    _check(name)
    return ModelSpec(
        name=TORCHVISION_PREFIX + name,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=(3, 224, 224),
        num_classes=1000,
        description=f"torchvision.models.{name} (random init, weights=None)",
    )


def build_torchvision(name: str, **kwargs: object) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, num_classes=...)`` (default 1000); never downloads."""
    import torchvision.models as tvm

    _check(name)
    if kwargs.get("weights") is not None or kwargs.get("weights_backbone") is not None:
        raise ConfigError(
            f"torchvision model {name!r}: pretrained weights are not downloaded by automtd; "
            "remove 'weights' and load a checkpoint with --checkpoint instead"
        )
    kwargs.pop("weights", None)
    num_classes = kwargs.pop("num_classes", 1000)
    try:
        return tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"torchvision model {name!r} rejected arguments {sorted(kwargs)}: {exc}") from None
