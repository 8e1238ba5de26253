"""``automtd methods`` and the one-line decomposition of every registered method."""

from __future__ import annotations

import json

import pytest
import torch

import automtd
from automtd.cli.main import build_parser


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    args = build_parser(("methods",)).parse_args(argv)
    assert args.func(args) == 0
    return capsys.readouterr().out


def test_methods_lists_every_method_with_layers_and_rank_order(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(["methods"], capsys)
    for name in automtd.list_methods():
        method = automtd.get_method(name)
        line = next(row for row in out.splitlines() if row.split()[0] == name)
        assert ", ".join(method.rank_names) in line
        assert ",".join(sorted(method.layer_kinds)) in line
    rows = json.loads(_run(["methods", "--json"], capsys))
    assert [r["name"] for r in rows] == automtd.list_methods()
    assert {r["name"]: r["ranks"] for r in rows}["ht2"] == ["r1", "r13", "r3"]
    bounds = {
        r["name"]: r["bounds"] for r in json.loads(_run(["methods", "--json", "--conv", "64", "32", "3"], capsys))
    }
    assert bounds["tucker2"] == [[1, 64], [1, 32]] and bounds["svd_linear"] is None


@pytest.mark.parametrize("name", automtd.list_methods())
def test_acceptance_one_liner(name: str) -> None:
    method = automtd.get_method(name)
    ranks = (16,) * len(method.rank_names)
    if "linear" in method.layer_kinds:
        module = method.from_linear(torch.nn.Linear(64, 64), ranks=ranks)
    else:
        module = method.from_conv(torch.nn.Conv2d(64, 64, 3, padding=1), ranks=ranks)
    text = str(module)
    inner = ", ".join(map(str, ranks)) + ("," if len(ranks) == 1 else "")
    assert text.splitlines()[0].endswith(f"64->64, {'k=3x3, ' if 'conv' in method.layer_kinds else ''}ranks=({inner}))")
    assert "(0):" in text


def test_methods_through_the_automtd_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    from automtd.cli.main import main

    assert main(["methods", "--conv", "16", "32", "3"]) == 0
    out = capsys.readouterr().out
    assert "tucker2" in out and "r_in, r_out" in out and "1..16, 1..32" in out
