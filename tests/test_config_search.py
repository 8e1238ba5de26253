"""The search config: strict keys, one-line errors naming the key, overrides, the spec and downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from automtd._errors import CheckpointError, ConfigError, DataError
from automtd.checkpoints import resolve_checkpoint
from automtd.search._config import load_search_config, search_config_from_dict
from automtd.search._objective import directions, study_spec
from automtd.utils import KnownFile, expand_path, fetch

REPO = Path(__file__).resolve().parents[1]
MINIMAL = "model:\n  name: cifar_resnet20\n  checkpoint: /nowhere/resnet20.th\n"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "search.yaml"
    p.write_text(text)
    return p


def test_every_shipped_search_config_validates() -> None:
    configs = REPO / "configs"
    paths = [configs / "quickstart.yaml", configs / "samplers_proxy.yaml",
             *sorted(configs.glob("bench_search_*.yaml")), *sorted(configs.glob("gpu/mtd_*.yaml"))]
    for path in paths:
        cfg = load_search_config(path)
        assert cfg.objectives[0] == "accuracy", path


def test_quickstart_is_the_documented_job() -> None:
    cfg = load_search_config(REPO / "configs" / "quickstart.yaml")
    assert cfg.model.name == "cifar_resnet20"
    assert cfg.data.dataset == "cifar10"
    assert cfg.storage_url() == "sqlite:///studies/quickstart.db"
    assert cfg.device == "auto"
    assert cfg.model.checkpoint.raw.startswith("${AUTOMTD_WEIGHTS")  # stored as written, used expanded
    assert "${" not in cfg.model.checkpoint


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'finetune.stepz'"):
        load_search_config(_write(tmp_path, MINIMAL + "finetune:\n  stepz: 3\n"))


def test_wrong_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'study.n_trials' = 'many'"):
        load_search_config(_write(tmp_path, MINIMAL + "study:\n  n_trials: many\n"))


def test_bad_yaml_gives_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 5, column 10"):
        load_search_config(_write(tmp_path, MINIMAL + "study:\n  name: a: b\n"))


def test_unknown_method_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'space.conv'.*unknown method 'tucker3'"):
        load_search_config(_write(tmp_path, MINIMAL + "space:\n  conv: [tucker3, none]\n"))


def test_missing_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing required key 'model'"):
        load_search_config(_write(tmp_path, "seed: 1\n"))


def test_objectives_must_start_with_accuracy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'objectives'"):
        load_search_config(_write(tmp_path, MINIMAL + "objectives: [params_ratio]\n"))


def test_set_overrides_single_keys(tmp_path: Path) -> None:
    cfg = load_search_config(
        _write(tmp_path, MINIMAL), ["finetune.steps=200", "sampler.name=nsga2", "constraints.max_drop=1.5"]
    )
    assert cfg.finetune.steps == 200
    assert cfg.sampler.name == "nsga2"
    assert cfg.constraints.max_drop == 1.5
    with pytest.raises(ConfigError, match=r"unknown key 'finetune.nope'"):
        load_search_config(_write(tmp_path, MINIMAL), ["finetune.nope=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_search_config(_write(tmp_path, MINIMAL), ["finetune.steps"])


def test_directions_follow_the_objectives(tmp_path: Path) -> None:
    cfg = load_search_config(_write(tmp_path, MINIMAL + "objectives: [accuracy, params_ratio, latency]\n"))
    assert [d.name for d in directions(cfg)] == ["MAXIMIZE", "MAXIMIZE", "MINIMIZE"]


def test_spec_ignores_run_settings_but_not_the_space(tmp_path: Path) -> None:
    base = load_search_config(_write(tmp_path, MINIMAL))
    data = base.model_dump(mode="json")
    data["study"]["n_trials"] = 99
    data["study"]["storage"] = "sqlite:///elsewhere.db"
    data["device"] = "cpu"
    data["sampler"]["name"] = "nsga2"
    assert study_spec(search_config_from_dict(data)) == study_spec(base)
    data["space"]["fraction_low"] = 0.2
    assert study_spec(search_config_from_dict(data)) != study_spec(base)


def test_paths_expand_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOMTD_WEIGHTS", "/w")
    assert expand_path("${AUTOMTD_WEIGHTS:-../x}/a.th") == "/w/a.th"
    monkeypatch.delenv("AUTOMTD_WEIGHTS")
    assert expand_path("${AUTOMTD_WEIGHTS:-../x}/a.th") == "../x/a.th"
    with pytest.raises(ConfigError, match="AUTOMTD_WEIGHTS"):
        expand_path("${AUTOMTD_WEIGHTS}/a.th")


def test_missing_checkpoint_without_download_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="download: true"):
        resolve_checkpoint(str(tmp_path / "resnet20-12fca82f.th"), download=False)


def test_fetch_verifies_the_checksum(tmp_path: Path) -> None:
    # a file:// URL: the real fetch code path, no network
    src = tmp_path / "src.bin"
    src.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    got = fetch(KnownFile(src.as_uri(), good, "w.bin"), tmp_path / "cache")
    assert got.read_bytes() == b"weights"
    with pytest.raises(DataError, match="sha256"):
        fetch(KnownFile(src.as_uri(), "0" * 64, "x.bin"), tmp_path / "cache")
    assert not (tmp_path / "cache" / "x.bin").exists()


def test_search_cli_commands_parse_with_safe_defaults() -> None:
    from automtd.cli.main import build_parser

    parser = build_parser()
    dash = parser.parse_args(["dashboard", "--storage", "sqlite:///studies/qs.db"])
    assert dash.host == "127.0.0.1"
    args = parser.parse_args(["search", "configs/quickstart.yaml", "--study", "qs", "--storage",
                              "sqlite:///studies/qs.db", "--set", "finetune.steps=5", "--set", "seed=1"])
    assert args.overrides == ["finetune.steps=5", "seed=1"]
    front = parser.parse_args(["front", "--study", "qs", "--storage", "sqlite:///x.db", "--format", "json"])
    assert front.format == "json"
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "--study", "qs", "--storage", "sqlite:///x.db", "--trial", "1",
                           "--max-drop", "1", "-o", "p.yaml"])
