"""Plans: layer discovery, fingerprint, make_plan validation, the strict YAML/JSON schema and its round trips."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from automtd import ConfigError, RankError
from automtd.plan import (
    KEEP_DENSE,
    RATIO_DEFINITIONS,
    LayerChoice,
    Plan,
    PlanFile,
    decomposable_layers,
    make_plan,
    model_fingerprint,
    plan_table,
    scan_layers,
    totals_text,
)

SIZE = (3, 16, 16)


class TinyNet(nn.Module):
    """1x7 / 7x1 / dilated / strided / depthwise / 1x1 convs, an unused conv and a classifier."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.row = nn.Conv2d(width, 12, (1, 7), padding=(0, 3))
        self.col = nn.Conv2d(12, 12, (7, 1), padding=(3, 0))
        self.dil = nn.Conv2d(12, 16, 3, padding=2, dilation=2, stride=2)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.unused = nn.Conv2d(16, 16, 3)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.col(self.row(x)))
        x = self.pw(self.dw(self.dil(x)))
        return self.fc(x.mean(dim=(2, 3)))


CHOICES = {
    "row": LayerChoice("tucker2", (4, 4)),
    "col": LayerChoice("ht2", (4, 4, 4)),
    "dil": LayerChoice("svd_spatial", (4,)),
    "pw": LayerChoice("svd_channel", (4,)),
    "fc": LayerChoice("svd_linear", (3,)),
}


def _plan(model: nn.Module) -> Plan:
    return make_plan(model, CHOICES, architecture="tiny", arch_kwargs={"width": 8}, input_size=SIZE)


def test_scan_finds_layers_in_forward_order_with_reasons() -> None:
    infos = {i.name: i for i in scan_layers(TinyNet(), SIZE)}
    assert list(infos)[:7] == ["stem", "row", "col", "dil", "dw", "pw", "fc"]
    assert infos["dil"].in_hw == (16, 16) and infos["dw"].in_hw == (8, 8)
    assert "depthwise" in (infos["dw"].skip_reason or "")
    assert "not called" in (infos["unused"].skip_reason or "")
    assert infos["fc"].methods == ["svd_linear"]
    assert "ht2" in infos["row"].methods and "svd_channel" in infos["pw"].methods
    assert [i.name for i in decomposable_layers(TinyNet(), SIZE)] == ["stem", "row", "col", "dil", "pw", "fc"]


def test_fingerprint_depends_on_layer_shapes_not_weights() -> None:
    a, b = TinyNet(), TinyNet()
    assert model_fingerprint(a, SIZE) == model_fingerprint(b, SIZE)
    assert model_fingerprint(TinyNet(width=6), SIZE) != model_fingerprint(a, SIZE)


