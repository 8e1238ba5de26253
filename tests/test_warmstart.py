"""MTD-style warm start from a sensitivity table: tolerance and the top-k gentle plans."""

from __future__ import annotations

from automtd.methods import LayerShape, get_method
from automtd.search._config import search_config_from_dict
from automtd.search._space import SpaceLayer
from automtd.search._warmstart import mtd_params


def _layer(name: str, channels: int) -> SpaceLayer:
    shape = LayerShape("conv", channels, channels, (3, 3), padding=(1, 1))
    return SpaceLayer(name, shape, (8, 8), ("tucker2", "none"))


def _row(layer: SpaceLayer, fraction: float, drop: float) -> dict[str, object]:
    ranks = get_method("tucker2").ranks_for_fraction(layer.shape, fraction)
    after = get_method("tucker2").params(layer.shape, ranks)
    return {"layer": layer.name, "method": "tucker2", "ranks": list(ranks), "fraction": fraction,
            "accuracy": 100.0 - drop, "drop": drop, "layer_ratio": after / layer.shape.dense_params}


def test_tolerance_and_top_layers(tmp_path) -> None:
    space = [_layer("small", 16), _layer("mid", 32), _layer("big", 64)]
    rows = [_row(space[0], 0.2, 0.0), _row(space[1], 0.2, 0.0), _row(space[2], 0.2, 0.0),
            _row(space[2], 0.1, 3.0)]
    config = search_config_from_dict({
        "model": {"name": "cifar_resnet20", "checkpoint": str(tmp_path / "ck.th")},
        "study": {"name": "t", "n_trials": 2},
    })
    table = {"rows": rows}
    chosen = mtd_params(table, space, 0.0, config)
    assert [chosen[f"m:{layer.name}"] for layer in space] == ["tucker2"] * 3
    loose = mtd_params(table, space, 5.0, config)
    assert loose["f:big"] < chosen["f:big"]  # the more compressed candidate is allowed at 5 points
    top1 = mtd_params(table, space, 0.0, config, max_layers=1)
    assert [top1[f"m:{layer.name}"] for layer in space] == ["none", "none", "tucker2"]  # the biggest saving
    top2 = mtd_params(table, space, 0.0, config, max_layers=2)
    assert [top2[f"m:{layer.name}"] for layer in space] == ["none", "tucker2", "tucker2"]
