"""An Optuna RDB storage that rides out database outages of up to ``retry_seconds``.

Optuna offers no public hook to retry a storage call or to write a trial's first heartbeat, so
:class:`ResilientRDBStorage` subclasses :class:`optuna.storages.RDBStorage` and wraps these methods only:

* ``record_heartbeat``: never raises (:class:`automtd.search._heartbeat.Heartbeat`), so Optuna's heartbeat
  thread survives an outage instead of dying and letting peers fail a running trial.
* ``_create_new_trial`` (private: Optuna's ``_CachedStorage``, which wraps every RDB storage a study uses,
  calls it instead of ``create_new_trial``): retried, and a RUNNING trial gets its first heartbeat in the
  same call.  Without it a worker killed between ``ask`` and the start of the heartbeat thread (the sampler
  runs in between) leaves a trial without a heartbeat row, which stale detection never fails.
* ``set_trial_state_values``: retried, so a result is not lost when the database is briefly away during
  ``tell``; a repeat that finds the trial already in the asked finished state is a success (the first
  attempt committed before its connection dropped).  A WAITING trial taken as RUNNING gets its first beat.
* the other calls a study makes through ``_CachedStorage``, all repeatable, retried while the connection is
  lost: the reads ``get_study_id_from_name``, ``get_study_name_from_id``, ``get_study_directions``,
  ``get_study_user_attrs``, ``get_study_system_attrs``, ``get_all_studies``, ``get_trial``,
  ``get_trial_id_from_study_id_trial_number`` and the private ``_get_trials`` (``study.get_trials``),
  ``_get_best_trial_id`` (``study.best_trial``), ``_get_stale_trial_ids`` (``fail_stale_trials``); the
  upserts ``set_study_user_attr``, ``set_study_system_attr``, ``set_trial_user_attr``,
  ``set_trial_system_attr``, ``set_trial_intermediate_value`` and the private ``_set_trial_param``
  (``trial.suggest_*``).

Everything else is Optuna's public constructor (``engine_kwargs``, ``heartbeat_interval``, ``grace_period``,
``heartbeat_stale_trial_callback``, ``skip_table_creation``).  The private names are checked against the
Optuna major version pinned in pyproject (``>=5,<6``).  Outages longer than ``retry_seconds`` raise as usual
(the worker loop then reloads the study with its own backoff).  A SQLite file found damaged during any of
these calls is a one-line :class:`StorageError` (:func:`damaged_sqlite_error`), not a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from automtd._errors import StorageError
from automtd.search._heartbeat import Heartbeat

__all__ = [
    "ResilientRDBStorage",
    "TRANSIENT_ERRORS",
    "StaleTrialCallback",
    "is_transient",
    "damaged_sqlite_error",
    "sqlite_damage",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
StaleTrialCallback = Callable[[optuna.Study, FrozenTrial], None]

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    optuna.exceptions.StorageInternalError,
)

_RETRIED = (
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "get_trial",
    "get_trial_id_from_study_id_trial_number",
    "_get_trials",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
    "set_study_user_attr",
    "set_study_system_attr",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_trial_intermediate_value",
    "_set_trial_param",
)


def is_transient(exc: BaseException) -> bool:
    """A lost connection or an unreachable server (worth retrying), not bad data."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
            return True
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


#: what SQLite says of a file that is damaged or is no database at all
_DAMAGED = ("database disk image is malformed", "file is not a database", "file is encrypted")


def sqlite_damage(exc: BaseException) -> str | None:
    """SQLite's words when ``exc`` (or what caused it) says the database file is damaged, else ``None``."""
    seen: BaseException | None = exc
    while seen is not None:
        text = " ".join(str(getattr(seen, "orig", None) or seen).split())
        for words in _DAMAGED:
            if words in text:
                return words
        seen = seen.__cause__ or seen.__context__
    return None


def damaged_sqlite_error(path: Path | str, detail: str) -> StorageError:
    """The one-line error for a SQLite file that is damaged or not a database."""
    return StorageError(
        f"SQLite file {str(path)!r} is damaged or not a SQLite database ({detail[:120]}); restore it from a "
        "backup, or recover what is readable with: sqlite3 OLD.db .recover | sqlite3 NEW.db"
    )


class ResilientRDBStorage(RDBStorage):
    """:class:`optuna.storages.RDBStorage` with retried repeatable calls and a heartbeat that never raises."""

    retry_seconds: float = 60.0

    def __init__(
        self,
        url: str,
        *,
        engine_kwargs: Mapping[str, object] | None = None,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: StaleTrialCallback | None = None,
        skip_table_creation: bool = False,
    ) -> None:
        super().__init__(
            url,
            engine_kwargs=dict(engine_kwargs or {}),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=heartbeat_stale_trial_callback,
            skip_table_creation=skip_table_creation,
        )
        self._heartbeat = Heartbeat(super().record_heartbeat)

    def _with_retry(self, name: str, call: Callable[[], _T]) -> _T:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.25
        while True:
            try:
                return call()
            except Exception as exc:
                damage = sqlite_damage(exc) if str(self.url).startswith("sqlite:") else None
                if damage is not None:
                    raise damaged_sqlite_error(str(self.url).removeprefix("sqlite:///"), damage) from None
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                _log.warning("storage call %s failed (%s); retrying in %.2f s", name, type(exc).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def record_heartbeat(self, trial_id: int) -> None:
        self._heartbeat.record(trial_id)

    def _first_beat(self, trial_id: int, state: TrialState) -> None:
        if state == TrialState.RUNNING and self.heartbeat_interval is not None:
            self.record_heartbeat(trial_id)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        parent = super()._create_new_trial
        frozen = self._with_retry("create_new_trial", lambda: parent(study_id, template_trial))
        self._first_beat(frozen._trial_id, frozen.state)
        return frozen

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        parent = super().set_trial_state_values
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return parent(trial_id, state=state, values=values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if attempts > 1 and state.is_finished() and self.get_trial(trial_id).state == state:
                    return True
                raise

        ok = self._with_retry("set_trial_state_values", attempt)
        if ok:
            self._first_beat(trial_id, state)
        return ok


def _retrying(name: str) -> Callable[..., object]:
    def method(self: ResilientRDBStorage, *args: object, **kwargs: object) -> object:
        parent = getattr(super(ResilientRDBStorage, self), name)
        return self._with_retry(name, lambda: parent(*args, **kwargs))

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(RDBStorage, name).__doc__
    return method


for _name in _RETRIED:
    setattr(ResilientRDBStorage, _name, _retrying(_name))
