"""What a model expects from its inputs: :class:`ModelSpec` and the usual normalisations."""

from __future__ import annotations

from dataclasses import dataclass

from automtd._errors import ConfigError

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "TORCHVISION_PREFIX", "ModelSpec"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects from its inputs.

    ``mean``/``std`` are the per-channel normalisation of inputs in ``[0, 1]`` that the model
    was (or is to be) trained with; the data pipeline applies them and checkpoints record them.
    ``known_input_size`` is ``None`` when the model does not say (a user's own model without
    ``automtd_spec``); :attr:`input_size` then raises a one-line error asking for it, so nothing
    silently runs at 3x32x32.
    """

    name: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    known_input_size: tuple[int, int, int] | None = None
    num_classes: int = 10
    description: str = ""

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` the model takes; a :class:`ConfigError` naming the fix when it is unknown."""
        if self.known_input_size is None:
            raise ConfigError(
                f"model {self.name!r} does not say its input size; pass --input-size C,H,W "
                "(or model.input_size: [C, H, W] in a config)"
            )
        return self.known_input_size

    @property
    def normalization(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}
