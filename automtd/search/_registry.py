"""The objectives a worker may run, by registered name.

A study names its objective in the study attr ``automtd:objective`` (absent: ``"compression"``, the
built-in search objective rebuilt from the config stored with the study).  A worker looks the name up here
and never imports a module named by the database: a ``module:function`` string, or a name nobody
registered, is refused with a :class:`StudyError`.

Objectives other than the built-in one come from plugins the operator installs:

* modules listed in the environment variable ``AUTOMTD_PLUGINS`` (comma-separated importable names), imported
  by ``automtd search`` and ``automtd worker`` before the study is opened (:func:`load_plugins`); such a
  module calls :func:`register_objective` when imported;
* installed packages declaring an entry point in the group ``automtd.objectives`` (entry point name = the
  objective name, value = its factory), loaded when a study names it.

A factory takes an :class:`ObjectiveRequest` and returns the objective ``study.optimize`` runs.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import optuna

from automtd._errors import CheckpointError, ConfigError, StudyError
from automtd.checkpoints import resolve_checkpoint
from automtd.data import resolve_data
from automtd.search._context import checkpoint_sha256, with_locations
from automtd.search._guard import Objective
from automtd.search._keys import STUDY_CHECKPOINT_SHA256, STUDY_OBJECTIVE, STUDY_OBJECTIVE_ARGS, STUDY_SPEC
from automtd.search._objective import config_from_study, make_objective, make_sampler, study_spec
from automtd.search._storage import study_dir_for
from automtd.search._study import check_spec

__all__ = [
    "DEFAULT_OBJECTIVE",
    "ENTRY_POINT_GROUP",
    "PLUGINS_ENV",
    "ObjectiveRequest",
    "ObjectiveFactory",
    "register_objective",
    "get_objective",
    "list_objectives",
    "load_plugins",
    "study_objective",
]

DEFAULT_OBJECTIVE = "compression"
ENTRY_POINT_GROUP = "automtd.objectives"
PLUGINS_ENV = "AUTOMTD_PLUGINS"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_FIX = (
    f"register it by name in a module listed in {PLUGINS_ENV} or in an installed package "
    f"(entry-point group {ENTRY_POINT_GROUP})"
)


@dataclass(frozen=True)
class ObjectiveRequest:
    """What a worker hands an objective factory.

    ``study_dir`` is the worker's ``--study-dir`` (None: the objective picks its own); ``seed_offset`` offsets
    the sampler seed (None: the process id, so concurrent workers sample differently); ``data_root`` and
    ``checkpoint`` replace the locations of the stored config (``--data-root``, ``--checkpoint``).
    """

    study: optuna.Study
    storage_url: str
    study_dir: Path | None = None
    seed_offset: int | None = None
    data_root: str | None = None
    checkpoint: str | None = None

    @property
    def args(self) -> dict[str, object]:
        """The objective's keyword arguments stored with the study (``automtd:objective_args``)."""
        stored = self.study.user_attrs.get(STUDY_OBJECTIVE_ARGS)
        return dict(stored) if isinstance(stored, Mapping) else {}

    @property
    def sampler_seed(self) -> int:
        return os.getpid() if self.seed_offset is None else self.seed_offset


ObjectiveFactory = Callable[[ObjectiveRequest], Objective]


def compression_objective(request: ObjectiveRequest) -> Objective:
    """The search objective, rebuilt from the config stored with the study.

    Its spec is derived again by this worker's code and must equal the stored one; the study's sampler is
    set from that config.  A ``--data-root`` must exist and a ``--checkpoint`` must have the study's SHA-256.
    """
    study = request.study
    stored = config_from_study(study)
    config = with_locations(stored, data_root=request.data_root, checkpoint=request.checkpoint)
    if config.data.root != stored.data.root:
        resolve_data(config.data.root, config.data.dataset, download=False)
    if config.model.checkpoint != stored.model.checkpoint:
        _check_checkpoint(study, config.model.checkpoint)
    check_spec(study, study_spec(config), what="the stored config as this worker reads it")
    study.sampler = make_sampler(config, seed_offset=request.sampler_seed)
    directory = request.study_dir or study_dir_for(request.storage_url, study.study_name, config)
    return make_objective(config, study_dir=directory)


