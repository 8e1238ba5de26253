"""Storage URLs, the SQLite single-writer lock, the heartbeat storage, the trial guard and budget counting."""

from __future__ import annotations

import errno
import math
import os
import sqlite3
import time
from pathlib import Path

import optuna
import pytest
from _pg import PgServer, free_port, pg_server_fixture, pg_url_fixture  # noqa: F401 - fixtures
from optuna.trial import TrialState

from automtd._errors import ConfigError, StorageError, StudyError
from automtd.cli.main import main
from automtd.search._guard import NonFiniteObjectiveError, TrialGuard
from automtd.search._storage import (
    SingleWriterLock,
    StorageOptions,
    open_storage,
    parse_storage_url,
    redact_url,
)
from automtd.search._study import (
    budget_status,
    create_or_load_study,
    fail_reason,
    finished_trials,
    open_study,
    spec_hash,
)


def test_parse_storage_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_storage_url("sqlite:///studies/a.db").path == tmp_path / "studies" / "a.db"
    assert parse_storage_url(f"sqlite:///{tmp_path}/b.db").url == f"sqlite:///{tmp_path}/b.db"
    assert parse_storage_url("x.sqlite3").kind == "sqlite"
    j = parse_storage_url("journal:///j/x.log")
    assert (j.kind, j.path) == ("journal", tmp_path / "j" / "x.log")
    assert parse_storage_url("runs/y.log").kind == "journal"
    pg = parse_storage_url("postgresql://u:secret@h:5432/d")
    assert (pg.kind, pg.url) == ("postgresql", "postgresql+psycopg://u:secret@h:5432/d")
    assert "secret" not in str(pg)
    for bad in ["", "mysql://u@h/d", "x.txt", "sqlite://", "sqlite:///:memory:", "postgresql:///d"]:
        with pytest.raises(StorageError) as info:
            parse_storage_url(bad)
        assert "\n" not in str(info.value) and ("sqlite:///" in str(info.value) or "postgresql" in str(info.value))
    with pytest.raises(StorageError) as info:
        parse_storage_url("redis://u:hunter2@h/0")
    assert "hunter2" not in str(info.value)


def test_redact_url() -> None:
    assert redact_url("postgresql+psycopg://u:p%40ss@h:1/d") == "postgresql+psycopg://u:***@h:1/d"
    assert redact_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert redact_url("error at postgresql://a:b@c/d now") == "error at postgresql://a:***@c/d now"


def test_storage_options_are_checked() -> None:
    for kwargs in ({"heartbeat_interval": 0}, {"grace_period": 1, "heartbeat_interval": 2}, {"max_retry": -1}):
        with pytest.raises(ConfigError):
            StorageOptions(**kwargs)  # type: ignore[arg-type]


def test_second_sqlite_writer_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with SingleWriterLock(url):
        with pytest.raises(StorageError) as info:
            SingleWriterLock(url).acquire()
        assert "journal:///x.log" in str(info.value) and "postgresql+psycopg://" in str(info.value)
    with SingleWriterLock(url):  # released: usable again
        pass
    with SingleWriterLock(f"journal:///{tmp_path / 'j.log'}"), SingleWriterLock(f"journal:///{tmp_path / 'j.log'}"):
        pass  # journal files allow several processes


