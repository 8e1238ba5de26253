"""Open the Optuna storage named by a URL, with the settings that make workers survive faults.

Three kinds of storage, chosen by the URL:

* ``sqlite:///path/to/study.db`` (or a path ending in ``.db``, ``.sqlite``, ``.sqlite3``): the default, for
  the trial runners of **one host** (``automtd search --jobs N``, several ``automtd worker``).  WAL journal,
  30 s busy timeout, and every transaction starts with ``BEGIN IMMEDIATE`` (:func:`serialize_sqlite`): it
  takes SQLite's write lock before its first read, so Optuna's read-check-write steps (take a WAITING
  trial, finish a trial, fail a stale one) are atomic between processes, as ``SELECT ... FOR UPDATE`` makes
  them on PostgreSQL.  Runners hold a shared OS lock on ``<db>.lock`` (:class:`RunnerLock`); deleting a
  study takes it exclusively (:class:`SingleWriterLock`), so it is refused while runners work.
* ``journal:///path/to/study.log`` (or a path ending in ``.log``): Optuna's journal file, safe for several
  processes on one machine; it has no heartbeat, so trials of a killed worker are failed by the janitor
  (``--max-trial-time``).
* ``postgresql+psycopg://user@host:5432/db`` (``postgresql://`` and ``postgres://`` are read as psycopg 3):
  for workers on several processes or machines.  ``pool_pre_ping``, a ``connect_timeout``, TCP keepalives,
  calls retried through short outages and a heartbeat that survives a failed write
  (:mod:`automtd.search._resilient`).  Give the password through
  ``PGPASSWORD`` (libpq reads it) rather than in the URL; URLs are always shown through :func:`redact_url`.

Workers never create the schema (``create_schema=False``): create the study once, then start workers.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage
from sqlalchemy import Engine, event

from automtd._errors import ConfigError, StorageError
from automtd.search._config import SearchConfig
from automtd.search._heartbeat import retry_callback
from automtd.search._redact import redact_url, strip_credentials
from automtd.search._resilient import ResilientRDBStorage, damaged_sqlite_error, sqlite_damage
from automtd.search._url import StorageKind, StorageURL, parse_storage_url
from automtd.utils import expand_path

__all__ = [
    "front_plot_path",
    "study_dir_for",
    "StorageKind",
    "StorageURL",
    "StorageOptions",
    "parse_storage_url",
    "redact_url",
    "strip_credentials",
    "open_storage",
    "SingleWriterLock",
    "RunnerLock",
    "serialize_sqlite",
]


@dataclass(frozen=True)
class StorageOptions:
    """Fault-tolerance settings of an RDB storage (SQLite, PostgreSQL); the journal ignores the heartbeat.

    ``heartbeat_interval``/``grace_period`` are whole seconds (Optuna's rule); a RUNNING trial whose last
    heartbeat is older than ``grace_period`` is failed by the next worker that asks for a trial and re-queued
    with the same parameters up to ``max_retry`` times.  ``connect_timeout`` bounds every new connection.
    """

    heartbeat_interval: int | None = 10
    grace_period: int | None = 30
    max_retry: int = 2
    connect_timeout: int = 10

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "grace_period"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name}={value!r} is invalid; give a whole number of seconds >= 1")
        if not isinstance(self.max_retry, int) or self.max_retry < 0:
            raise ConfigError(f"max_retry={self.max_retry!r} is invalid; give a whole number >= 0")
        if not isinstance(self.connect_timeout, int) or self.connect_timeout < 1:
            raise ConfigError(f"connect_timeout={self.connect_timeout!r} is invalid; give whole seconds >= 1")
        if (
            self.heartbeat_interval is not None
            and self.grace_period is not None
            and self.grace_period <= self.heartbeat_interval
        ):
            raise ConfigError(
                f"grace_period={self.grace_period} must exceed heartbeat_interval={self.heartbeat_interval}; "
                "use at least twice the interval"
            )



def open_storage(
    url: str | StorageURL,
    *,
    options: StorageOptions | None = None,
    create_schema: bool = False,
) -> BaseStorage:
    """Open the storage; errors (unreachable, no schema, bad URL) are one-line :class:`StorageError`.

    ``create_schema=True`` is for the one process that creates the study; workers pass ``False`` and are
    told to create the study first when the database holds no Optuna schema.
    """
    parsed = url if isinstance(url, StorageURL) else parse_storage_url(url)
    opts = options or StorageOptions()
    if parsed.kind == "journal":
        return _open_journal(parsed, create_schema)
    return _open_rdb(parsed, opts, create_schema)


def _open_journal(parsed: StorageURL, create: bool) -> BaseStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    assert parsed.path is not None  # set by parse_storage_url for file storages
    if not parsed.path.exists() and not create:
        raise StorageError(f"journal file {str(parsed.path)!r} does not exist; create the study first (automtd search)")
    try:
        parsed.path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(parsed.path)))
    except OSError as exc:
        raise StorageError(f"cannot open journal file {str(parsed.path)!r}: {exc.strerror}; check the path") from None


def _open_rdb(parsed: StorageURL, opts: StorageOptions, create: bool) -> BaseStorage:
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if parsed.kind == "sqlite":
        assert parsed.path is not None
        _prepare_sqlite(parsed.path, create)
        # the driver emits no BEGIN of its own: serialize_sqlite makes every transaction BEGIN IMMEDIATE
        engine_kwargs["connect_args"] = {"timeout": 30, "isolation_level": None}
    else:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise StorageError(
                "PostgreSQL storage needs psycopg 3; install it with pip install 'automtd[postgres]'"
            ) from None
        engine_kwargs["connect_args"] = {
            "connect_timeout": opts.connect_timeout,
            "application_name": "automtd",
            # notice a dead server on an idle connection instead of hanging
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        }
        engine_kwargs["pool_recycle"] = 600
    try:
        with warnings.catch_warnings():  # Optuna marks the heartbeat arguments experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = ResilientRDBStorage(
                parsed.url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=opts.heartbeat_interval,
                grace_period=opts.grace_period,
                heartbeat_stale_trial_callback=retry_callback(opts.max_retry) if opts.heartbeat_interval else None,
                skip_table_creation=not create,
            )
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
        raise _storage_error(parsed, exc, create) from None
    if parsed.kind == "sqlite":
        serialize_sqlite(storage.engine)
    return storage


def serialize_sqlite(engine: Engine) -> None:
    """Start every transaction of ``engine`` (a SQLite engine whose driver emits no BEGIN) with BEGIN IMMEDIATE.

    SQLite's default deferred transactions (and Python's driver, which opens one only before a write) let two
    processes read a trial as WAITING and both take it; an immediate transaction holds the write lock from
    its first read, later ones wait up to the busy timeout.  SQLAlchemy's documented recipe for pysqlite.
    """
    if not event.contains(engine, "begin", _begin_immediate):
        event.listen(engine, "begin", _begin_immediate)


def _begin_immediate(conn: sqlalchemy.engine.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _storage_error(parsed: StorageURL, exc: BaseException, create: bool) -> StorageError:
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    damage = sqlite_damage(exc) if parsed.path is not None else None
    if damage is not None:
        return damaged_sqlite_error(parsed.path or "?", damage)
    text = redact_url(" ".join(str(cause).split()))[:300]
    if "does not exist" in text and ("relation" in text or "table" in text) or "no such table" in text:
        return StorageError(
            f"storage {parsed} holds no Optuna schema; create the study once first "
            "(automtd search CONFIG --study S --storage URL --create-only), then start workers"
        )
    return StorageError(
        f"cannot reach storage {parsed}: {text}; check the host, port, credentials and that the server runs"
    )


def _prepare_sqlite(path: Path, create: bool) -> None:
    if not path.exists():
        if not create:
            raise StorageError(f"SQLite file {str(path)!r} does not exist; create the study first (automtd search)")
        _make_folder(path.parent, path)
    try:
        con = sqlite3.connect(str(path), timeout=30)
        try:
            con.execute("PRAGMA journal_mode=WAL")  # persistent in the file; readers do not block the writer
            # a damaged page otherwise surfaces later, from deep inside a trial
            problem = con.execute("PRAGMA quick_check(1)").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as exc:
        damage = sqlite_damage(exc)
        if damage is not None:
            raise damaged_sqlite_error(path, damage) from None
        if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise _unwritable(path, path) from None
        raise StorageError(f"cannot open SQLite file {str(path)!r}: {exc}; check the path and permissions") from None
    if problem != "ok":
        raise damaged_sqlite_error(path, " ".join(str(problem).split()))


def _unwritable(target: Path, db: Path, reason: str = "permission denied") -> StorageError:
    return StorageError(
        f"cannot write {str(target)!r}: {reason}; make {str(db.parent)!r} writable for this user "
        f"or put the study elsewhere, e.g. --storage sqlite:///studies/{db.name}"
    )


def _os_error(target: Path, db: Path, exc: OSError) -> StorageError:
    """One line for an OS error on a SQLite study's folder, lock or file."""
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return _unwritable(target, db, (exc.strerror or "permission denied").lower())
    return StorageError(f"cannot create {str(target)!r} for {str(db)!r}: {exc.strerror}; give another storage path")


