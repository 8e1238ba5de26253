"""The model registry, the CIFAR ResNets / VGGs, torchvision models and the pretrained ResNet-20 accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from automtd import ConfigError
from automtd.models import (
    CIFAR10_MEAN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelSpec,
    get_model,
    get_model_spec,
    list_models,
    register_model,
)

CIFAR_MODELS = [
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
    "cifar_resnet110",
    "cifar_vgg11_bn",
    "cifar_vgg16_bn",
]
# parameter counts published in ../shared/weights/cifar10_resnet_akamaster/README.md
PUBLISHED_PARAMS = {"cifar_resnet20": 269_722, "cifar_resnet32": 464_154, "cifar_resnet56": 853_018}


def test_registry_lists_the_cifar_models() -> None:
    assert set(CIFAR_MODELS) <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_models_forward(name: str) -> None:
    model = get_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_resnet_parameter_counts_match_published(name: str) -> None:
    assert sum(p.numel() for p in get_model(name).parameters()) == PUBLISHED_PARAMS[name]


def test_resnet_option_a_shortcut_has_no_parameters() -> None:
    model = get_model("cifar_resnet20")
    block = model.layer2[0]
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    x = torch.randn(1, 16, 32, 32)
    expected = torch.nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(block.shortcut(x), expected)


def test_specs_carry_normalisation() -> None:
    res = get_model_spec("cifar_resnet56")
    assert res.mean == IMAGENET_MEAN and res.std == IMAGENET_STD and res.input_size == (3, 32, 32)
    assert get_model_spec("cifar_vgg11_bn").mean == CIFAR10_MEAN
    tv = get_model_spec("torchvision:resnet18")
    assert tv.input_size == (3, 224, 224) and tv.mean == IMAGENET_MEAN


def test_builders_are_keyword_only() -> None:
    from automtd.models._cifar_resnet import cifar_resnet20

    with pytest.raises(TypeError):
        cifar_resnet20(10)  # type: ignore[misc]


def test_unknown_model_name_message() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet21'; allowed: .*cifar_resnet20.*torchvision:<name>"):
        get_model("resnet21")
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        get_model_spec("nope")


def test_bad_builder_argument_is_config_error() -> None:
    with pytest.raises(ConfigError, match="does not accept arguments"):
        get_model("cifar_resnet20", width=2)


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered under the name 'cifar_resnet20'"):

        @register_model(ModelSpec(name="cifar_resnet20"))
        def _again(*, num_classes: int = 10) -> nn.Module:
            return nn.Linear(1, num_classes)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_models_by_name(name: str) -> None:
    model = get_model(f"torchvision:{name}", num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_torchvision_unknown_and_weights_refused() -> None:
    with pytest.raises(ConfigError, match="unknown torchvision model 'torchvision:resnet19'"):
        get_model("torchvision:resnet19")
    with pytest.raises(ConfigError, match="pretrained weights are not downloaded"):
        get_model("torchvision:resnet18", weights="DEFAULT")


def test_pretrained_resnet20_full_test_accuracy(data_root: Path, resnet20_checkpoint: Path) -> None:
    """The akamaster ResNet-20 reproduces its published 91.73 % on all 10,000 CIFAR-10 test images."""
    from automtd.checkpoints import load_checkpoint
    from automtd.data import get_dataset, make_loader
    from automtd.train import evaluate

    torch.set_num_threads(2)
    model, meta = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    norm = meta["normalization"]
    assert tuple(norm["mean"]) == IMAGENET_MEAN
    test = get_dataset("cifar10", "test", root=data_root, mean=norm["mean"], std=norm["std"])
    assert len(test) == 10_000
    acc = evaluate(model, make_loader(test, batch_size=1000, shuffle=False), device="cpu")
    assert acc == pytest.approx(91.73, abs=0.05)
