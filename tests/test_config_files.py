"""Every bundled config loads with its command's loader, in the one spelling (no deprecated keys)."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from automtd.config import load_config, parse_config, read_yaml
from automtd.search import load_search_config
from automtd.training_methods import DeepTwistConfig
from automtd.workflows import load_funnel_config, load_train_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
ALL = sorted(CONFIGS.glob("*.yaml")) + sorted(CONFIGS.glob("gpu/*.yaml"))


def _deeptwist(path: Path) -> object:
    return parse_config(read_yaml(path)["deeptwist"], DeepTwistConfig, source=str(path))


def _fronts(path: Path) -> object:
    sys.path.insert(0, str(REPO))
    module = importlib.import_module("benchmarks._fronts_config")
    return load_config(path, module.FrontsConfig)


def _loader(path: Path) -> Callable[[Path], object]:
    name = path.name
    if name.startswith("train_"):
        return load_train_config
    if name.startswith("funnel_"):
        return load_funnel_config
    if name.startswith(("mtd_", "bench_search_", "quickstart", "samplers_", "latency_")):
        return load_search_config
    if name.startswith("deeptwist_"):
        return _deeptwist
    if name.startswith("bench_fronts"):
        return _fronts
    raise AssertionError(f"no loader known for {path}; "
                         "name it train_/funnel_/mtd_/bench_search_/latency_/deeptwist_/...")


def test_the_config_folder_is_not_empty() -> None:
    assert len(ALL) > 20 and any(p.parent.name == "gpu" for p in ALL)


@pytest.mark.parametrize("path", ALL, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_bundled_config_loads_in_the_one_spelling(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert _loader(path)(path) is not None
