"""Model registry: CIFAR ResNets (option A), CIFAR VGG-BN, ``torchvision:<name>`` and ``package.module:factory``.

Importing this package registers the built-in models.
"""

from automtd.models import _cifar_resnet, _cifar_vgg  # noqa: F401  (register the built-in models)
from automtd.models._cifar_resnet import BasicBlock, CifarResNet
from automtd.models._cifar_vgg import CifarVGG
from automtd.models._import import (
    PLUGINS_ENV,
    SPEC_ATTRIBUTE,
    import_user_object,
    is_user_model,
    require_trusted,
    split_user_model,
    trust_user_model,
)
from automtd.models._registry import get_model, get_model_spec, list_models, register_model
from automtd.models._spec import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_PREFIX, ModelSpec
from automtd.models._torchvision import torchvision_families, torchvision_names

__all__ = [
    "TORCHVISION_PREFIX",
    "BasicBlock",
    "CifarResNet",
    "CifarVGG",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelSpec",
    "PLUGINS_ENV",
    "SPEC_ATTRIBUTE",
    "get_model",
    "get_model_spec",
    "import_user_object",
    "is_user_model",
    "list_models",
    "register_model",
    "require_trusted",
    "split_user_model",
    "torchvision_families",
    "torchvision_names",
    "trust_user_model",
]