def _heartbeat_rows(db: Path) -> dict[int, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT trial_id, heartbeat FROM trial_heartbeats").fetchall())


def test_heartbeat_written_when_a_trial_starts(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    storage = open_storage(f"sqlite:///{db}", options=StorageOptions(3, 6), create_schema=True)
    study, _ = create_or_load_study(storage, "h", spec={"a": 1}, directions=["minimize"], budget=3)
    trial = study.ask()  # no optimize(), no heartbeat thread: the storage itself records the first beat
    assert trial._trial_id in _heartbeat_rows(db)
    study.enqueue_trial({"x": 0.5})
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    assert waiting._trial_id not in _heartbeat_rows(db)
    popped = study.ask()  # taken from WAITING -> RUNNING: beat recorded in the same call
    assert popped._trial_id == waiting._trial_id and popped._trial_id in _heartbeat_rows(db)


@pytest.mark.postgres
def test_heartbeat_survives_an_outage(pg_server: PgServer, pg_url: str) -> None:
    storage = open_storage(pg_url, options=StorageOptions(1, 3), create_schema=True)
    study, _ = create_or_load_study(storage, "o", spec={"a": 1}, directions=["minimize"], budget=1)
    trial = study.ask()
    backend = storage
    pg_server.stop("fast")
    try:
        t0 = time.monotonic()
        backend.record_heartbeat(trial._trial_id)  # plain Optuna raises here and its heartbeat thread dies
        assert time.monotonic() - t0 < 15
    finally:
        pg_server.start()
    backend.record_heartbeat(trial._trial_id)  # and it beats again once the server is back
    study.tell(trial, 1.0)
    assert study.trials[0].state == TrialState.COMPLETE


def test_unreachable_postgres_fails_within_connect_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://u:hunter2@127.0.0.1:{free_port()}/db"
    t0 = time.monotonic()
    code = main(["worker", "--study", "s", "--storage", url, "--connect-timeout", "2"])
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 7 and elapsed < 2 + 10, (code, elapsed, err)
    assert err.startswith("error: cannot reach storage postgresql+psycopg://u:***@127.0.0.1") and "hunter2" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.postgres
def test_empty_database_and_missing_study(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["worker", "--study", "s", "--storage", pg_url]) == 7
    assert "holds no Optuna schema" in capsys.readouterr().err
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg_url)
    with engine.connect() as con:  # the worker created nothing
        assert sqlalchemy.inspect(con).get_table_names() == []
    engine.dispose()
    create_or_load_study(open_storage(pg_url, create_schema=True), "real", spec={}, directions=["minimize"], budget=1)
    assert main(["worker", "--study", "nope", "--storage", pg_url]) == 8
    err = capsys.readouterr().err
    assert "study 'nope' does not exist" in err and "'real'" in err


def test_spec_mismatch_and_directions(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", create_schema=True)
    spec = {"model": {"name": "r20"}, "space": {"conv": ["cp", "none"]}}
    study, created = create_or_load_study(storage, "s", spec=spec, directions=["maximize", "minimize"], budget=4)
    assert created and study.user_attrs["automtd:spec_hash"] == spec_hash(spec)
    again, created = create_or_load_study(storage, "s", spec=dict(spec), directions=["maximize", "minimize"], budget=6)
    assert not created and again.user_attrs["automtd:n_trials"] == 6
    other = {"model": {"name": "r32"}, "space": {"conv": ["cp"]}}
    with pytest.raises(StudyError) as info:
        create_or_load_study(storage, "s", spec=other, directions=["maximize", "minimize"], budget=99)
    assert "model.name: 'r20' -> 'r32'" in str(info.value) and "space.conv" in str(info.value)
    with pytest.raises(StudyError, match="directions"):
        create_or_load_study(storage, "s", spec=spec, directions=["maximize", "maximize"], budget=None)
    assert open_study(storage, "s").user_attrs["automtd:n_trials"] == 6  # refused calls wrote nothing


def test_guard_fails_non_finite_and_errors_and_the_loop_goes_on(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'g.db'}", create_schema=True)
    study, _ = create_or_load_study(storage, "g", spec={}, directions=["minimize", "minimize"], budget=None)
    outputs = iter([[1.0, math.inf], [math.nan, 1.0], "oops", [1.0, 2.0]])

    def objective(trial: optuna.trial.Trial) -> list[float]:
        trial.suggest_float("x", 0, 1)
        out = next(outputs)
        if out == "oops":
            raise ValueError("factor 3 is NaN")
        return out  # type: ignore[return-value]

    study.optimize(TrialGuard(objective), n_trials=4, catch=(Exception,))
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    assert "non-finite" in fail_reason(trials[0]) and "inf" in fail_reason(trials[0])
    assert "non-finite" in fail_reason(trials[1])
    assert fail_reason(trials[2]) == "ValueError: factor 3 is NaN"
    assert [t.number for t in finished_trials(study)] == [3]
    assert issubclass(NonFiniteObjectiveError, Exception)


def test_finished_trials_never_include_inf(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'f.db'}", create_schema=True)
    study, _ = create_or_load_study(storage, "f", spec={}, directions=["minimize", "minimize"], budget=None)
    # plain Optuna accepts inf as COMPLETE (and would put it on the front)
    study.add_trial(optuna.create_trial(values=[math.inf, 1.0]))
    study.add_trial(optuna.create_trial(values=[2.0, 1.0]))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert [t.number for t in finished_trials(study)] == [1]


def test_budget_status_counts_retry_chains_once(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'b.db'}", create_schema=True)
    study, _ = create_or_load_study(storage, "b", spec={}, directions=["minimize"], budget=4)
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.create_trial(value=1.0, params={"x": 0.1}, distributions=dist))  # 0 COMPLETE
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.2}, distributions=dist))  # 1 retried
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params={"x": 0.2},
            distributions=dist,
            system_attrs={"failed_trial": 1, "retry_history": [1]},
        )
    )  # 2 retry of 1
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.3}, distributions=dist))  # 3 final
    status = budget_status(study)
    assert (status.finished, status.waiting, status.superseded) == (2, 1, 1)
    assert status.can_start and not status.reached  # a WAITING retry always runs
    study.add_trial(optuna.create_trial(state=TrialState.PRUNED, params={"x": 0.4}, distributions=dist))
    status = budget_status(study)
    assert status.finished == 3 and status.can_start  # 3 finished + 1 waiting = 4 but the retry may run
    study.add_trial(optuna.create_trial(value=2.0, params={"x": 0.5}, distributions=dist))
    assert budget_status(study).reached


