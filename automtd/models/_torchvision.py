"""``torchvision:<name>``: torchvision classification and segmentation models, built without pretrained weights.

Segmentation models (``torchvision.models.segmentation``) return a dict; automtd builds them with their
auxiliary head off and returns the ``"out"`` tensor from ``forward`` (a subclass overriding ``forward``
only, so the state-dict keys stay torchvision's and its weight files load unchanged).  Detection, video,
quantized and optical-flow models take or return more than one image tensor and are refused by name.

The input size and normalisation come from the weights enum's metadata (the crop size of a classifier,
the resize size of a segmentation model; reading it downloads nothing); a model without weights
metadata has no known input size and needs ``--input-size``.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch
from torch import nn

from automtd._errors import ConfigError
from automtd.models._spec import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_PREFIX, ModelSpec

__all__ = ["build_torchvision", "torchvision_spec", "torchvision_names", "torchvision_families"]

# families automtd cannot take: their forward is not one image tensor in, one tensor out
_REFUSED = ("detection", "video", "quantization", "optical_flow")


def _modules() -> dict[str, ModuleType]:
    import torchvision.models as tvm

    return {"classification": tvm, "segmentation": tvm.segmentation, "detection": tvm.detection,
            "video": tvm.video, "quantization": tvm.quantization, "optical_flow": tvm.optical_flow}


@functools.cache
def torchvision_families() -> dict[str, tuple[str, ...]]:
    """``{family: model names}`` as ``torchvision.models.list_models(module=...)`` lists them."""
    import torchvision.models as tvm

    return {family: tuple(sorted(tvm.list_models(module=mod))) for family, mod in _modules().items()}


def torchvision_names() -> list[str]:
    """Names automtd accepts after ``torchvision:``: every classification and segmentation model."""
    fams = torchvision_families()
    return sorted(fams["classification"] + fams["segmentation"])


def _family(name: str) -> str:
    fams = torchvision_families()
    for family in ("classification", "segmentation", *_REFUSED):
        if name in fams[family]:
            if family in _REFUSED:
                raise ConfigError(
                    f"torchvision model {TORCHVISION_PREFIX + name!r} is a {family} model, whose forward is not one "
                    "image tensor to one tensor; supported: torchvision classification and segmentation models"
                )
            return family
    names = torchvision_names()
    close = [n for n in names if n.startswith(name[:4])][:8] if name else []
    hint = f" (similar: {', '.join(close)})" if close else ""
    raise ConfigError(
        f"unknown torchvision model {TORCHVISION_PREFIX + name!r}; allowed: any classification or segmentation "
        f"model of torchvision.models.list_models(){hint}"
    )


def torchvision_spec(name: str) -> ModelSpec:
    """Input size, normalisation and classes from the weights metadata (no download); size unknown without it."""
    import torchvision.models as tvm

    family = _family(name)
    size: tuple[int, int, int] | None = None
    mean, std, classes = IMAGENET_MEAN, IMAGENET_STD, 21 if family == "segmentation" else 1000
    try:
        weights = tvm.get_model_weights(name).DEFAULT  # type: ignore[attr-defined]
    except (ValueError, KeyError, AttributeError):
        weights = None
    if weights is not None:
        tf = weights.transforms()
        side = getattr(tf, "crop_size", None) or getattr(tf, "resize_size", None)
        if side:
            size = (3, int(side[0]), int(side[-1]))
        mean = tuple(getattr(tf, "mean", mean))
        std = tuple(getattr(tf, "std", std))
        classes = len(weights.meta.get("categories") or []) or classes
    return ModelSpec(
        name=TORCHVISION_PREFIX + name,
        mean=mean,
        std=std,
        known_input_size=size,
        num_classes=classes,
        description=f"torchvision.models.{name} ({family}, random init, weights=None)",
    )


_OUT_CLASSES: dict[type[nn.Module], type[nn.Module]] = {}


def _tensor_output(cls: type[nn.Module]) -> type[nn.Module]:
    """A subclass of a torchvision segmentation model whose ``forward`` returns the ``"out"`` tensor."""
    if cls not in _OUT_CLASSES:

        def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
            return cls.forward(self, x)["out"]  # type: ignore[no-any-return]

        _OUT_CLASSES[cls] = type(cls.__name__, (cls,), {"forward": forward, "__module__": __name__,
                                                        "__doc__": f"{cls.__name__} returning its 'out' tensor"})
    return _OUT_CLASSES[cls]


def build_torchvision(name: str, **kwargs: object) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None, ...)``; never downloads.

    Classifiers default to 1000 classes; segmentation models to 21, with ``aux_loss`` off and
    ``weights_backbone=None``, returning their ``"out"`` tensor.
    """
    import torchvision.models as tvm

    family = _family(name)
    if kwargs.get("weights") is not None or kwargs.get("weights_backbone") is not None:
        raise ConfigError(
            f"torchvision model {name!r}: pretrained weights are not downloaded by automtd; "
            "remove 'weights' and load a checkpoint with --checkpoint instead"
        )
    kwargs.pop("weights", None)
    if family == "segmentation":
        kwargs["weights_backbone"] = None
        kwargs.setdefault("num_classes", 21)
        if kwargs.get("aux_loss"):
            raise ConfigError(f"torchvision model {name!r}: aux_loss=True gives two outputs; drop aux_loss")
    else:
        kwargs.setdefault("num_classes", 1000)
    try:
        model = tvm.get_model(name, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"torchvision model {name!r} rejected arguments {sorted(kwargs)}: {exc}") from None
    if family == "segmentation":
        model.__class__ = _tensor_output(type(model))
    return model
