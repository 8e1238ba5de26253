"""The bad-input catalog: every case exits with its documented code, a one-line message naming the value,
what is allowed and the fix, and writes nothing (no study, no database, no output file).

Exit codes (docs/architecture.md): 2 ConfigError, 3 RankError, 4 DataError, 5 CheckpointError,
6 PlanMismatchError, 7 StorageError, 8 StudyError.  Commands run in-process through ``automtd.cli.main``.
The NaN-weight case of the real search objective is tested in tests/test_search.py
(``test_nan_trial_fails_with_reason_and_study_goes_on``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _pg import REPO, bench_plugin_fixture, free_port  # noqa: F401 - fixture bench_plugin
from optuna.trial import TrialState

from automtd.cli.main import main
from automtd.search._keys import STUDY_OBJECTIVE, STUDY_OBJECTIVE_ARGS
from automtd.search._storage import open_storage
from automtd.search._study import budget_status, create_or_load_study

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _config(cwd: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(QUICKSTART.read_text())
    change(data)
    path = cwd / "c.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, *needles: str) -> str:
    """Run the CLI; check the exit code and that stderr is one line holding every needle."""
    got = main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line.startswith("error: ")]
    assert got == code, (got, captured.err[-2000:])
    assert len(lines) == 1, captured.err[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- config files given to `automtd search` (nothing may be created: no database, no lock, no cache) ---


def _set(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *head, last = dotted.split(".")
        node = data
        for part in head:
            node = node.setdefault(part, {})
        node[last] = value

    return change


CONFIG_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], int, tuple[str, ...]]] = {
    "unknown_key": (_set("model.colour", "red"), 2, ("unknown key 'model.colour'", "remove it")),
    "wrong_type": (_set("finetune.steps", "many"), 2, ("'finetune.steps'", "'many'")),
    "unknown_method": (_set("space.conv", ["tucker3", "none"]), 2, ("tucker3", "allowed", "tucker2")),
    "missing_data_path": (
        lambda d: (_set("data.root", "/nonexistent/cifar")(d), _set("data.download", False)(d)),
        4,
        ("/nonexistent/cifar",),
    ),
    "missing_checkpoint": (_set("model.checkpoint", "/nonexistent/missing-weights.th"), 5, ("missing-weights.th",)),
    "rung_below_the_trial_budget": (_set("fidelity.rungs", [20, 160]), 2, ("fidelity.rungs[0]=20",
                                                                           "must exceed finetune.steps=40")),
    "rungs_not_ascending": (_set("fidelity.rungs", [320, 160]), 2, ("[320, 160]", "ascending")),
    "negative_time_budget": (_set("study.time_budget", -5), 2, ("'study.time_budget'", "-5")),
    "unknown_score_split": (_set("data.score_split", "test"), 2, ("'data.score_split'", "test-select", "val")),
    "calibration_mode": (_set("calibration.mode", "both"), 2, ("'calibration.mode'", "parallel", "sequential")),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_search_config(case: str, cwd: Path, capsys: pytest.CaptureFixture[str],
                           request: pytest.FixtureRequest) -> None:
    change, code, needles = CONFIG_CASES[case]
    if case == "missing_data_path":  # the checkpoint is checked first: it must exist for the data check to run
        checkpoint = request.getfixturevalue("resnet20_checkpoint")
        original = change

        def change(d: dict[str, Any]) -> None:
            original(d)
            _set("model.checkpoint", str(checkpoint))(d)
    _config(cwd, change)
    _fails(capsys, ["search", "c.yaml", "--storage", "sqlite:///s.db", "--no-progress"], code, *needles)
    assert sorted(p.name for p in cwd.iterdir()) == ["c.yaml"], "something was written before the input was checked"


def test_invalid_yaml_names_line_and_column(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "c.yaml").write_text("model:\n  name: cifar_resnet20\ndata:\n  dataset: [cifar10\n  root: x\n")
    _fails(capsys, ["search", "c.yaml", "--storage", "sqlite:///s.db"], 2, "invalid YAML", "line ", "column ")
    assert sorted(p.name for p in cwd.iterdir()) == ["c.yaml"]


# --- checkpoints ---


def test_missing_and_corrupt_checkpoints(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(capsys, ["evaluate", "--model", "cifar_resnet20", "--checkpoint", "nope.th"], 5, "nope.th", "does not exist")
    (cwd / "corrupt.th").write_bytes(b"\x80\x02 these bytes are not a checkpoint")
    _fails(capsys, ["evaluate", "--model", "cifar_resnet20", "--checkpoint", "corrupt.th"], 5, "corrupt.th")


class _Custom:
    """A class that only full unpickling could rebuild."""


def test_checkpoint_needing_full_unpickling(
    cwd: Path, capsys: pytest.CaptureFixture[str], resnet20_checkpoint: Path
) -> None:
    state = torch.load(resnet20_checkpoint, weights_only=True, map_location="cpu")
    torch.save({"state_dict": state.get("state_dict", state), "extra": _Custom()}, cwd / "pickled.th")
    line = _fails(capsys, ["evaluate", "--model", "cifar_resnet20", "--checkpoint", "pickled.th"], 5, "pickled.th")
    assert "unpickl" in line or "weights_only" in line


# --- plans ---


def _plan(cwd: Path) -> dict:
    assert main(["plan", "--model", "cifar_resnet20", "--baseline", "uniform", "--method", "tucker2",
                 "--fraction", "0.3", "-o", "plan.yaml"]) == 0  # fmt: skip
    return yaml.safe_load((cwd / "plan.yaml").read_text())


def test_bad_ranks_and_methods_in_a_plan(
    cwd: Path, capsys: pytest.CaptureFixture[str], resnet20_checkpoint: Path
) -> None:
    plan = _plan(cwd)
    capsys.readouterr()
    layer = plan["layers"][0]
    name = layer["name"]
    for ranks, code, needles in (([0, 7], 3, (name, "0")), ([99, 7], 3, (name, "99"))):
        bad = {**plan, "layers": [{**layer, "ranks": ranks}, *plan["layers"][1:]]}
        (cwd / "bad.yaml").write_text(yaml.safe_dump(bad))
        _fails(capsys, ["apply", "--plan", "bad.yaml", "--checkpoint", str(resnet20_checkpoint), "-o", "out"],
               code, *needles)  # fmt: skip
        assert not (cwd / "out").exists()
    bad = {**plan, "layers": [{**layer, "method": "tucker3"}, *plan["layers"][1:]]}
    (cwd / "bad.yaml").write_text(yaml.safe_dump(bad))
    line = main(["apply", "--plan", "bad.yaml", "--checkpoint", str(resnet20_checkpoint), "-o", "out"])
    err = capsys.readouterr().err
    assert line in (2, 3) and "tucker3" in err and "tucker2" in err and len(err.strip().splitlines()) == 1
    assert not (cwd / "out").exists()


def test_plan_for_another_architecture(cwd: Path, capsys: pytest.CaptureFixture[str], weights_dir: Path) -> None:
    plan = _plan(cwd)  # made for ResNet-20 ...
    capsys.readouterr()
    plan["architecture"]["name"] = "cifar_resnet32"  # ... and applied to a ResNet-32
    (cwd / "foreign.yaml").write_text(yaml.safe_dump(plan))
    r32 = weights_dir / "resnet32-d509ac18.th"
    _fails(capsys, ["apply", "--plan", "foreign.yaml", "--checkpoint", str(r32), "-o", "out"], 6, "fingerprint")
    assert not (cwd / "out").exists()


# --- storages and studies ---


def test_unreachable_storage_fails_within_the_connect_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://u:hunter2@127.0.0.1:{free_port()}/db"
    for argv in (["front", "--study", "s", "--storage", url], ["worker", "--study", "s", "--storage", url]):
        t0 = time.monotonic()
        line = _fails(capsys, argv, 7, "cannot reach storage", "u:***@127.0.0.1")
        assert time.monotonic() - t0 < 10 + 5 and "hunter2" not in line


@pytest.fixture()
def bench_study(cwd: Path, bench_plugin: str) -> str:
    """A study whose trials were run by a real worker: NaN, inf and an exception, then finite trials."""
    url = "sqlite:///b.db"
    study, _ = create_or_load_study(
        open_storage(url, create_schema=True),
        "b",
        spec={"objective": "benchmark"},
        directions=["maximize", "maximize"],
        budget=6,
        user_attrs={
            STUDY_OBJECTIVE: bench_plugin,
            STUDY_OBJECTIVE_ARGS: {"seconds": 0, "nan_trials": [0], "inf_trials": [1], "error_trials": [2]},
        },
    )
    study.set_metric_names(["accuracy", "params_ratio"])
    assert main(["worker", "--study", "b", "--storage", url, "--heartbeat-interval", "1", "--grace-period", "3"]) == 0
    return url


def test_non_finite_and_failing_trials_are_failed_with_a_reason(bench_study: str) -> None:
    import optuna

    study = optuna.load_study(study_name="b", storage=bench_study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials[:3]] == [TrialState.FAIL] * 3
    reasons = [t.user_attrs["fail_reason"] for t in trials[:3]]
    assert "non-finite" in reasons[0] and "nan" in reasons[0]
    assert "non-finite" in reasons[1] and "inf" in reasons[1]
    assert reasons[2].startswith("RuntimeError: benchmark objective told to fail trial 2")
    assert all(math.isfinite(v) for t in trials[3:] for v in t.values)  # the worker went on
    assert budget_status(study).reached


def test_study_that_does_not_exist(bench_study: str, cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(cwd / "b.db")
    commands = [
        ["front", "--study", "nope", "--storage", bench_study],
        ["worker", "--study", "nope", "--storage", bench_study],
        ["export", "--study", "nope", "--storage", bench_study, "--max-drop", "1", "-o", "x.yaml"],
    ]
    for argv in commands:
        _fails(capsys, argv, 8, "'nope'", "does not exist", "'b'")
    assert _digest(cwd / "b.db") == before and not (cwd / "x.yaml").exists()
    _fails(capsys, ["front", "--study", "b", "--storage", "sqlite:///other.db"], 7, "other.db", "does not exist")
    assert not (cwd / "other.db").exists()


def test_export_constraint_no_trial_meets(bench_study: str, cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(cwd / "b.db")
    argv = ["export", "--study", "b", "--storage", bench_study, "--min-ratio", "1e6", "-o", "plan.yaml"]
    _fails(capsys, argv, 8, "1e+06", "the highest is", "lower --min-ratio")
    assert not (cwd / "plan.yaml").exists() and _digest(cwd / "b.db") == before
