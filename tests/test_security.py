"""No database password stored or printed; the dashboard stays on loopback unless told otherwise.

The PostgreSQL test runs real ``automtd`` commands against a throwaway server (tests/_pg.py) with a role
whose password is given in the URL (user info, then ``?password=``), and looks for the password in every
row of the database and in every line the commands print.
"""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import pytest
import yaml
from _pg import PASSWORD as ADMIN_PASSWORD
from _pg import USER as ADMIN
from _pg import PgServer, automtd, free_port, pg_server_fixture, run  # noqa: F401 - fixture pg_server

from automtd._errors import StorageError
from automtd.cli import _dashboard
from automtd.cli.main import main
from automtd.search._config import search_config_from_dict
from automtd.search._keys import STUDY_CONFIG
from automtd.search._redact import redact_url, stored_config, strip_credentials
from automtd.search._storage import parse_storage_url

SECRET = "Pw-s3cr3t-0a1b2c"


# --- redact_url and strip_credentials on every form ------------------------------------------------------

REDACTED = {
    # user info
    f"postgresql+psycopg://u:{SECRET}@h:5432/d": "postgresql+psycopg://u:***@h:5432/d",
    "postgresql+psycopg://u:p%40ss@h:1/d": "postgresql+psycopg://u:***@h:1/d",
    "postgresql://:pw@h/d": "postgresql://:***@h/d",
    "postgresql+psycopg://u@h:5432/d": "postgresql+psycopg://u@h:5432/d",
    # a password holding unescaped '@', '/', '?': masked up to the last '@' before the host
    "postgresql://u:p@ss@host:5/db": "postgresql://u:***@host:5/db",
    "postgresql://u:a@b@c@host/db": "postgresql://u:***@host/db",
    "postgresql://u:p@s/s@host/db": "postgresql://u:***@host/db",
    "postgresql://u:p?x@h/d": "postgresql://u:***@h/d",
    "postgresql://u:p@h/d?options=a@b": "postgresql://u:***@h/d?options=a@b",
    # a user name holding '@' (user@server)
    "postgresql://u@srv:pw@h/d": "postgresql://u@srv:***@h/d",
    # password query parameters, any case
    "postgresql://u@h/d?password=abc&sslmode=require": "postgresql://u@h/d?password=***&sslmode=require",
    "postgresql://u@h/d?sslmode=require&sslpassword=xyz": "postgresql://u@h/d?sslmode=require&sslpassword=***",
    "postgresql://u@h/d?PASS=q1&pwd=q2&passwd=q3": "postgresql://u@h/d?PASS=***&pwd=***&passwd=***",
    "postgresql://u:p@h/d?password=p2#f": "postgresql://u:***@h/d?password=***#f",
    # URLs inside a text (log lines, error messages)
    "error at postgresql://a:b@c/d now": "error at postgresql://a:***@c/d now",
    "storage 'postgresql://u:p@h/d': down; also postgres://v:w@h2/e.": (
        "storage 'postgresql://u:***@h/d': down; also postgres://v:***@h2/e."
    ),
    "connection options password=zzz sslmode=x": "connection options password=*** sslmode=x",
    # nothing to hide
    "sqlite:///studies/a.db": "sqlite:///studies/a.db",
    "journal:////tmp/x.log": "journal:////tmp/x.log",
}


