"""docs/own-model.md, run: every command of the page on tiny inputs, and a user's own model end to end.

The page's ```bash blocks are executed in-process (``automtd.cli.main.main``) in a temporary folder holding
what the page assumes: an image folder (PNGs the test writes), ``resnet18.pth`` (random weights, 3 classes),
``mymodels.py`` (the page's ```python block) and its ``net.pth``.  Only the input size is made small: the
page's 3,224,224 becomes 3,32,32.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import automtd.models
from automtd import ConfigError
from automtd.checkpoints import load_checkpoint, save_checkpoint
from automtd.cli.main import main
from automtd.models import get_model, get_model_spec
from automtd.plan import make_plan

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "own-model.md"
SMALL = {"3,224,224": "3,32,32", "[3, 224, 224]": "[3, 32, 32]"}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)


def _small(text: str) -> str:
    for big, small in SMALL.items():
        text = text.replace(big, small)
    return text


@pytest.fixture
def fresh_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """No module trusted yet (the CLI trusts what it is told within this process)."""
    monkeypatch.setattr(sys.modules["automtd.models._import"], "_TRUSTED", set())
    monkeypatch.delenv("AUTOMTD_PLUGINS", raising=False)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_trust: None) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 8), ("val", 2)):
        for c in range(3):
            folder = tmp_path / "images" / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = (torch.rand(36, 36, 3, generator=gen) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    torch.manual_seed(0)
    torch.save(get_model("torchvision:resnet18", num_classes=3).state_dict(), tmp_path / "resnet18.pth")
    (tmp_path / "mymodels.py").write_text(_blocks("python")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    (tmp_path / "search.yaml").write_text(_small(_blocks("yaml")[0]))
    import mymodels  # noqa: PLC0415 - written just above

    torch.save(mymodels.make_net(num_classes=3).state_dict(), tmp_path / "net.pth")
    return tmp_path


def _run_block(block: str, monkeypatch: pytest.MonkeyPatch, root: Path) -> list[str]:
    ran = []
    for line in _small(block).splitlines():
        line = line.split(" #")[0].strip()
        if not line:
            continue
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            monkeypatch.setenv(key, value.replace("$PWD", str(root)))
            continue
        words = shlex.split(line)
        assert words[0] == "automtd", line
        assert main(words[1:]) == 0, line
        ran.append(words[1])
    return ran


def test_every_command_of_the_page_runs(workspace: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ran = [cmd for block in _blocks("bash") for cmd in _run_block(block, monkeypatch, workspace)]
    assert ran == ["inspect", "plan", "apply", "evaluate", "export-onnx", "search", "plan", "apply", "evaluate"]
    assert (workspace / "resnet18-tucker2.onnx").is_file()
    meta = load_checkpoint(workspace / "net-tucker2")[1]
    assert meta["architecture"] == {"name": "mymodels:make_net", "kwargs": {"num_classes": 3}}
    assert meta["input_size"] == [3, 32, 32] and meta["plan"]
    assert "top-1" in capsys.readouterr().out


def test_a_search_of_a_user_model(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (workspace / "search.yaml").read_text()
    text = text.replace("torchvision:resnet18", "mymodels:make_net").replace("resnet18.pth", "net.pth")
    (workspace / "net.yaml").write_text(text.replace("resnet18-folder", "net-folder"))
    assert main(["search", "net.yaml", "--n-trials", "1"]) == 0
    assert (workspace / "studies" / "net-folder.db").is_file()


def test_data_never_chooses_code_to_import(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mymodels  # noqa: PLC0415 - on sys.path through the fixture

    save_checkpoint(workspace / "ck", mymodels.make_net(num_classes=3), architecture="mymodels:make_net",
                    arch_kwargs={"num_classes": 3}, input_size=(3, 32, 32))
    with pytest.raises(ConfigError) as err:
        load_checkpoint(workspace / "ck")
    assert str(err.value) == (f"checkpoint {str(workspace / 'ck')!r} was built by user code 'mymodels:make_net'; "
                              "pass --model mymodels:make_net (or add mymodels to AUTOMTD_PLUGINS) to import it")
    with pytest.raises(ConfigError, match="user code 'mymodels:make_net'"):  # a plan naming it, for a weights file
        load_checkpoint(workspace / "net.pth", model_name="mymodels:make_net", model_kwargs={"num_classes": 3})
    assert main(["evaluate", "--checkpoint", "ck", "--data", "imagefolder", "--data-root", "images"]) == 2
    assert main(["torchscript", "--checkpoint", "ck", "-o", "m.pt"]) == 2 and not (workspace / "m.pt").exists()
    assert main(["torchscript", "--checkpoint", "ck", "--model", "mymodels:make_net", "-o", "m.pt"]) == 0
    sys.modules["automtd.models._import"]._TRUSTED.clear()
    monkeypatch.setenv("AUTOMTD_PLUGINS", "othermod, mymodels")
    assert load_checkpoint(workspace / "ck")[1]["architecture"]["name"] == "mymodels:make_net"


def test_the_command_line_names_the_module(workspace: Path) -> None:
    assert main(["plan", "--model", "mymodels:make_net", "--model-arg", "num_classes=3", "--checkpoint", "net.pth",
                 "--baseline", "uniform", "--method", "tucker2", "--fraction", "0.5", "-o", "p.yaml"]) == 0
    sys.modules["automtd.models._import"]._TRUSTED.clear()  # a new process: nothing named yet
    argv = ["apply", "--plan", "p.yaml", "--checkpoint", "net.pth", "--no-bn-recalibration", "--calibrate", "0",
            "-o", "out"]
    assert main(argv) == 2 and not (workspace / "out").exists()
    assert main([*argv, "--model", "mymodels:make_net"]) == 0


BAD = {
    "my-models:make": "is not of the form package.module:factory",
    "nosuchmodule_xyz:make": "module 'nosuchmodule_xyz' cannot be imported; is it on PYTHONPATH / installed?",
    "mymodels:nothing": "module 'mymodels' has no attribute 'nothing'",
    "mymodels:NOT_CALLABLE": "'NOT_CALLABLE' is a int, not callable",
    "mymodels:not_a_module": "returned a str, not an nn.Module",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_user_model_names_get_one_line(workspace: Path, name: str) -> None:
    with (workspace / "mymodels.py").open("a") as fh:
        fh.write("\nNOT_CALLABLE = 3\n\n\ndef not_a_module():\n    return 'x'\n")
    sys.modules.pop("mymodels", None)
    with pytest.raises(ConfigError) as err:
        get_model(name)
    assert BAD[name] in str(err.value) and "\n" not in str(err.value)


def test_bad_arguments_and_unknown_input_size(workspace: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not accept arguments \['depth'\]"):
        get_model("mymodels:make_net", depth=3)
    (workspace / "plain.py").write_text("from torch import nn\n\n\ndef net():\n    return nn.Linear(4, 2)\n")
    spec = get_model_spec("plain:net")
    assert spec.mean == automtd.models.IMAGENET_MEAN and spec.known_input_size is None
    with pytest.raises(ConfigError, match="does not say its input size; pass --input-size"):
        spec.input_size  # noqa: B018 - the property raises
    assert main(["inspect", "--model", "plain:net"]) == 2
    assert main(["inspect", "--model", "plain:net", "--input-size", "3", "8", "8"]) == 2  # Linear(4) on 8x8: refused
    assert get_model_spec("mymodels:make_net").input_size == (3, 32, 32)  # from automtd_spec


def test_make_plan_needs_an_input_size_for_an_ad_hoc_module() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten())
    with pytest.raises(ConfigError, match=r"architecture 'custom' has no known input size"):
        make_plan(net, {})
    plan = make_plan(net, {}, input_size=(3, 8, 8))
    assert plan.architecture == "custom" and tuple(plan.input_size) == (3, 8, 8)


def test_torchvision_families() -> None:
    assert "deeplabv3_resnet50" in automtd.models.torchvision_names()
    assert get_model_spec("torchvision:resnet18").input_size == (3, 224, 224)
    assert get_model_spec("torchvision:inception_v3").input_size == (3, 299, 299)
    for name, family in (("fasterrcnn_resnet50_fpn", "detection"), ("r3d_18", "video"),
                         ("quantized_resnet18", "quantization"), ("raft_small", "optical_flow")):
        with pytest.raises(ConfigError, match=f"is a {family} model.*supported: torchvision classification and "
                                              "segmentation"):
            get_model(f"torchvision:{name}")


def _close(a: object, b: object) -> bool:
    """Outputs compared generically: tensors, or dicts of tensors."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max())))


