"""Checkpoints: own-format round trip, third-party files, and every refusal with its message."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from automtd import CheckpointError
from automtd.checkpoints import load_checkpoint, read_meta, read_state_dict, save_checkpoint
from automtd.models import IMAGENET_MEAN, get_model


class NotATensor:
    """A custom class: pickling it needs code, which weights_only loading refuses."""

    def __init__(self) -> None:
        self.value = 3


def _trained_like_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = get_model("cifar_resnet20")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model


def test_own_format_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = _trained_like_model()
    out = save_checkpoint(
        tmp_path / "ck",
        model,
        architecture="cifar_resnet20",
        arch_kwargs={"num_classes": 10},
        dataset="cifar10",
        accuracy={"test": 91.73},
    )
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.safetensors"]
    loaded, meta = load_checkpoint(out)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    assert meta["format_version"] == 1
    assert meta["architecture"] == {"name": "cifar_resnet20", "kwargs": {"num_classes": 10}}
    assert meta["normalization"]["mean"] == list(IMAGENET_MEAN) and meta["dataset"] == "cifar10"
    assert meta["accuracy"] == {"test": 91.73} and meta["plan"] is None and meta["num_params"] == 269_722
    assert not loaded.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))


def test_no_pickle_in_own_format(tmp_path: Path) -> None:
    out = save_checkpoint(tmp_path / "ck", get_model("cifar_resnet20"), architecture="cifar_resnet20")
    assert (out / "model.safetensors").read_bytes()[8:9] == b"{"  # safetensors: u64 header size, then JSON
    json.loads((out / "meta.json").read_text())


def test_third_party_akamaster_file(resnet20_checkpoint: Path) -> None:
    state = read_state_dict(resnet20_checkpoint)
    assert "conv1.weight" in state and not any(k.startswith("module.") for k in state)
    model, meta = load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20")
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert meta["source"] == str(resnet20_checkpoint) and meta["format_version"] is None


def test_wrapped_and_prefixed_state_dict(tmp_path: Path) -> None:
    model = _trained_like_model()
    path = tmp_path / "w.pth"
    torch.save({"state_dict": OrderedDict(("module." + k, v) for k, v in model.state_dict().items()), "epoch": 3}, path)
    loaded, _ = load_checkpoint(path, model_name="cifar_resnet20")
    assert torch.equal(loaded.layer3[2].bn2.running_var, model.layer3[2].bn2.running_var)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nothing.th' does not exist; pass a checkpoint"):
        load_checkpoint(tmp_path / "nothing.th", model_name="cifar_resnet20")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no meta.json"):
        load_checkpoint(tmp_path / "empty")


def test_corrupt_checkpoints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.th"
    bad.write_bytes(b"this is not a torch file" * 10)
    with pytest.raises(CheckpointError, match=r"is not a checkpoint \(neither a torch zip file nor a pickle\)"):
        load_checkpoint(bad, model_name="cifar_resnet20")
    bad.write_bytes(b"\x80\x02" + bytes(range(256)) * 4)  # a pickle's first bytes, then garbage: not "for safety"
    with pytest.raises(CheckpointError, match=r"is not a checkpoint \(its bytes do not unpickle\)"):
        load_checkpoint(bad, model_name="cifar_resnet20")
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # a damaged zip
    with pytest.raises(CheckpointError, match=r"cannot be read .*corrupt or not a torch file"):
        load_checkpoint(bad, model_name="cifar_resnet20")
    out = save_checkpoint(tmp_path / "ck", get_model("cifar_resnet20"), architecture="cifar_resnet20")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"model.safetensors' is corrupt"):
        load_checkpoint(out)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_checkpoint(out)
    (out / "meta.json").write_text(json.dumps({"format_version": 99, "architecture": {"name": "cifar_resnet20"}}))
    with pytest.raises(CheckpointError, match="has format_version 99; this automtd reads 1"):
        read_meta(out)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match=r"needs full unpickling .*refused for safety; re-save it as a"):
        load_checkpoint(path, model_name="cifar_resnet20")
    path2 = tmp_path / "list.pth"
    torch.save([1, 2, 3], path2)
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_checkpoint(path2, model_name="cifar_resnet20")


def test_shape_mismatch_names_the_key(resnet20_checkpoint: Path) -> None:
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch at 'linear.weight': checkpoint \(10, 64\) vs model "
        r"\(100, 64\)",
    ):
        load_checkpoint(resnet20_checkpoint, model_name="cifar_resnet20", model_kwargs={"num_classes": 100})


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    state = get_model("cifar_resnet20").state_dict()
    del state["linear.bias"]
    state["head.extra"] = torch.zeros(3)
    path = tmp_path / "keys.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing \[linear.bias\], unexpected \[head.extra\]"):
        load_checkpoint(path, model_name="cifar_resnet20")


def test_third_party_file_needs_a_model_name(resnet20_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"does not record its architecture; pass the model name \(--model"):
        load_checkpoint(resnet20_checkpoint)
    out = save_checkpoint(tmp_path / "ck", get_model("cifar_resnet20"), architecture="cifar_resnet20")
    with pytest.raises(CheckpointError, match="is a 'cifar_resnet20' but model 'cifar_resnet32' was asked for"):
        load_checkpoint(out, model_name="cifar_resnet32")


def test_compressed_checkpoint_round_trip(tmp_path: Path) -> None:
    plan_mod = pytest.importorskip("automtd.plan")
    from automtd.metrics import count_params

    model = _trained_like_model()
    layers = plan_mod.decomposable_layers(model, (3, 32, 32))
    target = next(info for info in layers if info.name == "layer2.1.conv1")
    plan = plan_mod.make_plan(
        model, {target.name: plan_mod.LayerChoice("tucker2", (8, 8))},
        architecture="cifar_resnet20", input_size=(3, 32, 32)
    )
    plan_mod.apply_plan(model, plan)
    out = save_checkpoint(tmp_path / "c", model, architecture="cifar_resnet20", plan=plan.to_dict())
    loaded, meta = load_checkpoint(out)
    assert meta["plan"] == plan.to_dict()
    assert count_params(loaded) == count_params(model) < 269_722
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