def _check_checkpoint(study: optuna.Study, checkpoint: str) -> None:
    stored = study.user_attrs.get(STUDY_CHECKPOINT_SHA256)
    if stored is None:
        spec = study.user_attrs.get(STUDY_SPEC)
        model = spec.get("model") if isinstance(spec, Mapping) else None
        stored = model.get("checkpoint_sha256") if isinstance(model, Mapping) else None
    given = checkpoint_sha256(resolve_checkpoint(checkpoint, download=False))
    if stored != given:
        raise CheckpointError(
            f"checkpoint {checkpoint!r} has SHA-256 {given[:12]}..., study {study.study_name!r} was created with "
            f"{str(stored)[:12]}...; pass the same weights file to --checkpoint (a copy elsewhere is fine)"
        )


_REGISTRY: dict[str, ObjectiveFactory] = {DEFAULT_OBJECTIVE: compression_objective}


def register_objective(name: str, factory: ObjectiveFactory) -> None:
    """Make ``factory`` runnable by studies whose ``automtd:objective`` is ``name``.

    Registering the same function again (a module imported twice) is allowed; another one under a taken
    name is a :class:`ConfigError`.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"objective name {name!r} is invalid; use letters, digits, '_', '.', '-' (no ':' module paths)"
        )
    if not callable(factory):
        raise ConfigError(f"objective {name!r}: factory {factory!r} is not callable; pass a function")
    current = _REGISTRY.get(name)
    if current is not None and _qualname(current) != _qualname(factory):
        raise ConfigError(
            f"objective {name!r} is already registered by {_qualname(current)}; choose another name"
        )
    _REGISTRY[name] = factory


def _qualname(factory: ObjectiveFactory) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_objectives() -> list[str]:
    """Registered objective names and those of installed entry points, sorted."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_objective(name: str) -> ObjectiveFactory:
    """The factory registered as ``name`` (an installed entry point of that name is loaded on first use)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    ep = _entry_points().get(name)
    if ep is not None:
        register_objective(name, ep.load())
        return _REGISTRY[name]
    raise ConfigError(f"objective {name!r} is not registered (registered: {', '.join(list_objectives())}); {_FIX}")


def study_objective(study: optuna.Study) -> ObjectiveFactory:
    """The factory of the objective ``study`` names; a module path or an unknown name is a :class:`StudyError`."""
    name = study.user_attrs.get(STUDY_OBJECTIVE, DEFAULT_OBJECTIVE)
    known = ", ".join(list_objectives())
    if not isinstance(name, str) or ":" in name or "/" in name:
        raise StudyError(
            f"study {study.study_name!r} names objective {name!r}, which is not a registered name "
            f"(registered: {known}); automtd never imports code named by a study: {_FIX} and store its name"
        )
    if name not in list_objectives():
        raise StudyError(
            f"study {study.study_name!r} names objective {name!r}, which is not registered here "
            f"(registered: {known}); {_FIX}"
        )
    return get_objective(name)


def load_plugins(environ: Mapping[str, str] | None = None) -> list[str]:
    """Import the modules listed in ``AUTOMTD_PLUGINS`` (they register objectives); return their names."""
    value = (os.environ if environ is None else environ).get(PLUGINS_ENV, "")
    names = [part.strip() for part in value.split(",") if part.strip()]
    for module in names:
        if not _MODULE.fullmatch(module):
            raise ConfigError(
                f"{PLUGINS_ENV} names {module!r}, which is not a module name; give comma-separated importable "
                "modules, e.g. mypackage.objectives"
            )
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(
                f"{PLUGINS_ENV} names module {module!r}, which cannot be imported ({type(exc).__name__}: {exc}); "
                "install it, put it on PYTHONPATH or fix the variable"
            ) from None
    return names