def test_deeplabv3_full_rank_plan_reproduces_the_dense_output(tmp_path: Path) -> None:
    torch.manual_seed(0)
    assert main(["plan", "--model", "torchvision:deeplabv3_resnet50", "--model-arg", "num_classes=3",
                 "--input-size", "3,64,64", "--baseline", "uniform", "--method", "svd_channel", "--fraction", "1.0",
                 "--allow-growth", "-o", str(tmp_path / "p.yaml")]) == 0
    from automtd.plan import Plan, apply_plan  # noqa: PLC0415

    plan = Plan.load(tmp_path / "p.yaml")
    model = get_model("torchvision:deeplabv3_resnet50", num_classes=3).eval()
    assert len(plan.layers) > 50
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        dense = model(x)
        assert isinstance(dense, torch.Tensor) and dense.shape == (1, 3, 64, 64)
        apply_plan(model, plan.__class__.from_dict({**plan.to_dict()}), seed=0)
        assert _close(model(x), dense)


def test_model_args_are_json_else_strings_and_input_sizes_parse() -> None:
    from automtd.cli._plan import parse_input_size, parse_model_args  # noqa: PLC0415

    assert parse_model_args(["n=3", "flag=true", "sizes=[1, 2]", "act=relu", "empty="]) == {
        "n": 3, "flag": True, "sizes": [1, 2], "act": "relu", "empty": ""}
    for bad in ("n", "=3", "a b=1"):
        with pytest.raises(ConfigError, match="is not KEY=VALUE"):
            parse_model_args([bad])
    assert parse_input_size(["3,64,48"]) == parse_input_size(["3", "64", "48"]) == (3, 64, 48)
    assert parse_input_size(None) is None
    for bad in (["3,64"], ["3,x,4"], ["0,4,4"]):
        with pytest.raises(ConfigError, match="--input-size .* is invalid; give C,H,W"):
            parse_input_size(bad)


def test_registered_names_may_not_hold_a_colon() -> None:
    with pytest.raises(ValueError, match="may not contain ':'"):
        automtd.models.register_model(automtd.models.ModelSpec(name="a:b"))(lambda: torch.nn.Identity())


def test_plan_at_full_fraction_says_layers_stay_dense(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "cifar_resnet20", "--baseline", "uniform", "--method", "tucker2", "--fraction",
                 "1.0", "-o", str(tmp_path / "p.yaml")]) == 0
    assert "0 layer(s) decomposed: at --fraction 1.0" in capsys.readouterr().out