@pytest.mark.parametrize(("url", "expected"), list(REDACTED.items()))
def test_redact_url_masks_every_form(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"postgresql+psycopg://u:{SECRET}@h:5432/d", "postgresql+psycopg://u@h:5432/d"),
        ("postgresql://u:p@ss@host/db", "postgresql://u@host/db"),
        (f"postgresql://u@h/d?sslmode=require&password={SECRET}", "postgresql://u@h/d?sslmode=require"),
        ("postgresql://u@h/d?sslpassword=a&PWD=b", "postgresql://u@h/d"),
        ("postgresql://u@h/d", "postgresql://u@h/d"),
        ("sqlite:///studies/{name}.db", "sqlite:///studies/{name}.db"),
    ],
)
def test_strip_credentials(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


def test_stored_config_has_no_password() -> None:
    url = f"postgresql+psycopg://u:{SECRET}@h/d?password={SECRET}"
    config = search_config_from_dict(
        {"model": {"name": "cifar_resnet20", "checkpoint": "ck"}, "study": {"storage": url}}
    )
    stored = stored_config(config)
    assert SECRET not in repr(stored)
    assert stored["study"] == {**config.study.model_dump(mode="json"), "storage": "postgresql+psycopg://u@h/d"}
    search_config_from_dict(stored)  # still a valid config


def test_password_with_unescaped_at_is_refused_without_showing_it() -> None:
    with pytest.raises(StorageError) as info:
        parse_storage_url("postgresql+psycopg://u:abc@def@h:5432/d")
    text = str(info.value)
    assert "%40" in text and "PGPASSWORD" in text and "\n" not in text
    assert "abc" not in text and "def" not in text
    # escaped, or a user name holding '@', is fine
    assert parse_storage_url("postgresql://u:abc%40def@h/d").kind == "postgresql"
    assert parse_storage_url("postgresql://u@srv:pw@h/d").kind == "postgresql"


# --- dashboard: loopback unless --allow-remote (checked before a server starts) ----------------------------


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record run_server calls instead of serving."""
    import optuna_dashboard

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, **kw: calls.append(kw))
    return calls


def _db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/d.db"
    optuna.create_study(storage=url, study_name="s")
    return url


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_is_loopback(host: str) -> None:
    assert _dashboard.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.org", "128.0.0.1", ""])
def test_non_loopback_host_is_refused_with_why_and_how(
    host: str, tmp_path: Path, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dashboard", "--storage", _db(tmp_path), "--host", host])
    err = capsys.readouterr().err.strip()
    assert code == 2 and served == []
    assert len(err.splitlines()) == 1, err
    assert "no login" in err and "delete" in err and "--allow-remote" in err


def test_allow_remote_starts_with_a_warning(
    tmp_path: Path, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", "--storage", _db(tmp_path), "--host", "0.0.0.0", "--allow-remote", "--port", "8099"]) == 0
    assert served == [{"host": "0.0.0.0", "port": 8099}]
    captured = capsys.readouterr()
    assert "warning" in captured.err and "no login" in captured.err
    assert "http://0.0.0.0:8099" in captured.out


def test_loopback_starts_without_a_warning(
    tmp_path: Path, served: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", "--storage", _db(tmp_path), "--host", "::1"]) == 0
    assert served == [{"host": "::1", "port": 8080}]
    assert "warning" not in capsys.readouterr().err


def test_the_refusal_comes_before_the_storage_is_opened(
    monkeypatch: pytest.MonkeyPatch, served: list[dict[str, Any]]
) -> None:
    def never(*_: object, **__: object) -> None:
        raise AssertionError("storage opened")

    monkeypatch.setattr(_dashboard, "open_storage", never)
    args = argparse.Namespace(storage="sqlite:///x.db", host="0.0.0.0", port=8080, allow_remote=False)
    with pytest.raises(Exception, match="--allow-remote"):
        _dashboard.run(args)


# --- a real PostgreSQL: the password reaches neither the database nor any output ---------------------------


def _admin(server: PgServer, sql: str) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=server.port, user=ADMIN, password=ADMIN_PASSWORD,
                         dbname="postgres", autocommit=True) as con:
        con.execute(sql)


def _role_and_database(server: PgServer) -> tuple[str, str, str]:
    """A new login role with a password holding '@' and a database it owns: (role, password, database)."""
    tag, secret = uuid.uuid4().hex[:8], uuid.uuid4().hex[:12]
    role, password, db = f"r_{tag}", f"Pw@{secret}/x", f"d_{tag}"
    _admin(server, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    _admin(server, f'CREATE DATABASE "{db}" OWNER {role}')
    return role, password, db


def _every_value_in(server: PgServer, role: str, password: str, db: str) -> str:
    """Every row of every table of ``db`` as text: the study and trial attributes, params, heartbeats, ..."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=server.port, user=role, password=password, dbname=db) as con:
        tables = [r[0] for r in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        assert {"studies", "trials", "study_user_attributes", "trial_user_attributes"} <= set(tables)
        return "\n".join(str(row) for t in tables for row in con.execute(f'SELECT * FROM "{t}"'))


def _secret_forms(password: str) -> list[str]:
    """The password as given, percent-encoded, and its random part alone."""
    return [password, quote(password, safe=""), password.split("@")[1].split("/")[0]]


def _tiny_config(tmp_path: Path, data_root: Path, checkpoint: Path, study: str) -> Path:
    config = {
        "model": {"name": "cifar_resnet20", "checkpoint": str(checkpoint)},
        "data": {"root": str(data_root), "train_subset": 64, "val_subset": 64, "batch_size": 32},
        "space": {"conv": ["svd_channel", "none"], "skip": ["conv1", "layer1.*", "layer2.*"]},
        "finetune": {"steps": 1, "lr": 0.001, "early_stop": {"enabled": False}},
        "sampler": {"name": "random"},
        "sensitivity": {"enabled": False},
        "warmstart": {"enabled": False},
        "study": {"name": study, "n_trials": 2},
        "device": "cpu",
    }
    path = tmp_path / f"{study}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_password_in_the_url_is_neither_stored_nor_printed(
    pg_server: PgServer, tmp_path: Path, data_root: Path, resnet20_checkpoint: Path
) -> None:
    role, password, db = _role_and_database(pg_server)
    secret = quote(password, safe="")
    host = f"127.0.0.1:{pg_server.port}/{db}"
    urls = {
        "userinfo": f"postgresql+psycopg://{role}:{secret}@{host}",
        "query": f"postgresql+psycopg://{role}@{host}?sslmode=disable&password={secret}",
    }
    outputs: list[str] = []
    for study, url in urls.items():
        config = _tiny_config(tmp_path, data_root, resnet20_checkpoint, study)
        done = run(automtd("search", str(config), "--storage", url, "--no-progress",
                           "--plot", str(tmp_path / f"{study}.png")), timeout=400)  # fmt: skip
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        for cmd in (("front", "--study", study, "--storage", url), ("studies", "--storage", url)):
            done = run(automtd(*cmd))
            outputs += [done.stdout, done.stderr]
            assert done.returncode == 0, done.stderr[-2000:]
        # the stored config keeps the URL without its password (workers are given the URL)
        stored = optuna.load_study(study_name=study, storage=url)
        assert stored.user_attrs[STUDY_CONFIG]["study"]["storage"].startswith(f"postgresql+psycopg://{role}@{host}")
    # failures print the URL too: a wrong port (unreachable), a missing study, an unescaped '@'
    wrong = {
        "unreachable": (urls["userinfo"].replace(str(pg_server.port), str(free_port())), 7),
        "no study": (urls["query"], 8),
        "unescaped @": (f"postgresql+psycopg://{role}:{password}@{host}", 7),
    }
    for what, (url, code) in wrong.items():
        done = run(automtd("worker", "--study", "missing", "--storage", url))
        outputs += [done.stdout, done.stderr]
        assert done.returncode == code, (what, done.stderr[-1000:])
        assert len(done.stderr.strip().splitlines()) == 1, (what, done.stderr)

    everything = _every_value_in(pg_server, role, password, db)
    study_storage = optuna.storages.RDBStorage(urls["userinfo"])
    attrs = []
    for summary in optuna.get_all_study_summaries(study_storage):
        study = optuna.load_study(study_name=summary.study_name, storage=study_storage)
        study_id = study_storage.get_study_id_from_name(summary.study_name)
        attrs += [repr(study.user_attrs), repr(study_storage.get_study_system_attrs(study_id))]
        attrs += [repr((t.user_attrs, t.system_attrs, t.params)) for t in study.trials]
        assert len(study.trials) == 2
    text = "\n".join(outputs)
    assert "***" in text  # the URL was shown, masked
    for form in _secret_forms(password):
        assert form not in everything, f"{form!r} stored in the database"
        assert form not in "\n".join(attrs), f"{form!r} in a study or trial attribute"
        for line in text.splitlines():
            assert form not in line, f"{form!r} printed: {line}"