def _make_folder(folder: Path, db: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(folder, db, exc) from None


class SingleWriterLock:
    """An exclusive OS lock on ``<db>.lock`` (no-op for other storages): for what no runner may see, e.g.
    deleting a study.

    Refused with a :class:`StorageError` while another process holds the lock (a runner's
    :class:`RunnerLock`, or another exclusive holder).  The lock dies with the process, so a killed worker
    never leaves it behind.
    """

    _shared = False

    def __init__(self, url: str | StorageURL) -> None:
        self._parsed = url if isinstance(url, StorageURL) else parse_storage_url(url)
        self._fd: int | None = None

    @property
    def path(self) -> Path | None:
        p = self._parsed.path
        return p.with_name(p.name + ".lock") if self._parsed.kind == "sqlite" and p is not None else None

    def acquire(self) -> None:
        lock_path = self.path
        if lock_path is None or self._fd is not None:
            return
        import fcntl

        db = self._parsed.path
        assert db is not None  # a lock path exists for SQLite files only
        _make_folder(lock_path.parent, db)
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _os_error(lock_path, db, exc) from None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self._shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise self._refusal(db, holder) from None
        if not self._shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def _refusal(self, db: Path, holder: str) -> StorageError:
        return StorageError(
            f"SQLite storage {self._parsed} is in use by trial runners or another process (last exclusive holder "
            f"pid {holder}); stop them first (the runners of one host share a SQLite study; for workers on "
            f"several machines use postgresql+psycopg://USER@HOST/DB, or journal:///{db.stem}.log on one)"
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> SingleWriterLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class RunnerLock(SingleWriterLock):
    """A shared OS lock on ``<db>.lock`` held by every process running trials of a SQLite study.

    Runners coexist (their transactions are serialized by :func:`serialize_sqlite`); an exclusive holder
    (:class:`SingleWriterLock`: a study being deleted) refuses them, and they refuse it.
    """

    _shared = True

    def _refusal(self, db: Path, holder: str) -> StorageError:
        return StorageError(
            f"SQLite storage {self._parsed} is locked exclusively by pid {holder} (a study being deleted); "
            "wait for it to finish, then start again"
        )

    def __enter__(self) -> RunnerLock:
        self.acquire()
        return self


def study_dir_for(storage_url: str, study_name: str, config: SearchConfig | None = None) -> Path:
    """Where the factor cache of a study lives: ``<db>.cache/`` beside a file storage, else ``studies/<name>.cache``."""
    if config is not None and config.study.cache_dir:
        return Path(expand_path(config.study.cache_dir))
    parsed = parse_storage_url(storage_url)
    if parsed.path is not None:
        return parsed.path.parent / f"{parsed.path.stem}.cache"
    return Path("studies") / f"{study_name}.cache"


def front_plot_path(storage_url: str, study_name: str) -> Path:
    """``<db folder>/<study>_front.png`` for file storages, else ``studies/<study>_front.png``."""
    parsed = parse_storage_url(storage_url)
    folder = parsed.path.parent if parsed.path is not None else Path("studies")
    return folder / f"{study_name}_front.png"