# --- SQLite files and URLs: one line naming the path and the fix, through the CLI ---------------------------


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _sqlite_study(path: Path, n_trials: int = 30) -> None:
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n_trials)
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself


def _damage(path: Path, first_page: int, page_size: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    for start in range(first_page * page_size, len(data), page_size):
        data[start : start + page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("bad", ["sqlite:/x.db", "sqlite:x.db", "SQLite:/studies/x.db", "journal:/x.log"])
def test_malformed_file_url_is_refused_and_creates_nothing(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text("model: {name: cifar_resnet20, checkpoint: ck}\n")
    for argv in (["search", str(config), "--storage", bad], ["worker", "--study", "s", "--storage", bad],
                 ["studies", "--storage", bad]):  # fmt: skip
        assert main(argv) == 7, argv
        err = _one_error_line(capsys)
        assert bad in err and "'://'" in err, err
        if bad.lower().startswith("sqlite"):
            assert "sqlite:///relative.db" in err and "sqlite:////abs/path.db" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # no folder named 'sqlite:'


def test_sqlite_url_naming_a_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["studies", "--storage", f"sqlite:///{tmp_path}"]) == 7
    assert "names a folder" in _one_error_line(capsys)


def test_unwritable_lock_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lock file cannot be created (a folder this user may not write): the path and the fix."""
    db = tmp_path / "ro" / "s.db"
    db.parent.mkdir()
    _sqlite_study(db, n_trials=1)
    real_open = os.open

    def refuse_lock(path: os.PathLike[str] | str, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refuse_lock)
    assert main(["worker", "--study", "s", "--storage", f"sqlite:///{db}"]) == 7
    err = _one_error_line(capsys)
    assert f"cannot write '{db}.lock': permission denied" in err
    assert f"make '{db.parent}' writable" in err and "--storage sqlite:///studies/s.db" in err


def test_uncreatable_study_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    db = tmp_path / "new" / "s.db"
    with pytest.raises(StorageError, match=f"cannot write '{db.parent}': permission denied; make") as info:
        SingleWriterLock(f"sqlite:///{db}").acquire()
    assert "\n" not in str(info.value)
    with pytest.raises(StorageError, match="permission denied"):
        open_storage(f"sqlite:///{db}", create_schema=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_study_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ro" / "s.db"
    db.parent.mkdir()
    _sqlite_study(db, n_trials=1)
    db.parent.chmod(0o555)
    try:
        assert main(["worker", "--study", "s", "--storage", f"sqlite:///{db}"]) == 7
        assert "permission denied" in _one_error_line(capsys)
    finally:
        db.parent.chmod(0o755)


@pytest.mark.parametrize(
    ("damage", "words"),
    [("random bytes", "file is not a database"), ("one page", "btreeInitPage"), ("most pages", "malformed")],
)
def test_damaged_sqlite_file_is_one_line(
    damage: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.db"
    if damage == "random bytes":
        db.write_bytes(bytes(range(256)) * 20)
    else:
        _sqlite_study(db)
        pages = db.stat().st_size // 4096
        _damage(db, pages - 1 if damage == "one page" else 2)
    for argv in (["studies", "--storage", str(db)], ["front", "--study", "s", "--storage", str(db)],
                 ["worker", "--study", "s", "--storage", str(db)]):  # fmt: skip
        assert main(argv) == 7, argv
        err = _one_error_line(capsys)
        assert f"SQLite file '{db}' is damaged" in err and words in err and ".recover" in err, err


def test_damage_found_after_opening_is_a_storage_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    _sqlite_study(db)
    storage = open_storage(f"sqlite:///{db}")
    _damage(db, 2)
    with pytest.raises(StorageError, match="is damaged or not a SQLite database"):
        open_study(storage, "s").get_trials()