def test_make_plan_counts_and_order() -> None:
    model = TinyNet()
    before = copy.deepcopy(model.state_dict())
    plan = _plan(model)
    assert plan.names == ["row", "col", "dil", "pw", "fc"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # not modified
    row = plan.layer("row")
    assert row.params_before == 8 * 12 * 7 + 12 and row.ranks == (4, 4)
    assert row.params_after == 8 * 4 + 4 * 4 * 7 + 4 * 12 + 12
    total = sum(p.numel() for p in model.parameters())
    assert plan.totals.params_before == total
    saved = sum(lp.params_before - lp.params_after for lp in plan.layers)
    assert plan.totals.params_after == total - saved
    assert plan.params_ratio == pytest.approx(total / (total - saved))
    assert [s.name for s in plan.skipped] == ["dw", "unused"]
    text = totals_text(plan)
    assert RATIO_DEFINITIONS["params_ratio"] in text and RATIO_DEFINITIONS["macs_ratio"] in text
    assert list(plan_table(plan).index) == plan.names


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    plan = _plan(TinyNet())
    path = plan.save(tmp_path / f"plan{suffix}")
    loaded = Plan.load(path)
    assert loaded == plan
    assert loaded.to_dict() == plan.to_dict()
    if suffix == ".json":
        assert path.read_text().lstrip().startswith("{")
    else:
        assert yaml.safe_load(path.read_text())["version"] == 1


def test_make_plan_takes_dense_choices() -> None:
    model = TinyNet()
    plan = _plan(model)
    dense = {**CHOICES, "stem": LayerChoice(KEEP_DENSE), "dw": LayerChoice(KEEP_DENSE)}
    assert make_plan(model, dense, architecture="tiny", arch_kwargs={"width": 8}, input_size=SIZE) == plan


def test_make_plan_rejects_bad_choices() -> None:
    model = TinyNet()
    with pytest.raises(ConfigError, match="'nope'"):
        make_plan(model, {"nope": LayerChoice("svd_channel", (2,))}, architecture="tiny", input_size=SIZE)
    with pytest.raises(ConfigError, match="'dw'.*depthwise"):
        make_plan(model, {"dw": LayerChoice("svd_channel", (2,))}, architecture="tiny", input_size=SIZE)
    with pytest.raises(ConfigError, match="'pw'.*unknown method 'magic'"):
        make_plan(model, {"pw": LayerChoice("magic", (2,))}, architecture="tiny", input_size=SIZE)
    with pytest.raises(RankError, match="'pw'"):  # 1x1: no tucker2
        make_plan(model, {"pw": LayerChoice("tucker2", (2, 2))}, architecture="tiny", input_size=SIZE)
    with pytest.raises(RankError, match="'row'.*r_out=99"):
        make_plan(model, {"row": LayerChoice("tucker2", (2, 99))}, architecture="tiny", input_size=SIZE)
    with pytest.raises(ConfigError, match="'row': choice 'tucker2' is invalid"):
        make_plan(model, {"row": "tucker2"}, architecture="tiny", input_size=SIZE)  # type: ignore[dict-item]


Edit = Callable[[dict[str, Any]], object]


def _edited(plan: Plan, edit: Edit) -> dict[str, Any]:
    data = copy.deepcopy(plan.to_dict())
    edit(data)
    return data


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (lambda d: d.update(colour="red"), ConfigError, "unknown key.*'colour'"),
        (lambda d: d["layers"][1].update(extra=1), ConfigError, "layer 'col'.*unknown key.*'extra'"),
        (lambda d: d["layers"][0]["shape"].update(foo=1), ConfigError, "layer 'row'.*shape.*'foo'"),
        (lambda d: d["layers"][2].update(method="magic"), ConfigError, "layer 'dil'.*unknown method 'magic'"),
        (lambda d: d["layers"][1].update(ranks=[4, 4]), RankError, "layer 'col'.*3 rank"),
        (lambda d: d["layers"][1].update(ranks=[4, 0, 4]), RankError, "layer 'col'.*r13=0"),
        (lambda d: d["layers"][0].update(ranks=[4.5, 4]), RankError, "layer 'row'"),
        (lambda d: d["layers"][3].update(params_after=1), ConfigError, "layer 'pw'.*params_after = 1"),
        (lambda d: d["layers"][4].pop("method"), ConfigError, "layer 'fc'.*missing.*'method'"),
        (lambda d: d["totals"].update(params_after=5), ConfigError, "totals.params_after"),
        (lambda d: d["totals"].update(macs_ratio=9.9), ConfigError, "totals.macs_ratio"),
        (lambda d: d.update(version=2), ConfigError, "version 2"),
        (lambda d: d["layers"].append(d["layers"][0]), ConfigError, "'row' appears twice"),
        (lambda d: d["architecture"].update(arch="x"), ConfigError, "architecture.*'arch'"),
        (lambda d: d["layers"][0]["shape"].update(padding=[1, -1]), ConfigError, r"'row': shape\.padding\[1\] = -1"),
        (lambda d: d["layers"][1].update(in_hw=[16]), ConfigError, "layer 'col': in_hw has too few items"),
        (lambda d: d["layers"][4]["shape"].update(kind="lstm"), ConfigError, "'fc'.*'lstm'.*'conv' or 'linear'"),
        (lambda d: d["layers"][0].pop("name"), ConfigError, r"plan\.layers\[0\]: missing key 'name'"),
        (lambda d: d.update(input_size=[3, 0, 16]), ConfigError, r"plan\.input_size\[1\] = 0"),
        (lambda d: d["skipped"][0].update(why="x"), ConfigError, r"plan\.skipped\[0\]: unknown key 'why'"),
    ],
)
def test_validation_names_the_problem(edit: Edit, error: type[Exception], pattern: str) -> None:
    plan = _plan(TinyNet())
    with pytest.raises(error, match=pattern) as info:
        Plan.from_dict(_edited(plan, edit))
    assert "\n" not in str(info.value)


def test_the_schema_lists_the_keys_the_plan_writes() -> None:
    data = _plan(TinyNet()).to_dict()
    properties = PlanFile.model_json_schema()["properties"]
    assert isinstance(properties, dict) and list(properties) == list(data)
    assert PlanFile.model_validate(data).layers[0].name == "row"


def test_hand_written_plan_without_counts_is_completed() -> None:
    plan = _plan(TinyNet())
    data: dict[str, Any] = plan.to_dict()
    for layer in data["layers"]:
        for key in ("params_before", "params_after", "macs_before", "macs_after"):
            del layer[key]
    assert Plan.from_dict(data) == plan


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Plan.load(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="suffix"):
        Plan.load(tmp_path / "plan.txt")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        Plan.load(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(ConfigError, match="invalid JSON"):
        Plan.load(bad_json)


def test_a_model_that_does_not_run_on_the_input_size_is_a_one_line_error() -> None:
    from torch import nn

    from automtd._errors import ConfigError
    from automtd.plan import scan_layers

    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(ConfigError, match=r"does not run on an input of size \(3, 4, 4\).*give the input size"):
        scan_layers(model, (3, 4, 4))
    assert [i.name for i in scan_layers(model, (3, 2, 2))] == ["1"]
