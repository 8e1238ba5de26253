"""A failed first run leaves nothing behind; a study can be deleted; a worker may take other data and checkpoint
locations (same weights); trials failing for the same environment reason stop the worker."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from test_search import tiny_config

from automtd.cli.main import main
from automtd.search._keys import STUDY_CHECKPOINT_SHA256, STUDY_CONFIG
from automtd.search._objective import directions, study_spec
from automtd.search._storage import open_storage
from automtd.search._study import create_or_load_study


@pytest.fixture()
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def _write_config(path: Path, data_root: Path, checkpoint: Path, **changes: Any) -> Path:
    name = changes.pop("model.name", None)
    data = tiny_config(data_root, checkpoint, "sqlite:///s.db", **changes).model_dump(mode="json")
    if name is not None:  # written as the user would, unchecked (a typo is the command's to refuse)
        data["model"]["name"] = name
        data["model"]["input_size"] = None
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("case", "code", "needle"),
    [
        ("model_typo", 2, "cifar_resnet2O"),
        ("other_architecture", 5, "keys do not match"),
        ("unreadable_data", 4, "cannot be read"),
    ],
)
def test_bad_first_run_creates_nothing(
    case: str, code: int, needle: str, cwd: Path, data_root: Path, resnet20_checkpoint: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = data_root
    changes: dict[str, Any] = {}
    if case == "model_typo":
        changes["model.name"] = "cifar_resnet2O"
    elif case == "other_architecture":
        changes["model.name"] = "cifar_resnet32"
    else:  # a data root whose CIFAR files are not CIFAR
        root = cwd.parent / "bad-data"
        (root / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                     "batches.meta"):
            (root / "cifar-10-batches-py" / name).write_text("not a CIFAR batch\n")
    _write_config(cwd / "c.yaml", root, resnet20_checkpoint, **changes)
    assert main(["search", "c.yaml", "--no-progress"]) == code
    assert needle in _error_line(capsys)
    assert sorted(p.name for p in cwd.iterdir()) == ["c.yaml"], "a study, lock or cache was written"


def test_studies_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    storage = open_storage(url, create_schema=True)
    for name in ("gone", "kept"):
        study, _ = create_or_load_study(storage, name, spec={"n": name}, directions=["minimize"], budget=3)
        study.tell(study.ask(), 1.0)
    assert main(["studies", "delete", "--study", "gone", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "deleted study 'gone' and its 1 trial(s)" in out
    assert [s.study_name for s in optuna.get_all_study_summaries(open_storage(url))] == ["kept"]
    assert main(["studies", "delete", "--study", "gone", "--storage", url]) == 8
    line = _error_line(capsys)
    assert "'gone' does not exist" in line and "'kept'" in line
    assert main(["studies", "delete", "--storage", url]) == 2
    assert "--study NAME" in _error_line(capsys)
    missing = tmp_path / "none.db"
    assert main(["studies", "delete", "--study", "x", "--storage", f"sqlite:///{missing}"]) == 7
    assert "does not exist" in _error_line(capsys) and not missing.exists()


def _study_with_stored_locations(url: str, data_root: str, checkpoint: Path, resnet20_checkpoint: Path) -> None:
    """A study as `automtd search` leaves it, whose stored data root is ``data_root``."""
    from automtd.search._context import checkpoint_sha256

    cfg = tiny_config(Path(data_root), checkpoint, url, **{"study.name": "env", "study.n_trials": 10,
                                                          "sensitivity.enabled": False, "warmstart.enabled": False,
                                                          "finetune.steps": 0, "data.train_subset": 64,
                                                          "data.val_subset": 64})
    create_or_load_study(
        open_storage(url, create_schema=True),
        "env",
        spec=study_spec(cfg),
        directions=[d.name.lower() for d in directions(cfg)],
        budget=10,
        user_attrs={STUDY_CONFIG: cfg.model_dump(mode="json"),
                    STUDY_CHECKPOINT_SHA256: checkpoint_sha256(resnet20_checkpoint)},
    )


def test_worker_stops_on_repeated_data_error_and_takes_other_locations(
    tmp_path: Path, data_root: Path, resnet20_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'e.db'}"
    _study_with_stored_locations(url, str(tmp_path / "moved-data"), resnet20_checkpoint, resnet20_checkpoint)
    # every trial fails for the same reason: the worker stops after 3 instead of failing the budget of 10
    assert main(["worker", "--study", "env", "--storage", url]) == 4
    line = _error_line(capsys)
    assert "3 trials in a row failed with DataError" in line and "moved-data" in line and "--data-root" in line
    trials = optuna.load_study(study_name="env", storage=url).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.FAIL] * 3

    # other weights under the study's checkpoint name are refused before any trial
    other = tmp_path / "other.th"
    other.write_bytes(resnet20_checkpoint.read_bytes() + b"\0")
    assert main(["worker", "--study", "env", "--storage", url, "--data-root", str(data_root),
                 "--checkpoint", str(other)]) == 5
    assert "SHA-256" in _error_line(capsys)
    assert main(["worker", "--study", "env", "--storage", url, "--data-root", str(tmp_path / "nowhere")]) == 4
    assert "nowhere" in _error_line(capsys)
    assert len(optuna.load_study(study_name="env", storage=url).trials) == 3

    # the same weights elsewhere and the real data root: the trial runs
    copy = shutil.copy(resnet20_checkpoint, tmp_path / "copy.th")
    assert main(["worker", "--study", "env", "--storage", url, "--data-root", str(data_root),
                 "--checkpoint", str(copy), "--n-trials", "1"]) == 0
    trials = optuna.load_study(study_name="env", storage=url).get_trials(deepcopy=False)
    assert trials[-1].state == TrialState.COMPLETE, trials[-1].user_attrs.get("fail_reason")
